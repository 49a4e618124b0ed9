"""What one sequence costs on a sequence-parallel group, from autopar's own cost model.

The layout every group runs is DeepSpeed's: ZeRO-3 over all N GPUs (weights, gradients
and optimizer states sharded over the whole cluster whatever the groups) with the
sequence split over the group, DeepSpeed-Ulysses or ring attention (the layout FlexSP
runs, Wang et al., ASPLOS 2025, section 5). No tensor or pipeline parallelism.

Memory
    ``planner.predict.prepare`` + ``memory_stages`` (``planner.cost.memory``) on that
    layout at two sequence lengths (``FIT_LENGTHS``) give the per-GPU peak as
    ``a + b L``: ``a`` what does not grow with the tokens (sharded states, gathered
    weights, the reserve), ``b`` the bytes one token adds (saved activations, logits).
    A group of p GPUs running sequences of L_1..L_k tokens packed holds
    ``b sum(L_i) / p`` on each GPU; the room for them is the usable capacity less ``a``.

Time
    One GPU's forward + backward of one sequence of L tokens through the whole model is
    ``alpha1 L^2 + alpha2 L`` (attention's score work grows with L^2, every GEMM with L).
    Without a measurement both alphas are fitted (least squares, no intercept) to
    ``planner.cost.stage_work.stage_times`` at ``FIT_LENGTHS``, i.e. to autopar's rates
    (``planner.cost.rates``). With a varlen-attention profile of this GPU and head shape
    (``planner.scattering.profile``), the attention part is replaced by the measured
    per-layer fit: alpha1 = layers x measured alpha1; alpha2 = the analytical GEMM part +
    layers x measured alpha2. A group of p GPUs runs it in ``(alpha1 L^2 + alpha2 L) / p``
    plus the exchange:
    - Ulysses: per layer, four all-to-alls forward (q, k, v in, the output back) and four
      backward, each a send buffer of L/p tokens times the tensor's width
      (``planner.cost.comm.collective_time`` on the group's placement); needs p to divide
      the query and key/value heads (DeepSpeed-Ulysses splits heads).
    - ring (p2p): per layer p - 1 steps forward, each sending the key/value block of L/p
      tokens to the next GPU while attending to the current one, and p - 1 backward steps
      sending keys, values and their gradients; only what exceeds the block's attention
      time is exposed (``planner.cost.comm.p2p_time``).
    A group of p GPUs sits inside one node when p <= GPUs per node (groups are sized in
    powers of two and placed aligned, so none straddles a node), else it spans
    p / GPUs-per-node nodes and pays the NICs.

Not counted, because every method compared pays it alike: the optimizer step and the
ZeRO-3 gathers and reductions of weights and gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from planner.cost.comm import collective_time, p2p_time
from planner.cost.memory import virtual_stages
from planner.cost.placement import GroupPlacement, place_group
from planner.cost.reserve import usable_capacity_bytes
from planner.cost.stage_work import stage_times
from planner.errors import SpecError
from planner.predict import memory_stages, prepare, time_rates
from planner.scattering.profile import AttentionFit, attention_fit
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import ParallelConfig
from planner.specs.model import ModelSpec
from planner.specs.workload import BYTES_PER_DTYPE, WorkloadSpec

CpAlgo = Literal["ulysses", "ring", "auto"]

FIT_LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768)
"""Sequence lengths the analytical time is fitted on; the first two also fit memory."""

FRAMEWORK = "deepspeed"
KIB = 1024


@dataclass(frozen=True)
class SequenceCost:
    """Everything the scattering problem reads about one model on one cluster."""

    model: ModelSpec
    cluster: ClusterSpec
    precision: str
    cp_algo: CpAlgo
    alpha1_s: float
    """Seconds per token^2 of one GPU's forward + backward through the whole model."""
    alpha2_s: float
    """Seconds per token."""
    fixed_bytes: float
    """Per-GPU memory that does not grow with the tokens."""
    bytes_per_token: float
    capacity_bytes: float
    time_source: str
    memory_source: str

    @property
    def sizes(self) -> tuple[int, ...]:
        """Powers of two up to the GPU count."""
        n = self.cluster.num_gpus
        return tuple(2**k for k in range(int(math.log2(n)) + 1))

    @property
    def room_bytes(self) -> float:
        return self.capacity_bytes - self.fixed_bytes

    @property
    def tokens_per_gpu(self) -> int:
        return max(0, int(self.room_bytes // self.bytes_per_token))

    def placement(self, size: int) -> GroupPlacement:
        return place_group("sp", size=size, stride=1, gpus_in_node=self.cluster.gpus_in_node)

    def inside_node(self, size: int) -> bool:
        return self.placement(size).intra_node

    def memory_bytes(self, length: int, size: int) -> float:
        """What one sequence adds to each GPU of a group of ``size``."""
        return self.bytes_per_token * length / size

    def algos(self, size: int) -> tuple[str, ...]:
        """The exchanges a group of ``size`` may use under ``cp_algo``."""
        heads_split = self.model.num_attention_heads % size == 0 and self.model.kv_heads % size == 0
        if self.cp_algo == "ulysses":
            return ("ulysses",) if heads_split else ()
        if self.cp_algo == "ring":
            return ("ring",)
        return ("ulysses", "ring") if heads_split else ("ring",)

    def time_s(self, length: int, size: int) -> tuple[float, str]:
        """Seconds for one sequence on a group of ``size``, and the exchange it uses.

        Infinite when ``cp_algo`` allows no exchange at this size."""
        compute = (self.alpha1_s * length * length + self.alpha2_s * length) / size
        if size == 1:
            return compute, "none"
        best = (math.inf, "none")
        for algo in self.algos(size):
            comm = (
                self._ulysses_s(length, size) if algo == "ulysses" else self._ring_s(length, size)
            )
            best = min(best, (compute + comm, algo))
        return best

    def _width_bytes(self) -> tuple[float, float]:
        """Bytes per token of the query (and output) and of keys plus values, one layer."""
        dtype = BYTES_PER_DTYPE[self.precision]
        d = self.model.kv_channels
        return self.model.num_attention_heads * d * dtype, 2 * self.model.kv_heads * d * dtype

    def _ulysses_s(self, length: int, size: int) -> float:
        q_bytes, kv_bytes = self._width_bytes()
        tokens = length / size
        group = self.placement(size)
        per_layer = sum(
            collective_time("all_to_all", tokens * width, group, self.cluster)
            for width in (q_bytes, kv_bytes / 2, kv_bytes / 2, q_bytes)
        )
        return 2 * self.model.num_layers * per_layer

    def _ring_s(self, length: int, size: int) -> float:
        _, kv_bytes = self._width_bytes()
        block = kv_bytes * length / size
        same_node = self.inside_node(size)
        step_comm = p2p_time(block, same_node, self.cluster)
        attention_per_layer = self.alpha1_s * length * length / (size * self.model.num_layers)
        step_attention = attention_per_layer / size
        forward = (size - 1) * max(0.0, step_comm - step_attention)
        backward = (size - 1) * max(
            0.0, p2p_time(2 * block, same_node, self.cluster) - 2 * step_attention
        )
        return self.model.num_layers * (forward + backward)


def _layout(num_gpus: int) -> ParallelConfig:
    return ParallelConfig(dp=num_gpus, zero_stage=3)


def _fit_memory(model: ModelSpec, cluster: ClusterSpec, precision: str) -> tuple[float, float]:
    """(a, b) of the per-GPU peak ``a + b L`` at one sequence per GPU (module docstring)."""
    peaks = []
    for length in FIT_LENGTHS[:2]:
        workload = WorkloadSpec(seq_len=length, global_batch=cluster.num_gpus, precision=precision)
        prepared = prepare(
            model=model, cluster=cluster, workload=workload, layout=_layout(cluster.num_gpus),
            framework=FRAMEWORK,
        )  # fmt: skip
        peaks.append(max(stage.total for stage in memory_stages(prepared)))
    (l1, l2), (m1, m2) = FIT_LENGTHS[:2], peaks
    per_token = (m2 - m1) / (l2 - l1)
    return m1 - per_token * l1, per_token


def _fit_time(model: ModelSpec, cluster: ClusterSpec, precision: str) -> tuple[float, float, str]:
    """Analytical (alpha1, alpha2) fitted to ``stage_times`` at ``FIT_LENGTHS``."""
    workload = WorkloadSpec(
        seq_len=FIT_LENGTHS[0], global_batch=cluster.num_gpus, precision=precision
    )
    rates = time_rates(cluster=cluster, workload=workload, framework=FRAMEWORK)
    prepared = prepare(
        model=model, cluster=cluster, workload=workload, layout=_layout(cluster.num_gpus),
        framework=FRAMEWORK,
    )  # fmt: skip
    (layers,) = virtual_stages(model, prepared.layout)
    seconds = []
    for length in FIT_LENGTHS:
        times = stage_times(
            model, layers, first=True, last=True, layout=prepared.layout, seq_len=length,
            impl=prepared.impl, rates=rates,
        )  # fmt: skip
        seconds.append(times.forward_s + times.backward_s)
    lengths = np.array(FIT_LENGTHS, dtype=float)
    design = np.stack([lengths**2, lengths], axis=1)
    (alpha1, alpha2), *_ = np.linalg.lstsq(design, np.array(seconds), rcond=None)
    return max(0.0, float(alpha1)), max(0.0, float(alpha2)), rates.source


@lru_cache(maxsize=32)
def sequence_cost(
    *, model: ModelSpec, cluster: ClusterSpec, precision: str = "bf16", cp_algo: CpAlgo = "auto"
) -> SequenceCost:
    """The per-sequence memory and time of ``model`` on ``cluster`` (module docstring);
    cached, as the specs are frozen."""
    if cp_algo not in ("ulysses", "ring", "auto"):
        raise SpecError(f"cp_algo: unknown '{cp_algo}'; known: ulysses, ring, auto")
    if cluster.num_gpus & (cluster.num_gpus - 1):
        raise SpecError(
            f"gpus: sequence-parallel groups are powers of two, so the GPU count must be one "
            f"too (got {cluster.num_gpus})"
        )
    fixed, per_token = _fit_memory(model, cluster, precision)
    capacity, capacity_source = usable_capacity_bytes(cluster.gpu)
    alpha1, alpha2, rates_source = _fit_time(model, cluster, precision)
    time_source = f"analytical: alpha1, alpha2 fitted to autopar's rates ({rates_source})"
    fit: AttentionFit | None = attention_fit(cluster.gpu.id, model)
    if fit is not None:
        alpha1 = model.num_layers * fit.alpha1_s
        alpha2 = alpha2 + model.num_layers * fit.alpha2_s
        time_source = (
            f"measured varlen attention ({fit.source}) + analytical GEMMs ({rates_source})"
        )
    cost = SequenceCost(
        model=model, cluster=cluster, precision=precision, cp_algo=cp_algo,
        alpha1_s=alpha1, alpha2_s=alpha2, fixed_bytes=fixed, bytes_per_token=per_token,
        capacity_bytes=capacity, time_source=time_source,
        memory_source=(
            f"autopar memory model (DeepSpeed ZeRO-3 over {cluster.num_gpus} GPUs), peak "
            f"fitted at {FIT_LENGTHS[0]} and {FIT_LENGTHS[1]} tokens; capacity: "
            f"{capacity_source}"
        ),
    )  # fmt: skip
    if cost.room_bytes <= 0:
        raise SpecError(
            f"model: {model.name} does not fit on {cluster.num_gpus} x {cluster.gpu.id} even "
            f"without tokens ({fixed / 2**30:.1f} GiB of states per GPU, "
            f"{capacity / 2**30:.1f} GiB capacity)"
        )
    return cost
