"""The work of one micro-batch through one pipeline stage, and of the optimizer step.

Joins the per-op work of ``planner.cost.compute`` into what a stage runs: the layers of a
virtual stage (plus the embedding on the first, the head on the last), their backward,
and the forward again for recomputed layers (full recomputation re-runs the whole layer
forward inside the backward; selective recomputation re-runs the attention core).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import NamedTuple, Protocol

from planner.cost.compute import (
    LayerShape,
    LayerWork,
    OptimizerShape,
    Rates,
    Work,
    embedding_work,
    head_work,
    kind_work,
    layer_kinds,
    layer_work,
    routed_expert_work,
    total_time,
    with_backward,
)
from planner.cost.frameworks import StateLayout, state_layout
from planner.cost.keys import Same
from planner.cost.memory import FP32_BYTES
from planner.graph.build import Implementation
from planner.specs.layout import ParallelConfig, Recompute, RecomputeMethod
from planner.specs.model import ModelSpec

OPTIMIZER_KERNELS_PER_TENSOR = {"fused": 0.05, "foreach": 0.5, "per_tensor": 10.0, "chunked": 2.05}
"""Launches per parameter tensor: PyTorch's single-tensor AdamW runs about ten element-wise
kernels per tensor (``torch/optim/adamw.py`` ``_single_tensor_adamw``: decay, lerp, mul,
addcmul, sqrt, div, add, addcdiv, ...); the foreach path batches tensors into lists and a
fused multi-tensor kernel (Apex, Transformer Engine) covers thousands of tensors per launch;
the chunked master-weight step adds, per tensor, the gradient's up-cast and the copy of the
master back into the model's parameter to the fused kernel's share."""
PROFILED_IMPLEMENTATION = {"chunked": "fused"}
"""The profiled step an implementation's device and host time are scaled from."""


@dataclass(frozen=True)
class StageWork:
    forward: tuple[Work, ...]
    backward: tuple[Work, ...]
    """Backward, including the recomputed forward of recomputed layers."""


def stage_work(
    model: ModelSpec,
    layer_ids: list[int],
    *,
    first: bool,
    last: bool,
    layout: ParallelConfig,
    seq_len: int,
    impl: Implementation,
) -> StageWork:
    """Work of one micro-batch through one virtual stage on one GPU."""
    tokens = layout.mbs * seq_len / layout.cp
    shape = LayerShape(
        tokens=tokens,
        seq_len=seq_len,
        tp=layout.tp,
        etp=layout.expert_tp,
        ep=layout.ep,
        cp=layout.cp,
        cp_comm_type=layout.cp_comm_type,
        cp_a2a=layout.cp_a2a_size,
    )
    forward: list[Work] = []
    backward: list[Work] = []
    if first:
        _add(embedding_work(model, tokens=tokens, impl=impl, tp=layout.tp), forward, backward)
    recomputed = recomputed_positions(layout, len(layer_ids))
    for position, layer_id in enumerate(layer_ids):
        work = layer_work(model, layer_id, shape=shape, impl=impl)
        _add(work, forward, backward)
        if position in recomputed:
            backward.extend(work.forward)
        elif layout.recompute == "selective":
            backward.extend(selective_recompute(work))
    if last:
        _add(head_work(model, tokens=tokens, tp=layout.tp, impl=impl), forward, backward)
    return StageWork(forward=tuple(forward), backward=tuple(backward))


def layer_shape(layout: ParallelConfig, seq_len: int) -> LayerShape:
    return LayerShape(
        tokens=layout.mbs * seq_len / layout.cp,
        seq_len=seq_len,
        tp=layout.tp,
        etp=layout.expert_tp,
        ep=layout.ep,
        cp=layout.cp,
        cp_comm_type=layout.cp_comm_type,
        cp_a2a=layout.cp_a2a_size,
    )


@dataclass(frozen=True)
class StageTimes:
    """Times of one micro-batch through a virtual stage (seconds) and its executed FLOPs."""

    forward_s: float
    backward_s: float
    """Backward including the recomputed forward."""
    forward_gemm_s: float
    forward_attention_s: float
    flops: float
    launch_s: float = 0.0
    """The host's time to launch the forward and backward (with recomputation) kernels."""


class StageTimesInput(NamedTuple):
    """Everything ``stage_times`` computes from: the kinds of one virtual stage's layers
    and its edges, the shape of its micro-batch, its recomputation, the implementation and
    the rates."""

    model: Same[ModelSpec]
    rates: Same[Rates]
    impl: Implementation
    kinds: tuple[int, ...]
    """Each layer's kind (``compute.representative_layer``), in stage order: a layer's
    work depends on its kind and its position in the stage (recomputation) only, so
    stages of equal kinds share an entry whichever layers they hold."""
    first: bool
    last: bool
    shape: LayerShape
    recompute: Recompute
    recompute_method: RecomputeMethod | None
    recompute_num_layers: int | None


def stage_times(
    model: ModelSpec,
    layer_ids: list[int],
    *,
    first: bool,
    last: bool,
    layout: ParallelConfig,
    seq_len: int,
    impl: Implementation,
    rates: Rates,
) -> StageTimes:
    """Equal to timing ``stage_work``'s ops, but each layer kind is timed once (cached).

    The planner costs thousands of layouts whose stages repeat the same few layer kinds;
    the per-kind times are shared across stages and layouts, and a whole stage's times
    are cached on a frozen input holding exactly what they are computed from
    (``StageTimesInput``: the model and rates objects themselves, compared by identity,
    the kinds of the stage's layers, the layout fields used).
    """
    kinds = layer_kinds(model)
    return _stage_times(
        StageTimesInput(
            model=Same(model),
            rates=Same(rates),
            impl=impl,
            kinds=tuple(map(kinds.__getitem__, layer_ids)),
            first=first,
            last=last,
            shape=layer_shape(layout, seq_len),
            recompute=layout.recompute,
            recompute_method=layout.recompute_method,
            recompute_num_layers=layout.recompute_num_layers,
        )
    )


@lru_cache(maxsize=20_000)
def _stage_times(stage: StageTimesInput) -> StageTimes:
    impl, shape = stage.impl, stage.shape
    recomputed = recomputed_positions(stage, len(stage.kinds))
    selective = stage.recompute == "selective"
    per_kind: dict[tuple[int, str], tuple[float, ...]] = {}  # spares hashing the model
    # six running sums in locals, added layer by layer in stage order: the same float
    # additions in the same order as summing into a list, without its indexing
    t0 = t1 = t2 = t3 = t4 = t5 = 0.0
    other = "selective" if selective else "none"
    for position, kind in enumerate(stage.kinds):
        mode = "full" if position in recomputed else other
        times = per_kind.get((kind, mode))
        if times is None:
            times = per_kind[kind, mode] = _kind_times(
                stage.model, kind, shape, impl, stage.rates, mode
            )
        f0, f1, f2, f3, f4, f5 = times
        t0 += f0
        t1 += f1
        t2 += f2
        t3 += f3
        t4 += f4
        t5 += f5
    totals = [t0, t1, t2, t3, t4, t5]
    edges = [
        name for name, present in (("embedding", stage.first), ("head", stage.last)) if present
    ]
    for name in edges:
        times = _edge_times(
            EdgeTimesInput(stage.model, stage.rates, impl, name, shape.tokens, shape.tp)
        )
        for i, value in zip(EDGE_FIELDS, times, strict=True):
            totals[i] += value
    return StageTimes(*totals)


EDGE_FIELDS = (0, 1, 2, 4, 5)
"""The ``StageTimes`` fields an edge adds to: forward, backward, forward GEMM, FLOPs,
launches."""


class EdgeTimesInput(NamedTuple):
    """What ``_edge_times`` reads: the model and rates (by identity), the implementation,
    which edge (the embedding or the head: output layer and loss), the micro-batch's
    tokens on one GPU and the TP degree."""

    model: Same[ModelSpec]
    rates: Same[Rates]
    impl: Implementation
    edge: str
    tokens: float
    tp: int


@lru_cache(maxsize=4096)
def _edge_times(key: EdgeTimesInput) -> tuple[float, float, float, float, float]:
    """What an edge adds to the ``StageTimes`` fields ``EDGE_FIELDS`` (no attention): the
    same terms for every stage with the same edge and shape, so computed once
    (``_stage_times`` adds them one by one, as before)."""
    model, rates, impl = key.model.value, key.rates.value, key.impl
    if key.edge == "embedding":
        edge = embedding_work(model, tokens=key.tokens, impl=impl, tp=key.tp)
    else:
        edge = head_work(model, tokens=key.tokens, tp=key.tp, impl=impl)
    return (
        total_time(list(edge.forward), rates),
        total_time(list(edge.backward), rates),
        total_time([w for w in edge.forward if w.kind == "gemm"], rates),
        sum(w.flops for w in edge.forward) + sum(w.flops for w in edge.backward),
        _launches(edge.forward, rates) + _launches(edge.backward, rates),
    )


class ExpertTimesInput(NamedTuple):
    """What ``expert_times`` reads: the model and rates (by identity), the implementation
    and the layer shape (tokens, EP and expert TP degrees)."""

    model: Same[ModelSpec]
    rates: Same[Rates]
    impl: Implementation
    shape: LayerShape


def expert_times(
    model: ModelSpec, *, layout: ParallelConfig, seq_len: int, impl: Implementation, rates: Rates
) -> tuple[float, float]:
    """(forward, backward) device seconds of one MoE layer's routed-expert work on the
    mean EP rank for one micro-batch (``compute.routed_expert_work``): the part a routing
    imbalance scales on the busiest rank."""
    return _expert_times(
        ExpertTimesInput(
            model=Same(model), rates=Same(rates), impl=impl, shape=layer_shape(layout, seq_len)
        )
    )


@lru_cache(maxsize=4096)
def _expert_times(key: ExpertTimesInput) -> tuple[float, float]:
    model, rates = key.model.value, key.rates.value
    work = with_backward(routed_expert_work(model, shape=key.shape, impl=key.impl))

    def device(works: tuple[Work, ...]) -> float:  # the launches do not scale with tokens
        return sum(rates.device_time(w) for w in works if w.bytes > 0 or w.flops > 0)

    return device(work.forward), device(work.backward)


def _launches(works: tuple[Work, ...] | list[Work], rates: Rates) -> float:
    return sum(rates.launch_time(w) for w in works)


@lru_cache(maxsize=8192)
def _kind_times(
    same_model: Same[ModelSpec],
    index: int,
    shape: LayerShape,
    impl: Implementation,
    same_rates: Same[Rates],
    recompute: str,
) -> tuple[float, float, float, float, float, float]:
    """(forward, backward + recompute, forward GEMM, forward attention, FLOPs, launches)
    of one layer. The model and rates enter the cache key by identity (``Same``, as in
    ``StageTimesInput``): hashing the whole spec and the rates' tables on every lookup
    cost more than the lookup saved."""
    model, rates = same_model.value, same_rates.value
    work = kind_work(model, index, shape, impl)
    forward = total_time(list(work.forward), rates)
    backward = total_time(list(work.backward), rates)
    flops = sum(w.flops for w in work.forward) + sum(w.flops for w in work.backward)
    launches = _launches(work.forward, rates) + _launches(work.backward, rates)
    attention = [w for w in work.forward if w.kind == "attention"]
    if recompute == "full":
        backward += forward
        flops += sum(w.flops for w in work.forward)
        launches += _launches(work.forward, rates)
    elif recompute == "selective":
        core = list(selective_recompute(work))
        backward += total_time(core, rates)
        flops += sum(w.flops for w in core)
        launches += _launches(core, rates)
    gemm = total_time([w for w in work.forward if w.kind == "gemm"], rates)
    return forward, backward, gemm, total_time(attention, rates), flops, launches


def selective_recompute(work: LayerWork) -> tuple[Work, ...]:
    """The forward work selective recomputation runs again in a layer's backward: its
    attention core, fused or not (``Work.attention_core``)."""
    return tuple(w for w in work.forward if w.attention_core)


def _add(work: LayerWork, forward: list[Work], backward: list[Work]) -> None:
    forward.extend(work.forward)
    backward.extend(work.backward)


class RecomputeSettings(Protocol):
    """The layout fields that say which layers are recomputed."""

    @property
    def recompute(self) -> Recompute: ...
    @property
    def recompute_method(self) -> RecomputeMethod | None: ...
    @property
    def recompute_num_layers(self) -> int | None: ...


def recomputed_positions(layout: RecomputeSettings, layers: int) -> set[int]:
    """Positions within a stage whose forward runs again in the backward (full recompute)."""
    if layout.recompute != "full":
        return set()
    if layout.recompute_method == "block":
        return set(range(min(layout.recompute_num_layers or 1, layers)))
    return set(range(layers))


OPTIMIZER_PROFILE_LAYOUTS = {"bf16": "bf16", "fp32": "autocast"}
"""The state layout each dtype of the profile's optimizer section ran (every tensor in it)."""


def optimizer_bytes_per_param(states: StateLayout, optimizer_kind: str) -> float:
    """HBM bytes an AdamW step moves per local parameter.

    The fused step reads gradient, master weight and both moments and writes master
    weight, moments and the low-precision weight copy; the unfused PyTorch step reads and
    writes the same tensors in about eight passes (the decay, the two moment updates, the
    square root, the division, the epsilon add and the update).
    """
    state = states.moment_bytes / 2
    master = states.master_bytes or states.weight_bytes
    if optimizer_kind == "chunked":
        # the fused step on an fp32 gradient copy, the up-cast that makes it (read the
        # gradient, write fp32) and the copy of the master back into the weight
        fused = 2 * (master + 2 * state) + FP32_BYTES
        return fused + (states.grad_bytes + FP32_BYTES) + (master + states.weight_bytes)
    if optimizer_kind == "fused":
        return (
            2 * (master + 2 * state)
            + states.grad_bytes
            + (states.weight_bytes if states.master_bytes else 0)
        )
    # decay (rw p), lerp (r m g, w m), mul + addcmul (r v v g g, w v v), sqrt (r v, w t),
    # div (r t, w t), add eps (r t, w t), addcdiv (r p m t, w p)
    per_param = 2 * master + 3 * state + 5 * state + 4 * state + 3 * state + 3 * state
    return per_param + 2 * states.grad_bytes + 2 * master


def optimizer_step_work(
    *, local_params: float, param_tensors: int, states: StateLayout, optimizer_kind: str
) -> Work:
    """AdamW over the local parameters: its memory traffic, kernel launches and shape.

    With a profile's optimizer section (``compute.OptimizerShape``), the step takes the
    device and host time measured for its implementation and dtype, the device time
    scaled by its bytes per parameter over those of the profiled step; without one, its
    bytes (``optimizer_bytes_per_param``) stream at the element-wise bandwidth and its
    launches (``OPTIMIZER_KERNELS_PER_TENSOR``) cost the host's time per launch.
    """
    per_param = optimizer_bytes_per_param(states, optimizer_kind)
    dtype = "fp32" if max(states.master_bytes, states.moment_bytes / 2) >= 4 else "bf16"
    profiled = state_layout(OPTIMIZER_PROFILE_LAYOUTS[dtype])
    measured_as = PROFILED_IMPLEMENTATION.get(optimizer_kind, optimizer_kind)
    shape = OptimizerShape(
        implementation=measured_as,
        dtype=dtype,
        tensors=param_tensors,
        params=local_params,
        traffic_ratio=per_param / optimizer_bytes_per_param(profiled, measured_as),
    )
    kernels = max(1, round(param_tensors * OPTIMIZER_KERNELS_PER_TENSOR[optimizer_kind]))
    return Work(
        "memory", bytes=local_params * per_param, kernels=kernels, shape=shape, host="plain"
    )


def scaled(works: tuple[Work, ...] | list[Work], factor: float) -> list[Work]:
    """The same work repeated ``factor`` times (roofline time scales exactly)."""
    return [
        replace(w, flops=w.flops * factor, bytes=w.bytes * factor,
                kernels=round(w.kernels * factor))
        for w in works
    ]  # fmt: skip
