"""Compute work of one micro-batch through a layer, and its time on one GPU.

Every op is a ``Work`` record: FLOPs, bytes moved through HBM and kernels launched. Its
time is a roofline: the largest of FLOPs over the achievable rate for its kind (matrix
multiply or fused attention), bytes over the achievable memory bandwidth, and the host's
time to launch its kernels. Skinny GEMMs after tensor-parallel splitting and small
micro-batches therefore run below the matrix peak because their bytes dominate.

FLOP and byte counts (per micro-batch of T local tokens; t tensor parallel):
* GEMM of (M x K) by (K x N): 2·M·N·K FLOPs, bytes 2·(M·K + K·N + M·N) at the compute
  dtype (Narayanan et al. 2021, appendix: 2 FLOPs per multiply-add). Backward runs two
  GEMMs of the same size (input and weight gradients).
* Attention scores (QKᵀ and PV): 4·T·a·(d_qk + d_v)/2·keys/t FLOPs forward, keys = mean
  attended keys (causal: s/2 for kernels that skip masked blocks, s for an unfused softmax
  that computes the full square); the backward of a fused kernel does 2.5x the forward
  FLOPs (Dao 2023, FlashAttention-2, section 3: five matmuls against two).
* Element-wise ops (norms, residual adds, activation functions, RoPE, casts, the loss):
  bytes read plus written; their backward moves about twice as much, unless the op
  states its own backward (``Work.backward``). Ops that PyTorch runs in its generic,
  non-vectorized kernel (dtype casts, broadcast operands) are timed per element
  (``GENERIC_ELEMENT_BYTES``), not per byte.
* Megatron-Core's local layer spec (no Transformer Engine) is counted op by op as it
  runs: the unfused softmax chain on the scores, the eager RoPE, the K/V repeat, the
  vocab-parallel cross entropy and the DDP hooks that add each gradient into the fp32
  main gradient (measured per kernel in
  ``hardware_db/profiles/h200-sxm/2026-12-03-h200-megatron-core-profile``). On the
  Transformer Engine path Megatron-LM runs the same cross entropy unless
  ``--cross-entropy-loss-fusion`` and the same hooks for the parameters no GEMM
  accumulates (all of them with ``--no-gradient-accumulation-fusion``): they are charged
  there at the same rates.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal, Protocol

from planner.graph.build import Implementation
from planner.graph.params import layer_params, mean_attended_tokens
from planner.specs.model import ModelSpec

WorkKind = Literal["gemm", "attention", "memory"]
HostPath = Literal["autograd", "backward", "plain"]
EAGER_RMSNORM_OPS = 6
"""Kernels of an eager RMSNorm forward in fp32 math: pow, mean, add eps, rsqrt, scale by
rstd, multiply by the weight (HuggingFace ``LlamaRMSNorm``, ``benchmarks/measure/llama.py``);
a bf16 residual adds the cast to fp32 and back (``EAGER_RMSNORM_CASTS``)."""
EAGER_RMSNORM_CASTS = 2
EAGER_ROPE_OPS = 5
"""Kernels of eager rotary embedding per rotated tensor: negate a half, concatenate,
x·cos, rotate_half(x)·sin, add (HuggingFace ``apply_rotary_pos_emb``)."""
FLASH_BACKWARD_FLOP_RATIO = 2.5
"""FlashAttention-2 (Dao 2023) backward: five matrix products to the forward's two."""

GENERIC_ELEMENT_BYTES = 13.0
"""PyTorch's generic element-wise kernels (``elementwise_kernel``,
``unrolled_elementwise_kernel``: what a dtype-casting or broadcasting op runs on, such as
``.float()`` of bf16, ``masked_fill_`` with a broadcast mask, an in-place op by a per-row
value, fp32 += bf16, bf16 RoPE products with broadcast cos/sin) are bound by the work per
element, not by bytes: on one H200 they ran 272-360 G elements/s whatever the dtypes,
the time in which the vectorized kernels stream 12.2-15.9 bytes (median 12.9; the
vectorized fp32 -> bf16 copy of the same trace, 4.34-4.39 TB/s, as the kernel profile's
streaming rate). Measured in hardware_db/profiles/h200-sxm/
2026-12-03-h200-megatron-core-profile (kernel_classes.json, ``stream_bytes_per_element``:
``megatron_breakdown.kernel_class_rates`` over three traced Megatron-Core steps, tensors
of 8 M to 2.1 G elements). Such work is timed at the larger of its bytes and this many
bytes per element it writes, at the streaming bandwidth."""
SOFTMAX_FORWARD_EFFICIENCY = ((2048, 0.728), (4096, 0.499), (8192, 0.380))
"""fp32 softmax forward over rows of the given length, counted as one read and one
write (8 bytes per element): up to 2048 PyTorch's persistent warp softmax reads a row
once (3.16 TB/s); longer rows go to the block softmax, which reads a row for its max,
again for the sum of exponentials and again to write (2.19 TB/s at 4096, 1.67 at 8192)."""


@dataclass(frozen=True)
class GemmShape:
    """C (m x n) = A (m x k) · B (k x n): the shape a GEMM profile is looked up by."""

    m: float
    n: float
    k: float


@dataclass(frozen=True)
class AttentionShape:
    """A fused attention kernel's problem: what an attention profile is looked up by."""

    batch: float
    """Sequences (micro-batch x context-parallel chunks) the kernel runs over."""
    heads: float
    kv_heads: float
    seq_len: float
    """Query length of one sequence on this GPU."""
    head_dim: int
    causal: bool
    backward: bool
    backend: str = "flash"
    """The SDPA kernel (``flash``, ``cudnn``, ``efficient``): each has its own measured rates."""


@dataclass(frozen=True)
class OptimizerShape:
    """An AdamW step over local parameters: what an optimizer profile is looked up by.

    ``dtype`` is the precision the step streams (``fp32`` where master weights or moments
    are fp32, else ``bf16``); ``traffic_ratio`` is this step's bytes per parameter over
    those of the profiled step, which keeps parameters, gradients and moments all in
    ``dtype`` (``stage_work.optimizer_step_work``), so mixed layouts (bf16 weights with
    fp32 master copies) scale the measured streaming time by what they move."""

    implementation: str
    dtype: str
    tensors: int
    params: float
    traffic_ratio: float = 1.0


@dataclass(frozen=True)
class Work:
    """One kernel family's work: FLOPs, HBM bytes and kernel launches (and its shape).

    ``shape`` lets a measured profile give the achievable rate of this very problem size;
    without a shape (or a profile) the GPU's single achievable rate for the kind applies.
    """

    kind: WorkKind
    flops: float = 0.0
    bytes: float = 0.0
    kernels: int = 1
    shape: GemmShape | AttentionShape | OptimizerShape | None = None
    host: HostPath = "autograd"
    """How the host launches it: recorded on the autograd tape by the Python forward
    (``autograd``, recomputed forwards too), by the autograd engine's C++ loop during the
    backward (``backward``), or as plain tensor ops outside autograd (``plain``: the
    optimizer step); each costs the host a different time per kernel."""
    attention_core: bool = False
    """Part of the attention core that selective recomputation runs again in the backward
    (Korthikanti et al. 2022, section 5: the Q·Kᵀ product, softmax, dropout and the
    product with V): the fused attention kernel, or the unfused kernel's two batched
    products and its softmax/dropout pass."""
    generic_elements: float = 0.0
    """Memory work run by PyTorch's generic element-wise kernel over this many elements:
    timed at no less than ``GENERIC_ELEMENT_BYTES`` per element."""
    efficiency: float = 1.0
    """Memory work: the fraction of the streaming bandwidth its kernel achieves (the
    fp32 softmax forward, ``SOFTMAX_FORWARD_EFFICIENCY``)."""
    bandwidth_floor: bool = False
    """Shaped GEMM work that is held to the bandwidth roofline too: the batched products
    of an unfused attention write or read the s x s score matrix through HBM, which the
    GEMM profile's shapes do not show."""
    backward: tuple[Work, ...] | None = None
    """The backward work where it is not the generic one (``_backward_of``)."""


class ShapeRates(Protocol):
    """Achieved rates by problem size, from a measured kernel profile (``planner.cost.rates``).

    A profiled GEMM or attention time is the kernel's whole device time (its memory
    traffic included), so shaped GEMM and attention work is not also held to the
    bandwidth roofline; element-wise work gets the bandwidth measured at its size.
    """

    def gemm_flops(self, shape: GemmShape) -> float: ...

    def attention_flops(self, shape: AttentionShape) -> float: ...

    def memory_bytes_per_s(self, bytes_per_kernel: float) -> float: ...
    def optimizer_time(self, shape: OptimizerShape) -> tuple[float, float] | None:
        """Measured (device, host) seconds of an optimizer step, or None if unmeasured."""

    def offload_time(self, params: float, *, grad_bytes: int, weight_bytes: int) -> float | None:
        """Seconds to step ``params`` on the host (gradients down, AdamW, weights up), or
        None where the host was not measured."""


@dataclass(frozen=True)
class Rates:
    """Achievable rates of one GPU (see ``planner.cost.rates``).

    ``by_shape``, where a profile exists, gives the rate of each shaped GEMM and attention
    kernel; the scalar rates serve work without a shape.
    """

    gemm_flops: float
    attention_flops: float
    memory_bytes_per_s: float
    kernel_overhead_s: float
    source: str = ""
    by_shape: ShapeRates | None = None
    plain_kernel_overhead_s: float | None = None
    """Host time per launch of work outside autograd; None: ``kernel_overhead_s``."""
    backward_kernel_overhead_s: float | None = None
    """Host time per launch by the autograd engine; None: ``kernel_overhead_s``."""

    def measured_optimizer(self, work: Work) -> tuple[float, float] | None:
        """(device, host) seconds of an optimizer step the profile measured, else None."""
        if self.by_shape is None or not isinstance(work.shape, OptimizerShape):
            return None
        return self.by_shape.optimizer_time(work.shape)

    def offload_time(self, params: float, *, grad_bytes: int, weight_bytes: int) -> float | None:
        """Host seconds of an offloaded optimizer share (``ShapeRates.offload_time``)."""
        if self.by_shape is None:
            return None
        return self.by_shape.offload_time(params, grad_bytes=grad_bytes, weight_bytes=weight_bytes)

    def launch_time(self, work: Work) -> float:
        """The host's time to launch ``work``'s kernels (an optimizer step: as profiled)."""
        measured = self.measured_optimizer(work)
        if measured is not None:
            return measured[1]
        if work.host == "plain" and self.plain_kernel_overhead_s is not None:
            return work.kernels * self.plain_kernel_overhead_s
        if work.host == "backward" and self.backward_kernel_overhead_s is not None:
            return work.kernels * self.backward_kernel_overhead_s
        return work.kernels * self.kernel_overhead_s

    def flops_rate(self, work: Work) -> float:
        """Achievable FLOP/s of ``work`` (a GEMM or attention kernel)."""
        if self.by_shape is not None:
            if isinstance(work.shape, GemmShape):
                return self.by_shape.gemm_flops(work.shape)
            if isinstance(work.shape, AttentionShape):
                return self.by_shape.attention_flops(work.shape)
        return self.attention_flops if work.kind == "attention" else self.gemm_flops

    def device_time(self, work: Work) -> float:
        """Time of ``work`` on the GPU alone (no launch floor): measured or roofline."""
        measured = self.measured_optimizer(work)
        if measured is not None:
            return measured[0]
        if self.by_shape is not None:
            per_kernel = work.bytes / max(1, work.kernels)
            streaming = self.by_shape.memory_bytes_per_s(per_kernel)
            if work.kind == "memory":
                return _streamed(work) / streaming
            if work.shape is not None:
                compute = work.flops / self.flops_rate(work)
                return max(compute, work.bytes / streaming) if work.bandwidth_floor else compute
        compute = work.flops / self.flops_rate(work) if work.kind != "memory" else 0.0
        return max(compute, _streamed(work) / self.memory_bytes_per_s)


def _streamed(work: Work) -> float:
    """The bytes a memory ``work`` costs at the streaming bandwidth: its bytes over its
    kernel's efficiency, or the generic kernel's per-element cost where larger."""
    return max(work.bytes / work.efficiency, work.generic_elements * GENERIC_ELEMENT_BYTES)


def work_time(work: Work, rates: Rates) -> float:
    """Time of one ``Work`` alone: the larger of its device time and its launches.

    Kernels are launched asynchronously, so an op costs the larger of the two, not their
    sum; a sequence of ops is timed as one stream by ``total_time``.
    """
    return total_time([work], rates)


def total_time(works: list[Work], rates: Rates) -> float:
    """Time of ``works`` issued back to back as one stream: max(device sum, launch sum).

    The host enqueues kernels into the GPU's launch queue without waiting for them (eager
    PyTorch has no synchronisation inside a forward or backward pass), so while kernels
    are long it runs ahead, and the slack it builds covers the launches of the short
    kernels that follow. Over a repeating sequence (a layer's ops, a pass over identical
    layers) a first-in-first-out queue settles at the larger of the two sums; the model
    applies this per layer and pass (``stage_work``) and per optimizer step, and never
    carries slack from one of those phases to the next (a small overestimate).
    """
    device = sum(rates.device_time(w) for w in works if w.bytes > 0 or w.flops > 0)
    launches = sum(rates.launch_time(w) for w in works)
    return max(device, launches)


@dataclass(frozen=True)
class LayerWork:
    """Forward and backward work of one layer for one micro-batch on one GPU."""

    forward: tuple[Work, ...] = ()
    backward: tuple[Work, ...] = ()

    @property
    def forward_flops(self) -> float:
        return sum(work.flops for work in self.forward)


def gemm(m: float, n: float, k: float, *, dtype_bytes: int, kernels: int = 1) -> Work:
    """Y (m x n) = X (m x k) · Wᵀ: m tokens, n output features, k input features."""
    return Work(
        "gemm",
        flops=2.0 * m * n * k,
        bytes=dtype_bytes * (m * k + k * n + m * n),
        kernels=kernels,
        shape=GemmShape(m, n, k),
    )


def _backward_of(work: Work) -> list[Work]:
    if work.backward is not None:
        return [replace(w, host="backward", attention_core=False) for w in work.backward]
    if work.kind == "gemm":
        # input gradient dX (m x k) = dY (m x n) · W, and weight gradient
        # dW (n x k) = dYᵀ · X reducing over the m tokens: same FLOPs, other shapes
        shape = work.shape
        # (a backward is never re-run: the attention-core tag stays with the forward)
        if not isinstance(shape, GemmShape):
            return [replace(work, host="backward", attention_core=False)] * 2
        return [
            replace(work, shape=GemmShape(shape.m, shape.k, shape.n), host="backward",
                    attention_core=False),
            replace(work, shape=GemmShape(shape.n, shape.k, shape.m), host="backward",
                    attention_core=False),
        ]  # fmt: skip
    if work.kind == "attention":
        shape = work.shape
        return [
            Work("attention", flops=FLASH_BACKWARD_FLOP_RATIO * work.flops,
                 bytes=2 * work.bytes, kernels=work.kernels,
                 shape=replace(shape, backward=True)
                 if isinstance(shape, AttentionShape) else None, host="backward")
        ]  # fmt: skip
    return [Work("memory", bytes=2 * work.bytes, kernels=2 * work.kernels, host="backward")]


def with_backward(forward: list[Work]) -> LayerWork:
    return LayerWork(
        forward=tuple(forward), backward=tuple(w for f in forward for w in _backward_of(f))
    )


@dataclass(frozen=True)
class LayerShape:
    """The slice of a layout a layer's work depends on."""

    tokens: float
    """Tokens of one micro-batch on this GPU (micro-batch x sequence / cp)."""
    seq_len: int
    tp: int
    etp: int
    ep: int
    cp: int
    cp_comm_type: str = "p2p"
    """How context parallelism splits attention (``ParallelConfig.cp_comm_type``): a2a
    (Ulysses) gives each rank whole sequences for its share of the heads; the others
    keep each rank's sequence chunks and bring it the keys and values."""
    cp_a2a: int = 1
    """CP ranks the head-scattering all-to-all spans (``ParallelConfig.cp_a2a_size``):
    under a2a+p2p the a2a group, whose all-to-all leaves each rank ``cp_a2a`` times the
    sequence for ``1/cp_a2a`` of the heads before the ring runs over the rest."""


def layer_work(
    model: ModelSpec, index: int, *, shape: LayerShape, impl: Implementation
) -> LayerWork:
    """The ops of transformer layer ``index`` for one micro-batch on one GPU.

    Layers of the same kind (dense or MoE MLP, global or local attention) do the same work,
    so the work is computed once per kind and shape (cached) and shared.
    """
    return kind_work(model, representative_layer(model, index), shape, impl)


def representative_layer(model: ModelSpec, index: int) -> int:
    """The first layer index of the same kind as ``index``."""
    return layer_kinds(model)[index]


_kinds: dict[int, tuple[ModelSpec, tuple[int, ...]]] = {}
KINDS_LIMIT = 256
"""Models whose layer kinds ``layer_kinds`` keeps before it starts afresh."""


def layer_kinds(model: ModelSpec) -> tuple[int, ...]:
    """``representative_layer`` of every layer, first first: the first layer index of each
    layer's kind (dense or MoE MLP, global or local attention). Memoised per model object
    (the entry holds the model, so its id is not reused while the entry lives): the cost
    model asks for it per stage of thousands of layouts, and hashing a model spec field by
    field on each lookup would cost more than the answer."""
    hit = _kinds.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    signature = [
        (model.is_moe_layer(i), model.is_local_attention_layer(i)) for i in range(model.num_layers)
    ]
    first: dict[tuple[bool, bool], int] = {}
    for i, kind in enumerate(signature):
        first.setdefault(kind, i)
    kinds = tuple(first[kind] for kind in signature)
    if len(_kinds) >= KINDS_LIMIT:
        _kinds.clear()
    _kinds[id(model)] = (model, kinds)
    return kinds


@lru_cache(maxsize=4096)
def kind_work(model: ModelSpec, index: int, shape: LayerShape, impl: Implementation) -> LayerWork:
    act, res = impl.activation_bytes, impl.residual_bytes
    t, tokens = shape.tp, shape.tokens
    h = model.hidden_size
    forward: list[Work] = []
    forward += _attention_work(model, index, shape=shape, impl=impl)
    forward += _mlp_work(model, index, shape=shape, impl=impl)
    norms = 1 if model.shared_layer_norm else model.norms_per_layer
    # norm: read the residual, write the normalised copy; residual add: 2 reads, 1 write
    forward.append(
        Work("memory", bytes=norms * tokens * h * (res + act), kernels=norms * norm_kernels(impl))
    )
    forward.append(Work("memory", bytes=2 * tokens * h * 3 * res, kernels=2))
    if impl.casts_linear_inputs:
        # autocast casts the fp32 normalised input of q, k, v and the MLP's up
        # projection(s) per call; the output projections take bf16 inputs already
        linears = 3 + (2 if model.gated_mlp else 1)
        forward.append(
            Work("memory", bytes=linears * tokens * h * (res + act) / t, kernels=linears)
        )
    if impl.casts_weights:
        weights = _layer_matmul_weights(model, index) / t
        forward.append(Work("memory", bytes=weights * (4 + 2), kernels=7))
    work = with_backward(forward)
    if impl.main_grad_hooks:
        params = layer_params(model, index)
        weights, tensors = params.norms, norms
        if not impl.wgrad_accumulation_fusion:  # the matrices' gradients are hooked too
            weights += (params.attention_matmul + params.mlp_active_matmul) / t
            tensors += 4 + (2 if model.gated_mlp else 1)  # matrices per layer
        work = replace(work, backward=(*work.backward, main_grad_work(weights, tensors)))
    return work


MAIN_GRAD_BYTES = 4 + 2 + 4
"""Megatron DDP's hook per parameter and micro-batch (megatron-core
``DistributedDataParallel._make_backward_post_hook``: ``param.main_grad.add_(param.grad)``):
read the fp32 main gradient and the bf16 gradient, write the fp32 main gradient. With
``gradient_accumulation_fusion`` (Megatron-LM's default) the linears' weight-gradient GEMMs
accumulate into ``main_grad`` and mark ``grad_added_to_main_grad``, so their hooks add
nothing; the embedding's and the norms' gradients are still added here."""


def main_grad_work(params: float, tensors: int) -> Work:
    """The main-gradient accumulation of ``params`` parameters in ``tensors`` tensors."""
    return Work("memory", bytes=params * MAIN_GRAD_BYTES, kernels=tensors,
                generic_elements=params, host="backward")  # fmt: skip


def norm_kernels(impl: Implementation) -> int:
    """Kernels of one norm's forward: one fused kernel, or the eager chain of ops."""
    if not impl.eager:
        return 1
    return EAGER_RMSNORM_OPS + (EAGER_RMSNORM_CASTS if impl.residual_bytes < 4 else 0)


def _layer_matmul_weights(model: ModelSpec, index: int) -> float:
    params = layer_params(model, index)
    return params.attention_matmul + params.mlp_active_matmul


def _attention_work(
    model: ModelSpec, index: int, *, shape: LayerShape, impl: Implementation
) -> list[Work]:
    act, t, tokens = impl.activation_bytes, shape.tp, shape.tokens
    h, a = model.hidden_size, model.num_attention_heads
    if model.mla is not None:
        mla = model.mla
        qk, v = mla.qk_nope_head_dim + mla.qk_rope_head_dim, mla.v_head_dim
        q_out = a * qk
        kv_out = mla.kv_lora_rank + mla.qk_rope_head_dim
        works = [
            gemm(tokens, q_out / t, h, dtype_bytes=act),
            gemm(tokens, kv_out, h, dtype_bytes=act),
            gemm(tokens, a * (mla.qk_nope_head_dim + v) / t, mla.kv_lora_rank, dtype_bytes=act),
        ]
        out_in = a * v
    else:
        d, kv = model.kv_channels, model.kv_heads
        qk = v = d
        # eager modules project q, k and v with three linears
        qkv_kernels = 3 if impl.eager else 1
        works = [gemm(tokens, (a * d + 2 * kv * d) / t, h, dtype_bytes=act, kernels=qkv_kernels)]
        out_in = a * d
    keys_causal = mean_attended_tokens(model, index, shape.seq_len, causal=True) / shape.cp
    # context parallel: each rank's queries meet all keys over the ring; per rank that is
    # the local queries against the whole (causal) context
    keys = keys_causal * shape.cp
    score_flops = 2.0 * tokens * a * (qk + v) * keys / t
    if impl.flash_attention:
        io = act * tokens * (2 * a * qk + 2 * a * v) / t
        grouped = a if model.mla is not None or impl.repeat_kv else model.kv_heads
        kernels = _context_parallel_kernels(
            shape, tokens=tokens, heads=a / t, kv_heads=max(1.0, grouped / t),
            head_dim=int(qk), backend=impl.attention_backend,
        )  # fmt: skip
        if impl.repeat_kv and model.mla is None and model.kv_heads < a:
            # repeat_interleave of K and V to every head: read kv heads, write a heads
            # (its backward sums the copies back: the same traffic)
            repeated = act * tokens * 2 * (model.kv_heads + a) * qk / t
            works.append(Work("memory", bytes=repeated, kernels=2))
        works += [
            Work("attention", flops=score_flops * share, bytes=io * share, kernels=launches,
                 shape=kernel, attention_core=True)
            for kernel, share, launches in kernels
        ]  # fmt: skip
        if impl.eager:
            # the (batch, heads, seq, dim) output transposed back and made contiguous
            works.append(Work("memory", bytes=2 * act * tokens * a * v / t, kernels=1))
    else:
        full_keys = shape.seq_len
        square = tokens * a * full_keys / t  # score elements: the unfused kernel keeps all
        # batched products, one per (sequence, head): scores = Q·Kᵀ (s x d by d x s) and
        # context = P·V (s x s by s x d); looked up as one GEMM with every head's query
        # rows stacked (m = tokens·heads), which keeps each product's n and k
        rows = tokens * a / t
        works.append(
            Work("gemm", flops=2.0 * rows * qk * full_keys,
                 bytes=act * (square + rows * qk + tokens * a * qk / t), kernels=1,
                 shape=GemmShape(rows, full_keys, qk), attention_core=True,
                 bandwidth_floor=True)
        )  # fmt: skip
        works.append(
            Work("gemm", flops=2.0 * rows * v * full_keys,
                 bytes=act * (square + rows * v + tokens * a * v / t), kernels=1,
                 shape=GemmShape(rows, v, full_keys), attention_core=True,
                 bandwidth_floor=True)
        )  # fmt: skip
        if impl.eager_fp32_softmax:
            works += _eager_fp32_softmax_work(
                model, tokens=tokens, square=square, t=t, act=act, keys=full_keys
            )
        else:
            # scale + mask + softmax (+ dropout): read and write the score matrix, fused
            passes = 2 if model.attention_dropout else 1
            works.append(
                Work("memory", bytes=act * square * 2 * passes, kernels=2, attention_core=True)
            )
    # RoPE on q and k (read + write)
    if model.position_embedding == "rope":
        rotated = (a * qk + model.kv_heads * qk) if model.mla is None else a * qk
        if impl.eager_fp32_softmax:  # megatron-core's local spec: unfused, op by op
            works += megatron_eager_rope_work(tokens * rotated / t, act=act)
        else:
            rope_kernels = 2 * (EAGER_ROPE_OPS if impl.eager else 1)
            works.append(Work("memory", bytes=2 * act * tokens * rotated / t, kernels=rope_kernels))
    works.append(gemm(tokens, h, out_in / t, dtype_bytes=act))
    return works


def _context_parallel_kernels(
    shape: LayerShape,
    *,
    tokens: float,
    heads: float,
    kv_heads: float,
    head_dim: int,
    backend: str,
) -> list[tuple[AttentionShape, float, int]]:
    """The fused attention kernels of one layer on one GPU: (shape, share of the score
    FLOPs, kernel launches) each; the rate of each is looked up by its shape.

    Without context parallelism: one causal kernel over the local sequences. Under
    Ulysses (``a2a``) the all-to-all hands each rank whole sequences for ``1/cp`` of the
    heads: one causal kernel at the full length. Under ring (``p2p``) and all-gather
    context parallelism each rank keeps two of the ``2·cp`` sequence chunks (chunks ``i``
    and ``2cp-1-i``, Megatron-LM's load balancing) and attends them to every earlier
    chunk: ``2cp-1`` key blocks are wholly unmasked and two are the causal diagonal, so
    ``1/(2cp)`` of the rank's score FLOPs run in causally masked tiles and the rest in
    full tiles, which a flash kernel runs at its non-causal rate (no masked tiles to skip,
    no triangular tail). Both parts are timed at the local sequence length. Under
    ``a2a+p2p`` with an a2a group of ``A`` ranks, the all-to-all first gathers the group's
    chunks (reordered into two chunks of a ``2·cp/A``-chunk layout: Transformer Engine's
    ``flash_attn_a2a_communicate``) for ``1/A`` of the heads; the ring then runs over the
    ``R = cp/A`` groups as above with ``R`` in place of cp: local length ``s/R``, ``1/(2R)``
    of the FLOPs causal.
    """
    cp = shape.cp
    if shape.cp_comm_type == "a2a+p2p" and shape.cp_a2a > 1:
        ring = cp // shape.cp_a2a
        if ring > 1:
            return _context_parallel_kernels(
                replace(shape, cp=ring, cp_comm_type="p2p", cp_a2a=1),
                tokens=tokens * shape.cp_a2a,
                heads=heads / shape.cp_a2a,
                kv_heads=max(1.0, kv_heads / shape.cp_a2a),
                head_dim=head_dim,
                backend=backend,
            )
        shape = replace(shape, cp_comm_type="a2a")
    local_len = shape.seq_len / cp
    kernel = AttentionShape(
        batch=tokens / local_len,
        heads=heads,
        kv_heads=kv_heads,
        seq_len=local_len,
        head_dim=head_dim,
        causal=True,
        backward=False,
        backend=backend,
    )
    if cp == 1:
        return [(kernel, 1.0, 1)]
    if shape.cp_comm_type == "a2a":
        whole = replace(
            kernel,
            batch=tokens / shape.seq_len * cp,
            heads=heads / cp,
            kv_heads=max(1.0, kv_heads / cp),
            seq_len=shape.seq_len,
        )
        return [(whole, 1.0, 1)]
    diagonal = 1.0 / (2 * cp)
    return [(replace(kernel, causal=False), 1.0 - diagonal, 1), (kernel, diagonal, 0)]


def _eager_fp32_softmax_work(
    model: ModelSpec, *, tokens: float, square: float, t: int, act: int, keys: float
) -> list[Work]:
    """Megatron-Core's local attention between its two matmuls, op by op, each a pass
    over the whole score matrix (``square`` elements) at its kernel class's bandwidth
    (megatron-core 0.16 ``FusedScaleMaskSoftmax.forward_torch_softmax`` without the
    fused kernel; no scale op, the 1/sqrt(d) is the ``baddbmm``'s alpha; dropout p=0
    returns its input): forward ``.float()`` (act + 4 bytes, unrolled cast), the causal
    ``masked_fill_`` in place (4 + 4, broadcast mask), the softmax (by row length) and
    ``.bfloat16()`` (4 + act); backward, in the autograd engine's order, the gradient's
    cast up (act + 4, unrolled), the softmax backward (a product of gradient and output,
    read 8 write 4, then the backward proper, read 8 write 4), the masked fill's backward
    (a clone, 4 + 4, then ``masked_fill_`` on it) and the cast down (4 + act).
    And the K and V repeated to every query head (read kv heads, write a heads). All of
    it runs inside the core ``DotProductAttention`` that selective recomputation re-runs."""
    fp32 = 4
    backward = (
        Work("memory", bytes=square * (act + fp32), generic_elements=square),
        Work("memory", bytes=square * 3 * fp32, kernels=1),
        Work("memory", bytes=square * 3 * fp32, kernels=1),
        Work("memory", bytes=square * 2 * fp32, kernels=1),
        Work("memory", bytes=square * 2 * fp32, generic_elements=square),
        Work("memory", bytes=square * (fp32 + act)),
    )
    works = [
        Work("memory", bytes=square * (act + fp32), generic_elements=square,
             attention_core=True, backward=backward),
        Work("memory", bytes=square * 2 * fp32, generic_elements=square,
             attention_core=True, backward=()),
        Work("memory", bytes=square * 2 * fp32, efficiency=softmax_forward_efficiency(keys),
             attention_core=True, backward=()),
        Work("memory", bytes=square * (fp32 + act), attention_core=True, backward=()),
    ]  # fmt: skip
    d = model.kv_channels if model.mla is None else model.mla.v_head_dim
    context = tokens * model.num_attention_heads * d / t  # elements of q, and of the output
    if model.mla is None and model.kv_heads < model.num_attention_heads:
        # ``repeat_interleave`` of K and V (read kv heads, write a heads; generic kernel);
        # backward: ``ExpandBackward`` sums the copies back, the same traffic
        repeat = act * tokens * 2 * (model.kv_heads + model.num_attention_heads) * d / t
        back = (Work("memory", bytes=repeat, kernels=2, generic_elements=2 * context),)
        works.append(Work("memory", bytes=repeat, kernels=2, attention_core=True,
                          generic_elements=2 * context, backward=back))  # fmt: skip
    # the context's permute to [s, b, heads, d] made contiguous (its backward a view);
    # the causal mask built again in every layer (``get_default_causal_mask``: fp32 ones,
    # ``triu``, ``.bool()``: 4 + 8 + 5 bytes per s x s element); the baddbmm backward's
    # two products by alpha (2 x (2 + 2) bytes per element of q and of the repeated k)
    mask = 17 * keys * keys
    works.append(Work("memory", bytes=2 * act * context, generic_elements=context,
                      attention_core=True, backward=()))  # fmt: skip
    alpha = (Work("memory", bytes=2 * 2 * act * context, kernels=2),)
    works.append(Work("memory", bytes=mask, kernels=3, attention_core=True, backward=alpha))
    return works


def megatron_eager_rope_work(rotated: float, *, act: int) -> list[Work]:
    """RoPE over ``rotated`` elements (q and k) as megatron-core's unfused
    ``_apply_rotary_pos_emb_bshd`` runs it, op by op: forward ``t * cos`` and
    ``rotate_half(t) * sin`` (bf16 products with a broadcast operand), the negated half and
    the ``cat`` of ``rotate_half`` (generic kernels), their sum and the ``cat`` with the
    empty pass-through part (vectorized); backward the two products again, the ``add_``
    that joins the two branches' gradients and the negation (generic), the ``cat`` of the
    halves' gradients (generic), the other branch's ``add_`` and the zero fill of the
    slice's gradient (vectorized). The cos and sin of the positions are recomputed per
    layer at s x d elements (negligible)."""
    forward_back = (
        Work("memory", bytes=10 * act * rotated, kernels=5, generic_elements=4.5 * rotated),
        Work("memory", bytes=4 * act * rotated, kernels=2),
    )
    return [
        Work("memory", bytes=7 * act * rotated, kernels=4, generic_elements=3.5 * rotated,
             backward=forward_back),
        Work("memory", bytes=5 * act * rotated, kernels=2, backward=()),
    ]  # fmt: skip


def softmax_forward_efficiency(row: float) -> float:
    """``SOFTMAX_FORWARD_EFFICIENCY`` at a row length: interpolated in log2 of the length,
    held at the ends of the measured range."""
    points = SOFTMAX_FORWARD_EFFICIENCY
    if row <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if row <= x1:
            share = math.log2(row / x0) / math.log2(x1 / x0)
            return y0 + share * (y1 - y0)
    return points[-1][1]


def _mlp_work(
    model: ModelSpec, index: int, *, shape: LayerShape, impl: Implementation
) -> list[Work]:
    act, tokens, h = impl.activation_bytes, shape.tokens, model.hidden_size
    gated = model.gated_mlp
    up = 2 if gated else 1
    # activation function: eager SwiGLU reads gate and up and writes silu and the product
    act_passes = (5 if not impl.fused_gated_mlp else 3) if gated else 2
    if not model.is_moe_layer(index):
        f = model.ffn_hidden_size / shape.tp
        up_kernels = up if impl.eager else 1  # eager: gate and up are two linears
        return [
            gemm(tokens, up * f, h, dtype_bytes=act, kernels=up_kernels),
            Work("memory", bytes=act_passes * act * tokens * f, kernels=2 if gated else 1),
            gemm(tokens, h, f, dtype_bytes=act),
        ]
    moe = model.moe
    assert moe is not None
    works = [gemm(tokens, moe.num_experts, h, dtype_bytes=act)]  # router
    works += routed_expert_work(model, shape=shape, impl=impl)
    if moe.num_shared_experts:
        f_s = moe.num_shared_experts * moe.shared_ffn_hidden_size / shape.tp
        works += [gemm(tokens, up * f_s, h, dtype_bytes=act), gemm(tokens, h, f_s, dtype_bytes=act)]
    return works


def routed_expert_work(model: ModelSpec, *, shape: LayerShape, impl: Implementation) -> list[Work]:
    """The forward work of an MoE layer that scales with the routed tokens this EP rank
    receives (the mean rank's share): the grouped expert GEMMs, their activation and the
    permutation into expert order and back."""
    moe = model.moe
    assert moe is not None
    act, h = impl.activation_bytes, model.hidden_size
    up = 2 if model.gated_mlp else 1
    act_passes = (5 if not impl.fused_gated_mlp else 3) if model.gated_mlp else 2
    routed_tokens = shape.tokens * moe.top_k * (moe.capacity_factor or 1.0)
    local_experts = moe.num_experts / shape.ep
    f_e = moe.expert_ffn_hidden_size / shape.etp
    # grouped GEMMs: the routed copies of this rank's share of tokens, over its experts
    per_expert = routed_tokens / local_experts
    return [
        _grouped(gemm(per_expert, up * f_e, h, dtype_bytes=act), groups=local_experts),
        Work("memory", bytes=act_passes * act * routed_tokens * f_e),
        _grouped(gemm(per_expert, h, f_e, dtype_bytes=act), groups=local_experts),
        # permutation into expert order and back (read + write each routed copy)
        Work("memory", bytes=2 * 2 * act * routed_tokens * h, kernels=2),
    ]  # fmt: skip


def _grouped(one: Work, *, groups: float) -> Work:
    """A grouped GEMM: ``groups`` problems of ``one``'s shape in one launch."""
    return replace(one, flops=groups * one.flops, bytes=groups * one.bytes)


def head_work(model: ModelSpec, *, tokens: float, tp: int, impl: Implementation) -> LayerWork:
    """Final norm, output projection and the cross-entropy over fp32 logits."""
    act, v, h = impl.activation_bytes, model.vocab_size / tp, model.hidden_size
    forward = [
        Work("memory", bytes=tokens * h * (impl.residual_bytes + act), kernels=norm_kernels(impl)),
        gemm(tokens, v, h, dtype_bytes=act),
    ]
    if impl.eager_vocab_cross_entropy:
        forward += vocab_parallel_cross_entropy_work(tokens * v, act=act)
    elif impl.fused_cross_entropy:
        # cast to fp32, max, exp and sum in place, one fused pass each way
        forward.append(Work("memory", bytes=tokens * v * (act + 4 + 4 + 4), kernels=4))
    else:
        # .float() (2 -> 4), log_softmax (read 4, write 4, plus a reduction pass), nll
        forward.append(Work("memory", bytes=tokens * v * (act + 4 + 4 + 4 + 4), kernels=4))
    if impl.casts_weights:
        forward.append(Work("memory", bytes=v * h * (4 + 2), kernels=1))
    work = with_backward(forward)
    if impl.wgrad_accumulation_fusion:  # the output layer's GEMM accumulates its own
        work = replace(work, backward=(*work.backward, main_grad_work(h, 1)))
    elif impl.main_grad_hooks:  # the output layer's weight and the final norm's
        work = replace(work, backward=(*work.backward, main_grad_work(v * h + h, 2)))
    return work


def vocab_parallel_cross_entropy_work(logits: float, *, act: int) -> list[Work]:
    """Megatron's vocab-parallel cross entropy over ``logits`` local logits, op by op
    (megatron-core 0.16.1 ``tensor_parallel/cross_entropy.py``, which
    ``LanguageModule.compute_language_model_loss`` calls on either layer spec unless
    ``cross_entropy_loss_fusion``; it casts the logits up itself): forward the cast up
    (act + 4 bytes, unrolled), the row max (read 4), subtracting it in place (4 + 4, a
    per-row operand), ``exp`` (4 + 4), the row sum (read 4) and the division in place
    (4 + 4, per row); backward the gradient scaled in place (4 + 4, per row) and cast
    down to the logits' dtype (4 + act)."""
    fp32 = 4
    backward = (
        Work("memory", bytes=logits * 2 * fp32, generic_elements=logits),
        Work("memory", bytes=logits * (fp32 + act)),
    )
    return [
        Work("memory", bytes=logits * (act + fp32), generic_elements=logits,
             backward=backward),
        Work("memory", bytes=logits * fp32, backward=()),
        Work("memory", bytes=logits * 2 * fp32, generic_elements=logits, backward=()),
        Work("memory", bytes=logits * 2 * fp32, backward=()),
        Work("memory", bytes=logits * fp32, backward=()),
        Work("memory", bytes=logits * 2 * fp32, generic_elements=logits, backward=()),
    ]  # fmt: skip


def embedding_work(
    model: ModelSpec, *, tokens: float, impl: Implementation, tp: int = 1
) -> LayerWork:
    """Lookup forward (gather rows) and the scatter-add of its gradient backward; under
    Megatron's DDP the hook adding the (vocab-parallel, ``1/tp``) table's gradient into the
    fp32 main gradient, which no GEMM accumulates for it."""
    row = model.hidden_size * impl.residual_bytes
    work = with_backward([Work("memory", bytes=2 * tokens * row, kernels=1)])
    if impl.main_grad_hooks:
        params = model.vocab_size / tp * model.hidden_size
        work = replace(work, backward=(*work.backward, main_grad_work(params, 1)))
    return work
