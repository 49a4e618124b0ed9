"""Layer splits and recompute blocks for pipelines, from the stage-partition solver.

The candidate enumeration gives every pipeline depth one layer split (even, or the
balanced uneven one) and one recomputation for all layers. For the leading pipelined
layouts (the ``leaders`` best that fit; the closest to fitting when none does), this
module asks ``solvers.stage_partition`` where the stage boundaries should fall and how many
layers of each stage to recompute, then costs the answer with the full cost model like
any other candidate (``planner.search.tabulate``). The solver's answer is restricted to
what Megatron-LM runs: uneven first and last stages with equal middle stages
(``--decoder-first/last-pipeline-num-layers``; constraint (6) of the solver) and "block"
recomputation of the first N layers of every stage (``--recompute-method block
--recompute-num-layers N``; constraint (7)).

The partition problem's data come from the cost model of the leading layout:

  time per layer      forward + backward compute of one micro-batch through one layer of
                      each kind, without and with full recomputation
                      (``stage_work.stage_times`` of a one-layer stage), in microseconds;
                      the embedding on the first stage and the output layer on the last
  memory per layer    model states and saved activations of one layer
                      (``memory.layer_footprint``), without and with recomputation
  in flight           micro-batches each 1F1B stage holds at its peak
                      (``schedule.peak_in_flight``)
  capacity            per stage, what the caching allocator may hold (usable capacity less
                      the headroom, the non-allocator reserve and the fragmentation share)
                      less what the leading layout's stage holds beyond its layers'
                      states and activations (embedding, output layer, transients), so
                      that the linear memory of the partition model equals the cost
                      model's at the leading layout's own split

so the partition model minimises the slowest stage's compute per micro-batch under a
linear memory model; the layouts it proposes are then costed exactly, and the planner's
choice among all candidates stays exact under the cost model. Only dense and MoE models
with one kind of layer get the recompute blocks (constraint (7) needs one kind); for
the others the split alone is chosen, with the leading layout's recomputation. Only
Megatron-LM runs these layouts (DeepSpeed's pipeline has no uneven stages; torchtitan
recomputes whole blocks).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from itertools import groupby

from planner.cost.compute import representative_layer
from planner.cost.expert_load import ExpertLoadSource
from planner.cost.frameworks import DEFAULT_RUNTIME, Framework, LayerSpec, Runtime
from planner.cost.memory import layer_footprint, virtual_stages
from planner.cost.reserve import usable_capacity_bytes
from planner.cost.schedule import peak_in_flight
from planner.cost.stage_work import stage_times
from planner.predict import apply_framework_defaults, time_rates
from planner.search.formulation import axis_values, layout_axis_values
from planner.search.length_pricing import FIXED_LENGTH, Timer
from planner.search.tabulate import Row, complete_partial, tabulate
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import ParallelConfig, layout_violations, resolve_data_parallel
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec
from solvers import (
    LayerKind,
    LayerRun,
    SolveOptions,
    SolveStatus,
    StagePartitionProblem,
    solve_stage_partition,
)

MIB = 2**20
MICROSECONDS = 1_000_000
SOLVE_OPTIONS = SolveOptions(time_limit_s=2.0, workers=1)
PINNED = ("first_stage_layers", "last_stage_layers")
"""Knobs that, when the user fixes them, leave no split to choose."""
ACCOUNT_FOR = ("account_for_embedding_in_pipeline_split", "account_for_loss_in_pipeline_split")
"""Megatron-LM's account-for flags: pinned on, they are the split (no stage sizes with them)."""


def split_variants(
    rows: list[Row],
    admitted: list[Row],
    *,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    framework: Framework,
    headroom_gib: float,
    fixed: dict[str, object],
    maxima: dict[str, int],
    leaders: int,
    expert_load: ExpertLoadSource | None = None,
    timer: Timer = FIXED_LENGTH,
    admits: Callable[[Row], bool] = lambda row: True,
    runtime: Runtime = DEFAULT_RUNTIME,
    layer_spec: LayerSpec = "transformer_engine",
) -> list[Row]:
    """The solver's split (and recompute blocks) for each leading pipelined layout family,
    costed; variants equal to a tabulated layout are left out. The leading layouts are
    the ``admitted`` ones (timed, fitting, what the objective ``admits``) fastest first,
    with the rows tabulation deferred (``Row.deferred``) timed when the walk reaches
    them; without any, those closest to fitting."""
    if (
        framework != "megatron"
        or any(knob in fixed for knob in PINNED)
        or any(fixed.get(flag) for flag in ACCOUNT_FOR)
    ):
        return []
    deferred = [row for row in rows if row.deferred]
    if admitted:  # the walk below skips the others: never time them for it
        deferred = [row for row in deferred if _splittable(row.layout)]
    if not admitted and deferred:
        for row in deferred:
            row.time_deferred()
        admitted = [row for row in deferred if admits(row)]
        deferred = []
    if not admitted:  # closest to fitting first: the excess exact where it was
        complete_partial(rows, headroom_gib)
    pool: Iterable[Row] = (
        by_step(rows, admitted, deferred, admits)
        if admitted
        else sorted(rows, key=lambda row: row.excess_gib)
    )
    seen = {axis_values(row) for row in rows}
    families: set[tuple] = set()
    layouts: list[ParallelConfig] = []
    for row in pool:
        layout = row.layout
        if not _splittable(layout):
            continue
        family = (layout.tp, layout.cp, layout.pp, layout.dp, layout.ep, layout.mbs,
                  layout.cp_comm_type, layout.hierarchical_cp_sizes)  # fmt: skip
        if family in families:
            continue
        families.add(family)
        variant = _solve(row, model=model, workload=workload, headroom_gib=headroom_gib,
                         fixed=fixed, maxima=maxima)  # fmt: skip
        if variant is not None and not layout_violations(
            model=model, cluster=cluster, workload=workload, layout=variant
        ):
            layouts.append(variant)
        if len(families) == leaders:
            break
    # a variant equal to a layout already tabulated (the solver kept the enumerated split,
    # or another pass asked for the same family) would be costed only to be left out
    layouts = [layout for layout in layouts if _key(layout, cluster, framework) not in seen]
    table = tabulate(
        layouts, model=model, cluster=cluster, workload=workload, framework=framework,
        headroom_gib=headroom_gib, expert_load=expert_load, timer=timer, runtime=runtime,
        layer_spec=layer_spec,
    )  # fmt: skip
    fresh = []
    for row in table.rows:
        key = axis_values(row)
        if key not in seen:
            seen.add(key)
            fresh.append(row)
    return fresh


def _key(layout: ParallelConfig, cluster: ClusterSpec, framework: Framework) -> tuple[int, ...]:
    """``axis_values`` of the row ``tabulate`` would make of ``layout`` (resolved as
    ``predict.prepare`` resolves it)."""
    resolved = resolve_data_parallel(
        apply_framework_defaults(layout, framework=framework), num_gpus=cluster.num_gpus
    )
    return layout_axis_values(resolved, gpus=cluster.num_gpus)


def _splittable(layout: ParallelConfig) -> bool:
    """Whether the split solver refines this layout's family (1F1B pipelines without
    selective recomputation)."""
    return layout.pp >= 2 and layout.vpp is None and layout.recompute != "selective"


def by_step(
    rows: list[Row], admitted: list[Row], deferred: list[Row], admits: Callable[[Row], bool]
) -> Iterator[Row]:
    """``admitted`` and the admitted ``deferred`` rows fastest first, ties in table order:
    ``sorted(admitted + deferred, key=step)`` had every deferred row been timed, timing
    each deferred row only when every row yielded so far is faster than its bound (its
    pipeline bound is at most its step, so nothing faster can come after it)."""
    where = {id(row): index for index, row in enumerate(rows)}
    heap = [(row.step_s, where[id(row)], row) for row in admitted]
    heap += [(row.pipeline_bound_s or 0.0, where[id(row)], row) for row in deferred]
    heapq.heapify(heap)
    while heap:
        _, index, row = heapq.heappop(heap)
        if row.deferred:
            row.time_deferred()
            if admits(row):
                heapq.heappush(heap, (row.step_s, index, row))
            continue
        yield row


def _solve(
    row: Row,
    *,
    model: ModelSpec,
    workload: WorkloadSpec,
    headroom_gib: float,
    fixed: dict[str, object],
    maxima: dict[str, int],
) -> ParallelConfig | None:
    """The partition solver's layout for ``row``'s family, or None when it has none."""
    blocks = model_single_kind(model) and not any(
        knob in fixed for knob in ("recompute", "recompute_method", "recompute_num_layers")
    )
    row.complete_memory(headroom_gib)  # a layout rejected by the bound has no stages yet
    problem = partition_problem(row, headroom_gib=headroom_gib, blocks=blocks)
    solution = solve_stage_partition(problem, SOLVE_OPTIONS)
    if solution.status not in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
        return None
    sizes = solution.layers_per_stage
    layout = row.layout
    update: dict[str, object] = {  # the solver's sizes replace an account-for split
        "first_stage_layers": None,
        "last_stage_layers": None,
        **dict.fromkeys(ACCOUNT_FOR, False),
    }
    if len(set(sizes)) > 1:  # an even split is written as none (one key per layout)
        update |= {"first_stage_layers": sizes[0], "last_stage_layers": sizes[-1]}
    if blocks:
        block = solution.block_layers or 0
        if block == 0:
            update |= {"recompute": "none", "recompute_method": None, "recompute_num_layers": None}
        elif block >= max(sizes):
            update |= {"recompute": "full", "recompute_method": "uniform",
                       "recompute_num_layers": 1}  # fmt: skip
        else:
            update |= {"recompute": "full", "recompute_method": "block",
                       "recompute_num_layers": block}  # fmt: skip
    if any(isinstance(v, int) and k in maxima and v > maxima[k] for k, v in update.items()):
        return None
    try:
        return ParallelConfig(**{**layout.model_dump(exclude_unset=True), **update})
    except ValueError:
        return None


def model_single_kind(model: ModelSpec) -> bool:
    return len({representative_layer(model, i) for i in range(model.num_layers)}) == 1


def partition_problem(row: Row, *, headroom_gib: float, blocks: bool) -> StagePartitionProblem:
    """The stage-partition problem of ``row``'s family (module docstring)."""
    prepared = row.prepared
    model, layout, ctx = prepared.model, prepared.layout, prepared.ctx
    options = [_with_recompute(layout, "none"), _with_recompute(layout, "full")]
    if not blocks:
        options = [layout]
    rates = time_rates(
        cluster=prepared.cluster, workload=prepared.workload, framework=prepared.framework
    )
    seq_len = prepared.workload.seq_len

    def compute_us(
        layer_ids: list[int], variant: ParallelConfig, *, first: bool, last: bool
    ) -> int:
        times = stage_times(model, layer_ids, first=first, last=last, layout=variant,
                            seq_len=seq_len, impl=prepared.impl, rates=rates)  # fmt: skip
        return round((times.forward_s + times.backward_s) * MICROSECONDS)

    kinds_of = [representative_layer(model, i) for i in range(model.num_layers)]
    kinds = sorted(set(kinds_of))
    footprints = {
        (k, r): layer_footprint(replace(ctx, layout=variant), k)
        for k in kinds
        for r, variant in enumerate(options)
    }
    layer_kinds = tuple(
        LayerKind(
            time_us=tuple(compute_us([k], v, first=False, last=False) for v in options),
            activation_mib=tuple(_mib(footprints[k, r][1]) for r in range(len(options))),
            static_mib=_mib(footprints[k, 0][0]),
        )
        for k in kinds
    )
    runs = tuple(
        LayerRun(kind=kinds.index(k), count=len(list(group))) for k, group in groupby(kinds_of)
    )
    pp, m = layout.pp, ctx.microbatches
    inflight = tuple(round(peak_in_flight(rank=s, pp=pp, vpp=1, microbatches=m)) for s in range(pp))
    own = 0 if not blocks else (1 if layout.recompute == "full" else 0)
    capacity, _ = usable_capacity_bytes(prepared.cluster.gpu)
    reserve = ctx.reserve
    allowed = (capacity - headroom_gib * 2**30 - reserve.non_allocator_bytes) / (
        1 + reserve.fragmentation
    )
    counts = [0] * pp
    for index, chunk in enumerate(virtual_stages(model, layout)):
        counts[index] = len(chunk)
    start = 0
    capacities = []
    for s, stage in enumerate(row.stages):
        ids = range(start, start + counts[s])
        start += counts[s]
        layers = sum(
            footprints[kinds_of[i], own][0] + inflight[s] * footprints[kinds_of[i], own][1]
            for i in ids
        )
        extra = max(0.0, stage.allocated - layers)
        capacities.append(max(0, math.floor((allowed - extra) / MIB)))
    first_us = compute_us([], options[0], first=True, last=False)
    last_us = compute_us([], options[0], first=False, last=True)
    return StagePartitionProblem(
        kinds=layer_kinds,
        runs=runs,
        stages=pp,
        inflight=inflight,
        capacity_mib=tuple(capacities),
        first_extra_time_us=first_us,
        last_extra_time_us=last_us,
        uniform_middle=True,
        block_option=1 if blocks else None,
    )


def _with_recompute(layout: ParallelConfig, recompute: str) -> ParallelConfig:
    if recompute == "none":
        update = {"recompute": "none", "recompute_method": None, "recompute_num_layers": None}
    else:
        update = {"recompute": "full", "recompute_method": "uniform", "recompute_num_layers": 1}
    return layout.model_copy(update=update)


def _mib(value: float) -> int:
    return max(0, round(value / MIB))
