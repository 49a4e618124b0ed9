"""The file schema of a kernel profile written by ``autopar profile`` (one JSON file).

The profiler (``planner.profile``) builds a :class:`KernelProfile` and writes it with
``model_dump_json``; the reader (``planner.cost.profile_rates``) validates the file back
into the same models, so writer and reader cannot disagree about a field. Every row holds
raw measurements (shape and timing statistics); achieved rates are derived by the reader.

Top-level keys::

    schema_version  1
    kind            "kernel_profile"
    provenance      where and how it was measured (GPU, driver, CUDA, torch, NCCL, date, ...)
    settings        warm-up, repeats, timer, sections, time limit of the run
    gemm            GemmRow: role, m, n, k, dtype, labels of the model shapes, time
    attention       AttentionRow: batch, seq_len, heads, kv_heads, head_dim, causal, dtype,
                    forward and backward time
    memory          MemoryRow: op (copy | add), dtype, elements, bytes moved, time
    collectives     CollectiveRow: op, group_size, bytes, dtype, backend, scope, time
    optimizer       OptimizerRow: implementation, dtype, tensors, elements, device time
                    and host time of one ``torch.optim.AdamW`` step
    host            HostRow: pinned copies device -> host and host -> device, and a fused
                    AdamW step on the CPU (what optimizer offload costs)
    skipped         what was not measured and why (no fp8, one process, time limit, OOM)
    elapsed_s       wall time of the whole run

Units are in the names: ``_s`` seconds, ``bytes`` bytes. A GEMM multiplies an (m x k) by a
(k x n) matrix: 2·m·n·k FLOPs. Attention FLOPs follow the cost model's convention
(``planner.cost.compute``): forward 2·b·s·heads·(2·head_dim)·keys with keys = s/2 when
causal (s otherwise), backward ``FLASH_BACKWARD_FLOP_RATIO`` (2.5) times the forward.
Collective sizes are nccl-tests' ``S`` (``planner.cost.comm``): the whole buffer of an
all-reduce, the gathered array of an all-gather / reduce-scatter, each rank's send buffer
of an all-to-all, the message of a send/recv.
"""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from planner.cost.compute import FLASH_BACKWARD_FLOP_RATIO

SCHEMA_VERSION = 1
Dtype = Literal["bf16", "fp16", "fp32", "fp8"]
GemmRole = Literal["grid", "forward", "grad_input", "grad_weight"]
MemoryOp = Literal["copy", "add"]
OptimizerImpl = Literal["per_tensor", "foreach", "fused"]
HostOp = Literal["d2h", "h2d", "cpu_adamw"]
CollectiveOp = Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv"]
Scope = Literal["intra_node", "inter_node"]


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Timing(_Row):
    """Statistics of the timed repeats of one measurement (after the warm-up), seconds."""

    median_s: PositiveFloat
    p10_s: PositiveFloat
    p90_s: PositiveFloat
    min_s: PositiveFloat
    max_s: PositiveFloat
    repeats: PositiveInt

    @model_validator(mode="after")
    def _ordered(self) -> Timing:
        ordered = (self.min_s, self.p10_s, self.median_s, self.p90_s, self.max_s)
        if any(a > b * (1 + 1e-9) for a, b in itertools.pairwise(ordered)):
            raise ValueError(
                "timing must satisfy min_s <= p10_s <= median_s <= p90_s <= max_s, got "
                + " / ".join(f"{value:.3g}" for value in ordered)
            )
        return self


class GemmRow(_Row):
    """One matrix product (m x k)·(k x n).

    ``role`` says how the operands were laid out: ``forward`` y = x·Wᵀ (A row-major,
    B = Wᵀ column-major, as ``F.linear``), ``grad_input`` dx = dy·W (both row-major),
    ``grad_weight`` dW = dyᵀ·x (A column-major), ``grid`` the forward layout on the
    power-of-two interpolation grid. FP8 products (``torch._scaled_mm``) accept only
    A row-major and B column-major, so every fp8 row uses that layout whatever its role;
    ``fast_accum`` is True where Transformer Engine's default recipe uses fast
    accumulation (forward), False elsewhere, None for non-fp8 rows.
    """

    role: GemmRole
    m: PositiveInt
    n: PositiveInt
    k: PositiveInt
    dtype: Dtype
    fast_accum: bool | None = None
    labels: tuple[str, ...] = ()
    time: Timing

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k

    @property
    def flops_per_s(self) -> float:
        return self.flops / self.time.median_s


class AttentionRow(_Row):
    """Fused attention (``scaled_dot_product_attention``, flash backend) of one layout.

    ``gqa`` says how grouped-query attention ran: ``native`` (``enable_gqa=True``, the
    kernel reads the shared K/V heads), ``repeat_kv`` (K/V repeated to all heads before
    the call, where the kernel refused ``enable_gqa``), ``none`` (heads == kv_heads).
    ``backward`` is the time of the backward alone (the autograd graph kept and replayed).
    """

    batch: PositiveInt
    seq_len: PositiveInt
    heads: PositiveInt
    kv_heads: PositiveInt
    head_dim: PositiveInt
    causal: bool
    dtype: Dtype
    gqa: Literal["native", "repeat_kv", "none"]
    backend: str
    forward: Timing
    backward: Timing

    @model_validator(mode="after")
    def _groups(self) -> AttentionRow:
        if self.heads % self.kv_heads:
            raise ValueError(
                f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})"
            )
        return self

    @property
    def forward_flops(self) -> float:
        keys = self.seq_len / 2 if self.causal else self.seq_len
        return 2.0 * self.batch * self.seq_len * self.heads * 2 * self.head_dim * keys

    @property
    def backward_flops(self) -> float:
        return FLASH_BACKWARD_FLOP_RATIO * self.forward_flops


class MemoryRow(_Row):
    """An element-wise kernel: ``copy`` (read n, write n) or ``add`` (read 2n, write n)."""

    op: MemoryOp
    dtype: Dtype
    elements: PositiveInt
    bytes: PositiveInt = Field(description="bytes read plus bytes written")
    time: Timing

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.time.median_s


class CollectiveRow(_Row):
    """One collective over ``group_size`` ranks; time is the slowest rank's, per repeat."""

    op: CollectiveOp
    group_size: int = Field(ge=2)
    bytes: PositiveInt
    dtype: Dtype
    backend: str
    scope: Scope
    time: Timing


class OptimizerRow(_Row):
    """One ``torch.optim.AdamW`` step over ``tensors`` parameters of equal size.

    ``implementation``: ``per_tensor`` (``foreach=False``, a loop of element-wise kernels
    per tensor), ``foreach`` (torch's default: multi-tensor ``_foreach_*`` kernels over
    lists) or ``fused`` (``fused=True``: one multi-tensor kernel). Parameters, gradients
    and both moments are all ``dtype``. ``time`` is the step's device time (events around
    ``step()``), ``host`` the time the host spends issuing it (the call's wall time, no
    synchronisation), so a step is launch-bound where ``host`` exceeds ``time``.
    """

    implementation: OptimizerImpl
    dtype: Dtype
    tensors: PositiveInt
    elements: PositiveInt = Field(description="parameters in all (tensors x elements each)")
    time: Timing
    host: Timing


class HostRow(_Row):
    """Work of the GPU's host: ``d2h`` / ``h2d`` copy ``bytes`` between GPU memory and
    pinned host memory (``elements`` fp32 values; CUDA events around a non-blocking copy),
    ``cpu_adamw`` is one ``torch.optim.AdamW(fused=True)`` step on the CPU over
    ``elements`` fp32 parameters with fp32 gradients (wall clock), with ``threads`` intra-op
    threads. Optimizer offload (DeepSpeed ZeRO-Offload, Megatron-LM's
    ``--optimizer-cpu-offload``) moves gradients down, steps on the CPU and moves weights
    back up: these three rows price it."""

    op: HostOp
    elements: PositiveInt
    bytes: PositiveInt
    threads: PositiveInt
    time: Timing


class Skipped(_Row):
    """Something the run did not measure, and why."""

    section: str
    what: str
    reason: str


class Provenance(_Row):
    """Where, when and with what the profile was measured."""

    device: Literal["cuda", "cpu"]
    gpu_id: str | None = Field(description="hardware_db GPU id (None: not recognised)")
    gpu_name: str | None
    gpu_count: int = Field(ge=0, description="GPUs visible to the process")
    world_size: PositiveInt
    nodes: PositiveInt
    gpu_total_memory_bytes: int | None
    compute_capability: str | None
    driver: str | None
    cuda: str | None
    torch: str
    nccl: str | None
    python: str
    hostname: str
    date_utc: str
    command: tuple[str, ...]
    autopar_version: str
    git_commit: str | None


class Settings(_Row):
    """How the run measured: every point warms up, then repeats until ``target_point_s``."""

    quick: bool
    sections: tuple[str, ...]
    warmup: PositiveInt
    min_repeats: PositiveInt
    max_repeats: PositiveInt
    target_point_s: PositiveFloat
    time_limit_s: PositiveFloat
    timer: Literal["cuda_events", "perf_counter"]


class KernelProfile(_Row):
    """One run of ``autopar profile``: provenance, settings and every measured row."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["kernel_profile"] = "kernel_profile"
    provenance: Provenance
    settings: Settings
    gemm: tuple[GemmRow, ...] = ()
    attention: tuple[AttentionRow, ...] = ()
    memory: tuple[MemoryRow, ...] = ()
    collectives: tuple[CollectiveRow, ...] = ()
    optimizer: tuple[OptimizerRow, ...] = ()
    host: tuple[HostRow, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    elapsed_s: float = Field(ge=0)
