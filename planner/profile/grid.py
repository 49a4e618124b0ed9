"""What ``autopar profile`` measures: the points of each section, as plain data (no torch).

GEMMs, two sets per dtype:

* the interpolation grid: every (m, n, k) with each dimension a power of two from
  ``GRID_MIN`` to ``GRID_MAX`` (forward layout), which the reader interpolates over;
* model shapes: the linear layers of catalogue models (``MODELS``; qkv, o-proj, fused
  gate+up or up, down, and the output layer) split for tensor parallel sizes ``TP``
  (column-parallel layers split their output features, row-parallel ones their input
  features, the output layer its vocabulary), at the token counts ``TOKENS`` of a
  micro-batch, each in its three products: forward y = x·Wᵀ (m = tokens, n = out,
  k = in), input gradient dx = dy·W (m = tokens, n = in, k = out) and weight gradient
  dW = dyᵀ·x (m = out, n = in, k = tokens). Shapes shared by several layers are measured
  once and keep every label.

Attention: ``scaled_dot_product_attention`` over sequence lengths ``SEQ_LENS`` x query
heads in flight ``ATTENTION_HEADS`` x kv groups (heads / kv heads) ``KV_GROUPS`` x head
dims, causal (and non-causal at head dim 128), batch 1: the reader interpolates over
sequence length, batch·heads, group and head dim. The catalogue models' per-GPU head
layouts under tensor parallelism (llama-3.1: 32/8, 64/8, 128/8 heads over tp 1-8, groups
4, 8 and 16) lie on this grid.

Memory: ``copy`` and ``add`` of bf16 tensors from 1 MiB to 1 GiB per tensor.

Optimizer: one ``torch.optim.AdamW`` step in each implementation (per-tensor loop,
``foreach``, ``fused``) with parameters, gradients and moments in bf16 and in fp32, over
``OPTIMIZER_SETS``: 1,024 tensors of 4,096 elements (the host's cost per tensor: launch-
bound), 128 tensors from 64 Ki to 8 Mi elements each (8 Mi to 1 Gi parameters), and 16
tensors of 64 Mi elements (1 Gi parameters in tensors as large as a 7B model's MLP
weights: the per-tensor loop's kernels are long enough there to stream rather than wait
for the host; 1 Gi fp32 parameters with gradients and moments take 16 GiB).

Host: pinned copies device -> host and host -> device of 64 MiB and 1 GiB, and a fused
AdamW step on the CPU over 16 Mi to 256 Mi fp32 parameters (optimizer offload).

Collectives: all-reduce, all-gather, reduce-scatter, all-to-all (over group sizes of
every power of two up to the world size, and the world size) and send/recv between two
ranks, from 1 KiB to 1 GiB (nccl-tests' sizes, see ``planner.cost.profile_schema``).

``quick=True`` gives a tiny grid of each kind for tests and CPUs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from planner.catalog import load_model
from planner.cost.profile_schema import (
    CollectiveOp,
    Dtype,
    GemmRole,
    HostOp,
    MemoryOp,
    OptimizerImpl,
)

MODELS = ("llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b")
TP = (1, 2, 4, 8)
TOKENS = (1024, 2048, 4096, 8192, 16384)
GRID_MIN, GRID_MAX = 256, 32768
SEQ_LENS = (1024, 2048, 4096, 8192, 16384)
ATTENTION_HEADS = (4, 8, 16, 32, 64, 128)
KV_GROUPS = (1, 4, 8, 16)
HEAD_DIMS = (64, 128)
NON_CAUSAL_HEAD_DIMS = (128,)
MEMORY_TENSOR_BYTES = tuple(2**p for p in range(20, 31, 2))  # 1 MiB .. 1 GiB
OPTIMIZER_IMPLEMENTATIONS: tuple[OptimizerImpl, ...] = ("per_tensor", "foreach", "fused")
OPTIMIZER_DTYPES: tuple[Dtype, ...] = ("bf16", "fp32")
OPTIMIZER_SETS = ((1024, 2**12), (128, 2**16), (128, 2**20), (128, 2**23), (16, 2**26))
"""(tensors, elements per tensor) of the parameter sets an AdamW step is timed over."""
HOST_COPY_ELEMENTS = (2**24, 2**28)
"""fp32 elements of the pinned copies: 64 MiB and 1 GiB."""
HOST_ADAMW_ELEMENTS = (2**24, 2**26, 2**28)
"""fp32 parameters of the CPU AdamW step (with gradients and moments: 256 MiB to 4 GiB)."""
COLLECTIVE_BYTES = tuple(2**p for p in range(10, 31, 2))  # 1 KiB .. 1 GiB
COLLECTIVE_OPS: tuple[CollectiveOp, ...] = (
    "all_reduce",
    "all_gather",
    "reduce_scatter",
    "all_to_all",
    "send_recv",
)


DTYPE_BYTES: dict[str, int] = {"bf16": 2, "fp16": 2, "fp32": 4, "fp8": 1}


def human_bytes(size: float) -> str:
    """1024 -> '1 KiB', 3 * 2**20 -> '3 MiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size:g} B"


@dataclass(frozen=True)
class GemmPoint:
    role: GemmRole
    m: int
    n: int
    k: int
    dtype: Dtype
    labels: tuple[str, ...] = ()

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k

    def describe(self) -> str:
        where = f" ({self.labels[0]}{' +' if len(self.labels) > 1 else ''})" if self.labels else ""
        return f"gemm {self.dtype} {self.role} {self.m}x{self.n}x{self.k}{where}"


@dataclass(frozen=True)
class AttentionPoint:
    batch: int
    seq_len: int
    heads: int
    kv_heads: int
    head_dim: int
    causal: bool
    dtype: Dtype

    def describe(self) -> str:
        mask = "causal" if self.causal else "full"
        return (
            f"attention {self.dtype} {mask} s={self.seq_len} heads={self.heads}/"
            f"{self.kv_heads} d={self.head_dim}"
        )


@dataclass(frozen=True)
class MemoryPoint:
    op: MemoryOp
    dtype: Dtype
    elements: int

    def describe(self) -> str:
        size = human_bytes(self.elements * DTYPE_BYTES[self.dtype])
        return f"memory {self.op} {self.dtype} {size} per tensor"


@dataclass(frozen=True)
class OptimizerPoint:
    implementation: OptimizerImpl
    dtype: Dtype
    tensors: int
    elements_per_tensor: int

    def describe(self) -> str:
        return (
            f"optimizer {self.implementation} {self.dtype} {self.tensors} tensors x "
            f"{self.elements_per_tensor} elements"
        )


@dataclass(frozen=True)
class HostPoint:
    op: HostOp
    elements: int

    def describe(self) -> str:
        if self.op == "cpu_adamw":
            return f"host cpu_adamw over {self.elements} fp32 parameters"
        return f"host {self.op} copy {human_bytes(4 * self.elements)}"


@dataclass(frozen=True)
class CollectivePoint:
    op: CollectiveOp
    group_size: int
    bytes: int

    def describe(self) -> str:
        return f"{self.op} over {self.group_size} ranks, {human_bytes(self.bytes)}"


@dataclass(frozen=True)
class Grid:
    gemm: tuple[GemmPoint, ...] = ()
    attention: tuple[AttentionPoint, ...] = ()
    memory: tuple[MemoryPoint, ...] = ()
    collectives: tuple[CollectivePoint, ...] = ()
    optimizer: tuple[OptimizerPoint, ...] = ()
    host: tuple[HostPoint, ...] = ()
    notes: tuple[str, ...] = field(default=())


def _powers(low: int, high: int) -> list[int]:
    values, value = [], low
    while value <= high:
        values.append(value)
        value *= 2
    return values


@dataclass(frozen=True)
class LayerDims:
    """The dimensions of a transformer layer that set its linears' shapes."""

    name: str
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    gated: bool
    vocab: int

    @classmethod
    def of(cls, name: str) -> LayerDims:
        model = load_model(name)
        return cls(
            name, model.hidden_size, model.num_attention_heads, model.kv_heads,
            model.kv_channels, model.ffn_hidden_size, model.gated_mlp, model.vocab_size,
        )  # fmt: skip


TINY = LayerDims("tiny", hidden=64, heads=4, kv_heads=2, head_dim=16, ffn=128, gated=True,
                 vocab=256)  # fmt: skip
"""A made-up layer for ``--quick`` (CPU tests): small enough to run in milliseconds."""


def model_linears(dims: LayerDims, tp: int) -> list[tuple[str, int, int]]:
    """(label, out features, in features) of one layer's linears and the output layer."""
    h, a, kv, d = dims.hidden, dims.heads, dims.kv_heads, dims.head_dim
    up = 2 if dims.gated else 1
    f, name = dims.ffn, dims.name
    linears = [
        ("qkv", (a + 2 * kv) * d // tp, h),
        ("o_proj", h, a * d // tp),
        ("gate_up" if up == 2 else "up", up * f // tp, h),
        ("down", h, f // tp),
        ("lm_head", -(-dims.vocab // tp), h),
    ]
    return [(f"{name} {label} tp{tp}", out, inp) for label, out, inp in linears]


def model_gemms(
    dtype: Dtype, *, models: Sequence[LayerDims], tps: Sequence[int], tokens: Sequence[int]
) -> list[GemmPoint]:
    """The three products of every model linear, deduplicated by (role, m, n, k)."""
    labels: dict[tuple[GemmRole, int, int, int], list[str]] = {}
    for dims in models:
        for tp in tps:
            for label, out, inp in model_linears(dims, tp):
                for t in tokens:
                    shapes: list[tuple[GemmRole, int, int, int]] = [
                        ("forward", t, out, inp),
                        ("grad_input", t, inp, out),
                        ("grad_weight", out, inp, t),
                    ]
                    for shape in shapes:
                        labels.setdefault(shape, []).append(f"{label} tokens {t}")
    return [
        GemmPoint(role, m, n, k, dtype, tuple(names)) for (role, m, n, k), names in labels.items()
    ]


def grid_gemms(dtype: Dtype, *, low: int, high: int) -> list[GemmPoint]:
    sizes = _powers(low, high)
    return [GemmPoint("grid", m, n, k, dtype) for m in sizes for n in sizes for k in sizes]


def attention_points(
    dtype: Dtype,
    *,
    seq_lens: Sequence[int],
    heads: Sequence[int],
    groups: Sequence[int],
    head_dims: Sequence[int],
    non_causal_head_dims: Sequence[int],
) -> list[AttentionPoint]:
    points = []
    for causal, dims in ((True, head_dims), (False, non_causal_head_dims)):
        for d in dims:
            for s in seq_lens:
                for h in heads:
                    for g in groups:
                        if g <= h:
                            points.append(AttentionPoint(1, s, h, h // g, d, causal, dtype))
    return points


def collective_points(world_size: int, *, sizes: Sequence[int]) -> list[CollectivePoint]:
    if world_size < 2:
        return []
    groups = sorted({g for g in _powers(2, world_size)} | {world_size})
    points = []
    for op in COLLECTIVE_OPS:
        for group in [2] if op == "send_recv" else groups:
            points += [CollectivePoint(op, group, size) for size in sizes]
    return points


def optimizer_points(sets: Sequence[tuple[int, int]]) -> list[OptimizerPoint]:
    return [
        OptimizerPoint(impl, dtype, tensors, elements)
        for dtype in OPTIMIZER_DTYPES
        for impl in OPTIMIZER_IMPLEMENTATIONS
        for tensors, elements in sets
    ]


def host_points(copies: Sequence[int], steps: Sequence[int]) -> list[HostPoint]:
    points = [HostPoint(op, n) for op in ("d2h", "h2d") for n in copies]
    return points + [HostPoint("cpu_adamw", n) for n in steps]


def build_grid(*, quick: bool, gemm_dtypes: Sequence[Dtype], world_size: int) -> Grid:
    """The points of every section; ``gemm_dtypes`` are the dtypes this device supports."""
    if quick:
        gemm: list[GemmPoint] = []
        for dtype in gemm_dtypes:
            gemm += grid_gemms(dtype, low=32, high=128)
            gemm += model_gemms(dtype, models=(TINY,), tps=(1, 2), tokens=(64, 128))
        attention = attention_points(
            gemm_dtypes[0], seq_lens=(64, 128), heads=(2, 4), groups=(1, 2),
            head_dims=(16,), non_causal_head_dims=(16,),
        )  # fmt: skip
        memory = [MemoryPoint(op, "bf16", n) for op in ("copy", "add") for n in (2**12, 2**16)]
        collectives = collective_points(world_size, sizes=(2**10, 2**14))
        optimizer = optimizer_points(((8, 2**10), (4, 2**12)))
        host = host_points((2**12, 2**14), (2**12, 2**14))
    else:
        gemm = []
        for dtype in gemm_dtypes:
            gemm += grid_gemms(dtype, low=GRID_MIN, high=GRID_MAX)
            gemm += model_gemms(
                dtype, models=[LayerDims.of(m) for m in MODELS], tps=TP, tokens=TOKENS
            )
        attention = attention_points(
            "bf16", seq_lens=SEQ_LENS, heads=ATTENTION_HEADS, groups=KV_GROUPS,
            head_dims=HEAD_DIMS, non_causal_head_dims=NON_CAUSAL_HEAD_DIMS,
        )  # fmt: skip
        memory = [
            MemoryPoint(op, "bf16", size // 2)
            for op in ("copy", "add")
            for size in MEMORY_TENSOR_BYTES
        ]
        collectives = collective_points(world_size, sizes=COLLECTIVE_BYTES)
        optimizer = optimizer_points(OPTIMIZER_SETS)
        host = host_points(HOST_COPY_ELEMENTS, HOST_ADAMW_ELEMENTS)
    return Grid(
        tuple(gemm), tuple(attention), tuple(memory), tuple(collectives), tuple(optimizer),
        tuple(host),
    )  # fmt: skip
