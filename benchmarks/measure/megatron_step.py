"""Measure real Megatron-Core ``GPTModel`` training steps on one GPU.

    python benchmarks/measure/megatron_step.py --sweep megatron --out megatron_steps.jsonl
    python benchmarks/measure/megatron_step.py --list

The model is megatron-core's own (0.16.1), built the way Megatron-LM builds a Llama
model when Transformer Engine and Apex are not installed:

- ``GPTModel`` with ``get_gpt_layer_local_spec(normalization="RMSNorm")``: torch's
  ``RMSNorm`` (``WrappedTorchNorm``), fused QKV and fc1 projections
  (``ColumnParallelLinear``), the local unfused ``DotProductAttention`` (``baddbmm``
  into the scores, softmax in fp32 as ``TransformerConfig.attention_softmax_in_fp32``
  defaults to, ``bmm`` with the values; K and V repeated to every query head for
  grouped-query attention), SwiGLU through Megatron's ``bias_swiglu`` fusion
  (``bias_activation_fusion=True``, as Megatron-LM's ``--swiglu`` sets it), RoPE
  (unfused), no biases, no dropout, untied output layer, bf16 weights
  (``Float16Module``, as Megatron-LM wraps a bf16 model).
- One process, ``torch.distributed`` of world size 1 and ``parallel_state`` with
  tp = pp = 1 (data parallel 1).
- megatron-core's ``DistributedDataParallel`` with its contiguous gradient buffer in
  fp32 (``grad_reduce_in_fp32=True``: Megatron-LM forces it for bf16 training) and a
  contiguous bf16 parameter buffer (``use_distributed_optimizer=True``).
- ``get_megatron_optimizer(OptimizerConfig(optimizer="adam", bf16=True,
  use_distributed_optimizer=True))``: the ``DistributedOptimizer`` with fp32 main
  parameters (the whole model at data parallel 1) around ``torch.optim.AdamW`` (the
  fallback megatron-core uses without Transformer Engine or Apex: its default foreach
  implementation).
- A step is Megatron-LM's ``train_step``: ``zero_grad_buffer()``, ``optimizer.zero_grad()``,
  ``forward_backward_no_pipelining`` over ``grad_accum`` micro-batches (GPTModel's own
  cross entropy on its fp32 logits; per-token loss averaged, divided by the micro-batch
  count), ``finalize_model_grads``, ``optimizer.step()`` (gradient-norm clipping at 1.0,
  Adam, copy back to the bf16 parameters).
- MoE (``MegatronRun.moe``, used by ``allocator_snapshots.py --suite megatron``): the
  local spec's ``get_gpt_layer_local_spec(num_experts=E, moe_grouped_gemm=False)``, i.e.
  a top-k router and ``SequentialMLP`` experts (one SwiGLU MLP after another) behind
  megatron's default ``allgather`` token dispatcher, expert parallel 1.
- Recompute: ``none``; ``selective`` (``recompute_granularity="selective"``, megatron's
  default module list ``["core_attn"]``: the attention core is recomputed); ``full``
  (``recompute_granularity="full"``, ``recompute_method="uniform"``,
  ``recompute_num_layers=1``: each layer keeps only its input).

Measured as ``train_step.py`` does (the same JSON record, ``"framework": "megatron"``
added): ``warmup`` untimed steps (the first one creates the Adam state; its peak is kept
apart), then the peak statistics are reset and ``steps - warmup`` timed steps run, each
bracketed by ``torch.cuda.synchronize()`` and timed with ``time.perf_counter`` and with
CUDA events (``time.device_step_s``). ``retained_after_forward`` is the allocated memory
at the first micro-batch's loss minus at its forward's start, in the last timed step.
Between runs everything is freed, megatron's global memory buffer (the persistent
``baddbmm`` input of the unfused attention) included, so each run starts from nothing.

Fused attention (``--core-attention sdpa``, ``--sweep megatron-fused``): the same local
spec with its ``core_attention`` submodule replaced by ``SdpaCoreAttention``, a module
calling ``torch.nn.functional.scaled_dot_product_attention`` with the flash backend only
(causal, grouped-query heads passed as they are through ``enable_gqa``, no K/V repeat).
This is a ModuleSpec substitution megatron-core supports (the spec names the class the
layer builds); it reproduces the allocation pattern of a fused attention kernel
(Transformer Engine's ``TEDotProductAttention`` runs the same flash/cuDNN kind of kernel):
no ``b x heads x s x s`` score tensor, no global memory buffer, and the kernel's output
and log-sum-exp (fp32, ``b x heads x s``) saved for backward. The record says
``config.core_attention`` (``"local"`` or ``"sdpa"``) and, at its top level, the
allocator settings the process ran with (``alloc_conf``, ``expandable_segments``), so
one sweep runs once per ``PYTORCH_CUDA_ALLOC_CONF`` (the allocator reads it once).

Needs torch and megatron-core (and a GPU for the measurement); imports nothing from
autopar. ``--device cpu`` builds the model and optimizer of the ``tiny`` preset as far as
megatron-core allows without CUDA, to catch API errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

import record
from llama import LlamaConfig
from options import PRESETS

MEGATRON_SWEEP: tuple[tuple[str, int, int, int, str], ...] = tuple(
    (preset, seq, mbs, accum, recompute)
    for preset, seq, mbs, accum in (
        ("llama-1b", 4096, 1, 2),
        ("llama-3b", 2048, 2, 2),
        ("llama-1b", 8192, 1, 1),
    )
    for recompute in ("none", "selective", "full")
)
"""(preset, sequence, micro-batch, micro-batches per step, recompute) of each run, in the
order they run; llama-1b at 8192 without recompute keeps 6 bytes x 32 heads x 8192² of
attention scores per layer (192 GiB) and is expected to run out of memory."""

HELDOUT_SWEEP: tuple[tuple[str, int, int, int, str], ...] = (
    ("llama-1b", 2048, 4, 1, "none"),
    ("llama-1b", 1024, 8, 1, "none"),
    ("llama-1b", 6144, 1, 1, "selective"),
    ("llama-3b", 4096, 1, 2, "selective"),
    ("llama-3b", 4096, 1, 1, "full"),
    ("qwen-1.5b", 4096, 1, 2, "none"),
    ("qwen-1.5b", 8192, 1, 1, "selective"),
)
"""``--sweep megatron-heldout``: shapes, lengths and micro-batches the first sweep did not
run (other head sizes and GQA ratios, rows of 1024 to 8192, micro-batches of 1 to 8),
measured after the time model was written, to check it on runs it never saw. The
qwen-1.5b shape runs with untied output weights (``build`` never shares them)."""

FUSED_SWEEP: tuple[tuple[str, int, int, int, str], ...] = (
    *(
        (preset, seq, 1, accum, recompute)
        for preset in ("llama-1b", "llama-3b")
        for seq, accum in ((4096, 2), (8192, 1))
        for recompute in ("none", "full")
    ),
    ("llama-1b", 4096, 1, 2, "selective"),
    ("llama-3b", 8192, 1, 1, "selective"),
)
"""``--sweep megatron-fused`` (``core_attention="sdpa"``): the Llama-3.2-1B and 3B shapes
at 4096 and 8192 tokens, micro-batch 1, recompute none and full, and selective for two of
them; run once with the default allocator and once with ``expandable_segments:True``."""

LR, WEIGHT_DECAY, CLIP_GRAD = 1e-4, 0.1, 1.0


@dataclass(frozen=True)
class MoeShape:
    """Routed experts of every layer: ``experts`` SwiGLU MLPs of width ``ffn``, top ``top_k``."""

    experts: int
    top_k: int
    ffn: int


@dataclass(frozen=True)
class MegatronRun:
    preset: str
    seq_len: int
    mbs: int
    grad_accum: int
    recompute: str
    steps: int = 5
    warmup: int = 2
    seed: int = 0
    device: str = "cuda"
    shape: LlamaConfig | None = None
    """The model shape; None: the preset's (with ``seq_len`` replaced)."""
    moe: MoeShape | None = None
    core_attention: str = "local"
    """``"local"``: megatron's unfused ``DotProductAttention``; ``"sdpa"``:
    ``SdpaCoreAttention``."""

    @property
    def timed_steps(self) -> int:
        return self.steps - self.warmup

    @property
    def model_shape(self) -> LlamaConfig:
        return dataclasses.replace(self.shape or PRESETS[self.preset], seq_len=self.seq_len)


@dataclass
class Progress:
    phase: str = "start"
    steps_done: int = 0
    memory: dict[str, Any] = field(default_factory=dict)
    step_s: list[float] = field(default_factory=list)
    device_step_s: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def init_distributed(device: torch.device) -> None:
    """World size 1 and megatron's process groups (tp = pp = 1), once per process."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29517")
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", rank=0, world_size=1, device_id=device)
        else:
            dist.init_process_group("gloo", rank=0, world_size=1)
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=1,
            pipeline_model_parallel_size=1,
            create_gloo_process_groups=False,
        )


def transformer_config(run: MegatronRun) -> Any:
    from megatron.core.transformer.transformer_config import TransformerConfig

    shape = run.model_shape
    recompute: dict[str, Any] = {}
    if run.recompute == "selective":
        recompute = {"recompute_granularity": "selective"}
    elif run.recompute == "full":
        recompute = {
            "recompute_granularity": "full",
            "recompute_method": "uniform",
            "recompute_num_layers": 1,
        }
    moe: dict[str, Any] = {}
    if run.moe is not None:
        moe = {
            "num_moe_experts": run.moe.experts,
            "moe_router_topk": run.moe.top_k,
            "moe_ffn_hidden_size": run.moe.ffn,
            "moe_grouped_gemm": False,
            "moe_token_dispatcher_type": "allgather",
        }
    return TransformerConfig(
        num_layers=shape.num_layers,
        hidden_size=shape.hidden_size,
        num_attention_heads=shape.num_attention_heads,
        num_query_groups=shape.num_kv_heads,
        ffn_hidden_size=shape.ffn_hidden_size,
        normalization="RMSNorm",
        layernorm_epsilon=shape.norm_eps,
        gated_linear_unit=True,
        activation_func=torch.nn.functional.silu,
        bias_activation_fusion=True,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        bf16=True,
        params_dtype=torch.bfloat16,
        pipeline_dtype=torch.bfloat16,
        init_method_std=0.02,
        use_cpu_initialization=run.device == "cpu",
        **recompute,
        **moe,
    )


def _without_transformer_engine() -> None:
    """megatron-core 0.16.1's MoE router asks ``te_general_gemm is not None`` but imports
    that name only when Transformer Engine is installed (``moe/moe_utils.py``), so without
    TE the router's forward raises NameError. Define it as None: the torch matmul path
    the test means."""
    from megatron.core.transformer.moe import moe_utils

    if not hasattr(moe_utils, "te_general_gemm"):
        moe_utils.te_general_gemm = None


class SdpaCoreAttention(torch.nn.Module):
    """A megatron-core core attention (the local ``DotProductAttention``'s constructor and
    forward signature) computed by torch's fused ``scaled_dot_product_attention``, flash
    backend only, causal. Query ``[s, b, heads, d]``, key and value ``[s, b, groups, d]``;
    returns ``[s, b, heads * d]`` as megatron's core attentions do."""

    gqa_path: str = "enable_gqa"
    """How grouped-query heads reached the kernel; ``"repeated"`` if this torch's flash
    backend refused ``enable_gqa`` and K/V were repeated to every query head instead."""

    def __init__(self, config: Any, layer_number: int, attn_mask_type: Any, attention_type: str,
                 attention_dropout: float | None = None, softmax_scale: float | None = None,
                 cp_comm_type: str | None = None, pg_collection: Any = None) -> None:  # fmt: skip
        super().__init__()
        self.config = config
        self.softmax_scale = softmax_scale

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: Any, attn_mask_type: Any = None, attention_bias: Any = None,
                packed_seq_params: Any = None) -> torch.Tensor:  # fmt: skip
        from torch.nn.attention import SDPBackend, sdpa_kernel

        assert attention_bias is None and packed_seq_params is None
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads, s, d]
        groups = q.size(1) // k.size(1)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            if groups > 1 and SdpaCoreAttention.gqa_path == "enable_gqa":
                try:
                    out = torch.nn.functional.scaled_dot_product_attention(
                        q, k, v, is_causal=True, scale=self.softmax_scale, enable_gqa=True
                    )
                except RuntimeError:
                    SdpaCoreAttention.gqa_path = "repeated"
            if groups == 1 or SdpaCoreAttention.gqa_path == "repeated":
                if groups > 1:
                    k = k.repeat_interleave(groups, dim=1)
                    v = v.repeat_interleave(groups, dim=1)
                out = torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, is_causal=True, scale=self.softmax_scale
                )
        return out.permute(2, 0, 1, 3).reshape(out.size(2), out.size(0), -1)


def layer_spec(run: MegatronRun) -> Any:
    """The local layer spec, with ``SdpaCoreAttention`` as core attention for ``"sdpa"``."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    spec = get_gpt_layer_local_spec(
        num_experts=run.moe.experts if run.moe else None,
        moe_grouped_gemm=False,
        normalization="RMSNorm",
    )
    if run.core_attention == "sdpa":
        spec.submodules.self_attention.submodules.core_attention = SdpaCoreAttention
    return spec


def build(run: MegatronRun) -> tuple[Any, Any, Any]:
    """(config, DDP-wrapped Float16Module(GPTModel), DistributedOptimizer)."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.distributed.finalize_model_grads import finalize_model_grads
    from megatron.core.models.gpt import GPTModel
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed
    from megatron.core.transformer.module import Float16Module

    shape = run.model_shape
    if run.moe is not None:
        _without_transformer_engine()
    torch.manual_seed(run.seed)
    if run.device == "cuda":
        model_parallel_cuda_manual_seed(run.seed)
    config = transformer_config(run)
    gpt = GPTModel(
        config=config,
        transformer_layer_spec=layer_spec(run),
        vocab_size=shape.vocab_size,
        max_sequence_length=run.seq_len,
        position_embedding_type="rope",
        rotary_base=int(shape.rope_theta),
        share_embeddings_and_output_weights=False,
        parallel_output=True,
    )
    if run.device == "cuda":
        gpt.cuda(torch.cuda.current_device())
    model = DistributedDataParallel(
        config=config,
        ddp_config=DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=False,
            use_distributed_optimizer=True,
        ),
        module=Float16Module(config, gpt),
    )
    optimizer = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=LR,
            weight_decay=WEIGHT_DECAY,
            adam_beta1=0.9,
            adam_beta2=0.95,
            adam_eps=1e-8,
            clip_grad=CLIP_GRAD,
            bf16=True,
            params_dtype=torch.bfloat16,
            use_distributed_optimizer=True,
        ),
        [model],
        use_gloo_process_groups=False,
    )
    config.finalize_model_grads_func = finalize_model_grads
    config.grad_scale_func = optimizer.scale_loss
    return config, model, optimizer


def make_batches(run: MegatronRun, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """``grad_accum`` micro-batches of uniform random tokens (seeded), made once."""
    vocab = run.model_shape.vocab_size
    gen = torch.Generator().manual_seed(run.seed)
    positions = torch.arange(run.seq_len).unsqueeze(0).expand(run.mbs, -1)
    batches = []
    for _ in range(run.grad_accum):
        tokens = torch.randint(0, vocab, (run.mbs, run.seq_len), generator=gen)
        labels = torch.randint(0, vocab, (run.mbs, run.seq_len), generator=gen)
        batches.append(
            {
                "tokens": tokens.to(device),
                "labels": labels.to(device),
                "position_ids": positions.contiguous().to(device),
                "loss_mask": torch.ones(run.mbs, run.seq_len, device=device),
            }
        )
    return batches


class Stepper:
    """Megatron-LM's ``train_step`` on fixed batches, with a memory probe on the forward."""

    def __init__(self, run: MegatronRun, model: Any, optimizer: Any, batches: list) -> None:
        from megatron.core.pipeline_parallel import get_forward_backward_func

        self.run, self.model, self.optimizer, self.batches = run, model, optimizer, batches
        self.forward_backward = get_forward_backward_func()
        self.probe = False
        self.before_forward: int | None = None
        self.retained_after_forward: int | None = None

    def _loss(self, loss_mask: torch.Tensor, first: bool, output: torch.Tensor) -> tuple:
        if first and self.probe and self.before_forward is not None:
            self.retained_after_forward = torch.cuda.memory_allocated() - self.before_forward
        losses = output.float().view(-1)
        mask = loss_mask.view(-1).float()
        loss = torch.sum(losses * mask) / mask.sum()
        return loss, {"lm loss": loss.detach().clone()}  # the schedule scales loss in place

    def _forward_step(self, data_iterator: Any, model: Any) -> tuple:
        index, batch = next(data_iterator)
        first = index == 0
        if first and self.probe and torch.cuda.is_available():
            self.before_forward = torch.cuda.memory_allocated()
        output = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
        return output, partial(self._loss, batch["loss_mask"], first)

    def step(self) -> float:
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        reduced = self.forward_backward(
            forward_step_func=self._forward_step,
            data_iterator=iter(enumerate(self.batches)),
            model=[self.model],
            num_microbatches=self.run.grad_accum,
            seq_length=self.run.seq_len,
            micro_batch_size=self.run.mbs,
            decoder_seq_length=self.run.seq_len,
            forward_only=False,
        )
        success, _grad_norm, _zeros = self.optimizer.step()
        if not success:
            raise RuntimeError("optimizer step skipped (non-finite gradients)")
        return float(sum(r["lm loss"] for r in reduced) / len(reduced))


def _timed(stepper: Stepper, dev: torch.device, progress: Progress) -> None:
    record.synchronize(dev)
    start_event = torch.cuda.Event(enable_timing=True)
    end_event = torch.cuda.Event(enable_timing=True)
    start = time.perf_counter()
    start_event.record()
    progress.losses.append(stepper.step())
    end_event.record()
    record.synchronize(dev)
    progress.step_s.append(time.perf_counter() - start)
    progress.device_step_s.append(start_event.elapsed_time(end_event) / 1e3)


def run_steps(run: MegatronRun, dev: torch.device, progress: Progress) -> None:
    from megatron.core import parallel_state

    mem = progress.memory
    mem["allocated_at_start"] = record.allocated(dev)
    progress.phase = "build"
    init_distributed(dev)
    parallel_state.destroy_global_memory_buffer()
    parallel_state._set_global_memory_buffer()
    _config, model, optimizer = build(run)
    progress.extra["param_count_local"] = sum(p.numel() for p in model.parameters())
    batches = make_batches(run, dev)
    if dev.type != "cuda":
        progress.phase = "built (CPU: megatron's step needs CUDA)"
        return
    stepper = Stepper(run, model, optimizer, batches)
    mem["after_build"] = record.allocated(dev)
    progress.phase = "first_step"
    record.synchronize(dev)
    record.reset_peak(dev)
    progress.losses.append(stepper.step())
    record.synchronize(dev)
    first = record.peaks(dev)
    mem["first_step_peak_allocated"] = first["peak_allocated"]
    mem["first_step_peak_reserved"] = first["peak_reserved"]
    mem["after_first_step"] = record.allocated(dev)
    progress.steps_done = 1
    progress.phase = "warmup"
    for _ in range(run.warmup - 1):
        progress.losses.append(stepper.step())
        progress.steps_done += 1
    record.synchronize(dev)
    record.reset_peak(dev)
    retries_before = record.peaks(dev)["alloc_retries"]
    progress.phase = "timed"
    for index in range(run.timed_steps):
        stepper.probe = index == run.timed_steps - 1
        _timed(stepper, dev, progress)
        progress.steps_done += 1
    timed = record.peaks(dev)
    mem["timed_peak_allocated"] = timed["peak_allocated"]
    mem["timed_peak_reserved"] = timed["peak_reserved"]
    mem["alloc_retries"] = (timed["alloc_retries"] or 0) - (retries_before or 0)
    mem["after_timed"] = record.allocated(dev)
    mem.update(record.outside_allocator(dev))
    mem["retained_after_forward"] = stepper.retained_after_forward
    progress.phase = "done"


def _versions() -> dict[str, Any]:
    try:
        import megatron.core as mcore

        version = getattr(mcore, "__version__", None)
    except ImportError:
        version = None
    return {"megatron_core": version, "transformer_engine": _installed("transformer_engine"),
            "apex": _installed("apex")}  # fmt: skip


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def build_record(run: MegatronRun, dev: torch.device, progress: Progress, oom: str | None) -> dict:
    model = dataclasses.asdict(run.model_shape)
    config = {
        "framework": "megatron",
        "preset": run.preset,
        "model": model,
        "mbs": run.mbs,
        "grad_accum": run.grad_accum,
        "recompute": run.recompute,
        "recompute_method": "uniform" if run.recompute == "full" else None,
        "recompute_num_layers": 1 if run.recompute == "full" else None,
        "recompute_modules": ["core_attn"] if run.recompute == "selective" else None,
        "precision": "bf16",
        "optimizer": "adam",
        "steps": run.steps,
        "warmup": run.warmup,
        "timed_steps": run.timed_steps,
        "mode": "single",
        "device": run.device,
        "seed": run.seed,
        "world_size": 1,
        "tp": 1,
        "pp": 1,
        "param_count": progress.extra.get("param_count_local"),
        "param_dtype": "bfloat16",
        "grad_dtype": "float32",
        "main_param_dtype": "float32",
        "optimizer_state_dtype": "float32",
        "compute_dtype": "bfloat16",
        "residual_dtype": "bfloat16",
        "autocast": False,
        "layer_spec": "get_gpt_layer_local_spec(normalization='RMSNorm')" + (
            "" if run.core_attention == "local" else
            ", core_attention=SdpaCoreAttention"),
        "core_attention": run.core_attention,
        "moe": None if run.moe is None else {
            **dataclasses.asdict(run.moe), "experts_impl": "SequentialMLP",
            "token_dispatcher": "allgather", "router_load_balancing": "aux_loss (coeff 0)"},
        "attention": (
            "megatron DotProductAttention (unfused, softmax in fp32, no fused kernel)"
            if run.core_attention == "local" else
            "torch scaled_dot_product_attention (flash backend only, causal, GQA "
            f"{SdpaCoreAttention.gqa_path})"),
        "ddp": {"grad_reduce_in_fp32": True, "overlap_grad_reduce": False,
                "use_distributed_optimizer": True, "contiguous_grad_buffer": True},
        "optimizer_impl": {"name": "megatron DistributedOptimizer(torch.optim.AdamW)",
                           "lr": LR, "weight_decay": WEIGHT_DECAY, "clip_grad": CLIP_GRAD,
                           "foreach": "default", "fused": False},
        "loss": "GPTModel cross entropy (vocab-parallel, fp32 logits), mean over tokens",
        "data": "uniform random token ids and labels, torch.Generator seeded with seed",
        "versions": _versions(),
        **{k: v for k, v in progress.extra.items() if k != "param_count_local"},
        "param_count_local": progress.extra.get("param_count_local"),
    }  # fmt: skip
    memory = dict(progress.memory)
    if dev.type != "cuda":
        memory["note"] = "CPU run: memory is not measured (all values None)"
    time_block = record.time_summary(progress.step_s, run.mbs * run.grad_accum * run.seq_len)
    time_block["device_step_s"] = progress.device_step_s
    time_block["device_median_s"] = (
        statistics.median(progress.device_step_s) if progress.device_step_s else None
    )
    alloc_conf = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")
    result = {
        "schema": record.SCHEMA,
        "alloc_conf": alloc_conf,
        "expandable_segments": "expandable_segments:true" in alloc_conf.lower().replace(" ", ""),
        "oom": oom is not None,
        "config": config,
        "memory": memory,
        "time": time_block,
        "losses": progress.losses,
        "saved_tensors": None,
        "provenance": record.provenance(dev, 1),
    }
    if oom is not None:
        result["oom_info"] = {"phase": progress.phase, "steps_done": progress.steps_done,
                              "rank": 0, "error": oom}  # fmt: skip
    return result


def _free(dev: torch.device) -> None:
    from megatron.core import parallel_state

    parallel_state.destroy_global_memory_buffer()
    gc.collect()
    record.release_cached(dev)


def measure(run: MegatronRun) -> dict:
    dev = torch.device("cuda", 0) if run.device == "cuda" else torch.device("cpu")
    progress = Progress()
    oom: str | None = None
    try:
        run_steps(run, dev, progress)
    except torch.OutOfMemoryError as err:
        oom = str(err).splitlines()[0][:500]
        reached = record.peaks(dev)
        progress.memory["peak_allocated_before_oom"] = reached["peak_allocated"]
        progress.memory["peak_reserved_before_oom"] = reached["peak_reserved"]
    _free(dev)
    return build_record(run, dev, progress, oom)


def runs_of(args: argparse.Namespace) -> list[MegatronRun]:
    if args.sweep == "megatron":
        return [
            MegatronRun(p, s, b, a, r, steps=args.steps, warmup=args.warmup, device=args.device)
            for p, s, b, a, r in MEGATRON_SWEEP
        ]
    if args.sweep == "megatron-heldout":
        return [
            MegatronRun(p, s, b, a, r, steps=args.steps, warmup=args.warmup, device=args.device,
                        shape=dataclasses.replace(PRESETS[p], tie_embeddings=False))
            for p, s, b, a, r in HELDOUT_SWEEP
        ]  # fmt: skip
    if args.sweep == "megatron-fused":
        return [
            MegatronRun(p, s, b, a, r, steps=args.steps, warmup=args.warmup, device=args.device,
                        core_attention="sdpa")
            for p, s, b, a, r in FUSED_SWEEP
        ]  # fmt: skip
    return [
        MegatronRun(args.preset, args.seq_len, args.mbs, args.grad_accum, args.recompute,
                    steps=args.steps, warmup=args.warmup, device=args.device,
                    core_attention=args.core_attention)
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", choices=["megatron", "megatron-heldout", "megatron-fused"])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--mbs", type=int, default=1)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--recompute", choices=["none", "selective", "full"], default="none")
    parser.add_argument("--core-attention", choices=["local", "sdpa"], default="local",
                        help="sdpa: torch's fused attention instead")  # fmt: skip
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="start no new run after this many seconds")  # fmt: skip
    parser.add_argument("--list", action="store_true", help="print the runs and exit")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps <= args.warmup:
        parser.error("--warmup must be at least 1 and below --steps")
    runs = runs_of(args)
    if args.list:
        for run in runs:
            print(run)
        return 0
    started = time.perf_counter()
    for run in runs:
        if args.deadline_s is not None and time.perf_counter() - started > args.deadline_s:
            print(f"deadline: skipped {run}", flush=True)
            continue
        t0 = time.perf_counter()
        result = measure(run)
        if args.out:
            record.append_record(args.out, result)
        mem = result["memory"]
        print(f"{run.preset} s={run.seq_len} mbs={run.mbs} ga={run.grad_accum} "
              f"recompute={run.recompute} oom={result['oom']} "
              f"median_s={result['time']['median_s']} "
              f"attn={run.core_attention} peak_alloc={mem.get('timed_peak_allocated')} "
              f"peak_reserved={mem.get('timed_peak_reserved')} "
              f"start={mem.get('allocated_at_start')} "
              f"wall={time.perf_counter() - t0:.1f}s", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
