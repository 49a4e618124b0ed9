"""Count what autograd saves for backward, by storage, in three kinds.

``census(fn, params)`` runs ``fn`` (a forward) under ``torch.autograd.graph``'s
saved-tensor hooks and sums the bytes of each *unique storage* saved, split into:

- ``parameter``: storages of the given parameters (weights saved for the weight
  gradient; they cost no extra memory),
- ``weight_cast``: copies of a parameter made by a dtype cast (autocast's bf16 weight
  copies), recognised by their autograd history: a ``ToCopyBackward0`` node, reached
  through view nodes only, whose input is a parameter's ``AccumulateGrad``,
- ``input``: storages of the given inputs (token ids, targets, the shared RoPE tables):
  allocated before the census, so not activations of the counted layers,
- ``activation``: everything else.

Tensors saved more than once (one norm output used by q, k and v) count once, which is
what the allocator holds. The census never runs a backward. Non-reentrant
checkpointing installs its own hooks, so run the census on a block with recomputation
off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from llama import Llama, LlamaConfig, loss_fn

_VIEW_NODES = frozenset(
    {
        "TBackward0",
        "ViewBackward0",
        "TransposeBackward0",
        "PermuteBackward0",
        "ExpandBackward0",
        "UnsafeViewBackward0",
        "AliasBackward0",
        "AsStridedBackward0",
    }
)


def _is_weight_cast(tensor: torch.Tensor) -> bool:
    node: Any = tensor.grad_fn
    while node is not None and type(node).__name__ in _VIEW_NODES:
        node = node.next_functions[0][0]
    if node is None or type(node).__name__ != "ToCopyBackward0":
        return False
    source = node.next_functions[0][0]
    return source is not None and type(source).__name__ == "AccumulateGrad"


def census(
    fn: Callable[[], Any],
    params: Iterable[torch.Tensor],
    inputs: Iterable[torch.Tensor] = (),
) -> dict[str, int]:
    """Bytes saved for backward while ``fn()`` runs, by kind (see the module docstring).

    The graph that ``fn`` builds is dropped before returning.
    """
    param_storages = {p.untyped_storage().data_ptr() for p in params}
    input_storages = {t.untyped_storage().data_ptr() for t in inputs}
    seen: set[int] = set()
    totals = {"activation": 0, "weight_cast": 0, "parameter": 0, "input": 0}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in seen:
            seen.add(key)
            if key in param_storages:
                kind = "parameter"
            elif key in input_storages:
                kind = "input"
            elif _is_weight_cast(tensor):
                kind = "weight_cast"
            else:
                kind = "activation"
            totals[kind] += storage.nbytes()
        # Keep the storage alive (so no address is reused while counting) but not the
        # tensor itself: a saved output returned as-is would hold its own grad_fn, a
        # reference cycle through C++ that gc cannot break, leaking the whole graph.
        return tensor.detach()

    def unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = fn()
    del out
    return totals


def expected_bytes(cfg: LlamaConfig, mbs: int, seq_len: int, *, autocast: bool) -> dict[str, int]:
    """The per-layer and head byte counts that ``llama``'s docstring derives.

    ``block_activation`` assumes the ``wo`` input shares the SDPA output's storage (as
    with flash attention on CUDA and CPU).
    """
    b, s, h, f = mbs, seq_len, cfg.hidden_size, cfg.ffn_hidden_size
    kv, n_q, v = cfg.num_kv_heads * cfg.head_dim, cfg.num_attention_heads, cfg.vocab_size
    residual = 4 if autocast else 2  # bytes per element of the residual stream
    norms = 2 * (residual * b * s * h + 4 * b * s)
    linear_inputs = (3 + 2) * 2 * b * s * h if autocast else 2 * 2 * b * s * h
    sdpa = 2 * b * s * h + 2 * 2 * b * s * kv + 2 * b * s * h + 4 * b * n_q * s
    mlp = 4 * 2 * b * s * f
    # final norm input + rstd, output Linear input, fp32 log-softmax output, and the
    # 4-byte total_weight scalar that nll_loss saves
    head = residual * b * s * h + 4 * b * s + 2 * b * s * h + 4 * b * s * v + 4
    linear_weights = cfg.layer_params() - 2 * h
    return {
        "block_activation": norms + linear_inputs + sdpa + mlp,
        "block_weight_cast": 2 * linear_weights if autocast else 0,
        "head_activation": head,
        "head_weight_cast": 2 * v * h if autocast else 0,
    }


def model_census(model: Llama, mbs: int, *, autocast: bool) -> dict[str, Any]:
    """Census of block 0 (recomputation off) and of the head on one micro-batch.

    Returns the measured kinds next to ``expected_bytes``; ``{"oom": True}`` when the
    census itself runs out of memory.
    """
    cfg = model.cfg
    param = next(model.parameters())
    device, residual = param.device, torch.float32 if autocast else torch.bfloat16
    cast: AbstractContextManager[Any] = nullcontext()
    if autocast:
        cast = torch.autocast(device.type, dtype=torch.bfloat16)
    block = next(iter(model.layers.values()))
    params = list(model.parameters())
    try:
        x = torch.randn(mbs, cfg.seq_len, cfg.hidden_size, device=device, dtype=residual)
        x.requires_grad_(True)
        targets = torch.randint(0, cfg.vocab_size, (mbs, cfg.seq_len), device=device)
        cos = model.rope_cos.to(torch.bfloat16)
        sin = model.rope_sin.to(torch.bfloat16)
        recompute, block.recompute = block.recompute, False
        try:
            with cast:
                got_block = census(lambda: block(x, cos, sin), params, (cos, sin))
        finally:
            block.recompute = recompute
        head: dict[str, int] | None = None
        if model.norm is not None and model.output is not None:
            norm, output = model.norm, model.output
            with cast:
                head = census(lambda: loss_fn(output(norm(x)), targets), params, (targets,))
    except torch.OutOfMemoryError:
        return {"oom": True}
    return {
        "mbs": mbs,
        "seq_len": cfg.seq_len,
        "block": got_block,
        "head": head,
        "expected": expected_bytes(cfg, mbs, cfg.seq_len, autocast=autocast),
    }
