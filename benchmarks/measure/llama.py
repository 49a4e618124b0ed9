"""A small Llama-style decoder in plain PyTorch, written to be measured.

autopar's memory model is validated against this module, so every choice that changes
what a training step holds in memory is fixed here and written down. ``b`` is the
micro-batch size, ``s`` the sequence length, ``h`` the hidden size, ``f`` the FFN
hidden size, ``n_q``/``n_kv`` the query/key-value heads, ``d`` the head dimension
(``h / n_q``), ``kv = n_kv * d`` and ``V`` the vocabulary. "Saved" means kept by
autograd from a layer's forward until its backward (unique storages, parameters not
counted). The byte counts below are checked exactly on CPU by
``tests/benchmarks/test_measure_script.py`` with ``saved.census`` (and ``saved.
expected_bytes`` is the same arithmetic); the measuring script records the census on
the GPU (``saved_tensors`` in each record). On an H100 with torch 2.11 (flash attention)
they matched to the byte, except 24 bytes per layer of flash attention's RNG state.

Architecture (Llama 3 layout, no biases, no dropout):

    tokens -> Embedding(V, h) -> L x Block -> RMSNorm -> Linear(h, V) -> logits
    Block(x):  x = x + Attention(RMSNorm(x));  x = x + SwiGLU(RMSNorm(x))
    Attention: q, k, v = separate Linear(h, h), Linear(h, kv), Linear(h, kv);
               RoPE on q and k; F.scaled_dot_product_attention(is_causal=True,
               enable_gqa=True) on the unexpanded k and v; output Linear(h, h)
    SwiGLU:    w2(silu(w1(x)) * w3(x)), w1 and w3 Linear(h, f), w2 Linear(f, h)

The output projection is untied unless ``tie_embeddings`` is set. The loss, outside the
model, is ``F.cross_entropy(logits.float().view(-1, V), targets.view(-1))``: logits
are upcast to fp32 before the loss, as HuggingFace and Megatron-LM do.

Choices that set memory:

- RMSNorm is one autograd function (``_RMSNormFunction``) that saves only its input
  and the fp32 reciprocal RMS (``b*s`` floats), like the fused kernels of Apex,
  Transformer Engine and Megatron; it computes in fp32 and returns
  ``(x * rstd).to(x.dtype) * weight``.
- RoPE tables (cos, sin of shape ``(s, d)``) are cast once per forward to the compute
  dtype and shared by every layer, so RoPE saves no per-layer activation.
- Attention calls SDPA with GQA done by the kernel (``enable_gqa``): k and v are saved
  with ``n_kv`` heads, not expanded. The kernel is pinned to flash attention by
  default (``--sdpa-backend``); it saves q, k, v, its output and the fp32 log-sum-exp
  (``b * n_q * s`` floats).
- SwiGLU is plain ops: it saves its input, ``w1(x)``, ``w3(x)``, ``silu(w1(x))`` and
  their product (no fused kernel).
- Activation recomputation (``recompute=True``) wraps each block's forward in
  ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`` *inside* the block,
  so FSDP2 hooks stay outside the checkpointed region: each layer then saves only its
  input ``x``, and one layer's full set exists again during that layer's backward.

Saved bytes per layer, pure bf16 (``--precision bf16``: bf16 weights, no autocast; the
residual stream is bf16):

    RMSNorm x2:     2 * (2bsh + 4bs)          inputs (bf16) + rstd (fp32)
    q/k/v input:    2bsh                      one norm output shared by wq, wk, wv
    SDPA:           2bsh + 2*2bs*kv + 2bsh + 4*b*n_q*s   q, k, v, output, log-sum-exp
    wo input:       0 when it shares the SDPA output's storage (flash on CUDA and
                    CPU write the output in (b, s, n_q, d) layout), else 2bsh
    MLP:            2bsh + 4 * 2bsf           input, w1 out, w3 out, silu, product

With ``torch.autocast(bfloat16)`` and fp32 weights (``--precision bf16-autocast``) the
embedding output is fp32 (embedding is not an autocast op) and so is the residual
stream, because fp32 + bf16 promotes to fp32. Then per layer:

    RMSNorm x2:     2 * (4bsh + 4bs)          fp32 inputs + rstd
    q/k/v input:    3 * 2bsh                  autocast casts the fp32 norm output
                                              separately for each Linear
    SDPA, wo input: as in pure bf16
    MLP:            2 * 2bsh + 4 * 2bsf       two casts of the norm output (w1, w3)

and every Linear keeps a bf16 copy of its weight (autocast's weight cast, saved for the
backward): 2 bytes per Linear weight element of the layer, held from the layer's forward
to its backward, for each micro-batch in flight (the autocast cache is cleared when the
autocast region of a micro-batch ends).

Head (final RMSNorm, output Linear and loss) per micro-batch: the norm saves its input
(the residual dtype) and rstd; the output Linear saves its bf16 input (``2bsh``, under
autocast also the ``2Vh``-byte weight cast); the bf16 logits (``2bsV``) are upcast to
fp32 (``4bsV``) and ``log_softmax`` saves its fp32 output (``4bsV``), which is all the
head keeps until backward (plus nll_loss's 4-byte total weight). The transient peak of
the head is bf16 logits + fp32 logits + log-softmax output (``10bsV`` bytes) in the
forward, and about as much in its backward. The embedding saves only the token ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class LlamaConfig:
    """Architecture numbers; ``seq_len`` sizes the RoPE tables."""

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    ffn_hidden_size: int
    vocab_size: int
    seq_len: int
    rope_theta: float = 500_000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_kv_heads {self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def layer_params(self) -> int:
        """Parameters of one block: two norm weights, q/k/v/o and w1/w2/w3."""
        h, f, kv = self.hidden_size, self.ffn_hidden_size, self.num_kv_heads * self.head_dim
        return 2 * h + (h * h + 2 * h * kv + h * h) + 3 * h * f

    def num_params(self) -> int:
        """All parameters: embedding, blocks, final norm and (if untied) the output."""
        embedding = self.vocab_size * self.hidden_size
        output = 0 if self.tie_embeddings else embedding
        return embedding + self.num_layers * self.layer_params() + self.hidden_size + output


def _math_dtype(x: torch.Tensor) -> torch.dtype:
    """fp32 for bf16/fp16/fp32 inputs; fp64 stays fp64 (for gradcheck)."""
    return torch.promote_types(x.dtype, torch.float32)


class _RMSNormFunction(torch.autograd.Function):
    """RMSNorm saving only its input and rstd; math in fp32 (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        xf = x.to(_math_dtype(x))
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return (xf * rstd).to(x.dtype) * weight

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, weight, rstd = ctx.saved_tensors
        xhat = x.to(rstd.dtype) * rstd
        g = grad_out.to(rstd.dtype)
        gw = g * weight.to(rstd.dtype)
        grad_x = rstd * (gw - xhat * (gw * xhat).mean(-1, keepdim=True))
        grad_w = (g * xhat).sum(dim=tuple(range(g.dim() - 1)))
        return grad_x.to(x.dtype), grad_w.to(weight.dtype), None


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RMSNormFunction.apply(x, self.weight, self.eps)


def rope_tables(cfg: LlamaConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 cos and sin of shape (seq_len, head_dim), halves repeated (HF layout)."""
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, device=device).float() / d))
    angles = torch.outer(torch.arange(cfg.seq_len, device=device).float(), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (b, s, heads, d) by the (s, d) tables: x*cos + rotate_half(x)*sin."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig, sdpa_backends: list[SDPBackend] | None) -> None:
        super().__init__()
        h, d = cfg.hidden_size, cfg.head_dim
        self.head_dim = d
        self.sdpa_backends = sdpa_backends
        self.wq = nn.Linear(h, cfg.num_attention_heads * d, bias=False)
        self.wk = nn.Linear(h, cfg.num_kv_heads * d, bias=False)
        self.wv = nn.Linear(h, cfg.num_kv_heads * d, bias=False)
        self.wo = nn.Linear(cfg.num_attention_heads * d, h, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        # Heads are counted from the projection's output, so under tensor parallelism
        # (q/k/v column-sharded) each rank sees only its local heads.
        q = self.wq(x).view(b, s, -1, self.head_dim)
        k = self.wk(x).view(b, s, -1, self.head_dim)
        v = self.wv(x).view(b, s, -1, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        gqa = q.shape[1] != k.shape[1]
        if self.sdpa_backends is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            with sdpa_kernel(self.sdpa_backends):
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        return self.wo(out.transpose(1, 2).reshape(b, s, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.hidden_size, cfg.ffn_hidden_size, bias=False)
        self.w2 = nn.Linear(cfg.ffn_hidden_size, cfg.hidden_size, bias=False)
        self.w3 = nn.Linear(cfg.hidden_size, cfg.ffn_hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig, sdpa_backends: list[SDPBackend] | None) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.attention = Attention(cfg, sdpa_backends)
        self.ffn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)
        self.recompute = False

    def _forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin)
        return x + self.feed_forward(self.ffn_norm(x))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.recompute:
            out: torch.Tensor = checkpoint(self._forward, x, cos, sin, use_reentrant=False)
            return out
        return self._forward(x, cos, sin)


class Llama(nn.Module):
    """The decoder, or one pipeline stage of it.

    ``layer_ids`` picks the blocks this module holds (all by default); a stage without
    the embedding takes the hidden states as input, one without the head returns them.
    Blocks live in a ``ModuleDict`` keyed by their global index so that names do not
    change with the split.
    """

    def __init__(
        self,
        cfg: LlamaConfig,
        *,
        layer_ids: range | None = None,
        has_embedding: bool = True,
        has_head: bool = True,
        sdpa_backends: list[SDPBackend] | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        ids = range(cfg.num_layers) if layer_ids is None else layer_ids
        self.tok_embeddings = (
            nn.Embedding(cfg.vocab_size, cfg.hidden_size) if has_embedding else None
        )
        self.layers = nn.ModuleDict({str(i): Block(cfg, sdpa_backends) for i in ids})
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps) if has_head else None
        self.output = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False) if has_head else None
        self.register_buffer("rope_cos", torch.empty(cfg.seq_len, cfg.head_dim), persistent=False)
        self.register_buffer("rope_sin", torch.empty(cfg.seq_len, cfg.head_dim), persistent=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the embedding with the output (again after ``to_empty``) when tied."""
        if self.cfg.tie_embeddings:
            if self.tok_embeddings is None or self.output is None:
                raise ValueError("tied embeddings need the embedding and the head in one module")
            self.output.weight = self.tok_embeddings.weight

    def set_recompute(self, enabled: bool) -> None:
        for block in self.layers.values():
            block.recompute = enabled

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """Fill materialised parameters and the RoPE tables (values do not affect timing)."""
        torch.manual_seed(seed)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        if self.output is not None and not self.cfg.tie_embeddings:
            nn.init.normal_(self.output.weight, std=1.0 / math.sqrt(self.cfg.hidden_size))
        cos, sin = rope_tables(self.cfg, self.rope_cos.device)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tok_embeddings is not None:
            x = self.tok_embeddings(x)
        device_type = x.device.type
        autocast_on = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type) if autocast_on else x.dtype
        s = x.shape[1]
        cos, sin = self.rope_cos[:s].to(dtype), self.rope_sin[:s].to(dtype)
        for block in self.layers.values():
            x = block(x, cos, sin)
        if self.norm is not None and self.output is not None:
            x = self.output(self.norm(x))
        return x


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross entropy on fp32-upcast logits (HF and Megatron-LM upcast the same way)."""
    return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))
