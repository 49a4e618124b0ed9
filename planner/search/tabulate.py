"""Tabulate the cost model over candidate layouts: memory for every one, time where it fits.

Each candidate is costed with the very functions ``planner.estimate`` is made of
(``predict.prepare``, ``predict.memory_stages``, ``predict.time_report``), so every number
the search ranks by is the number ``estimate`` reports, but without building the report
blocks (``Estimate.config`` alone serialises the whole model spec) for layouts that will
not be shown. A layout fits when its peak plus the headroom is within the usable
capacity, both rounded to GiB as ``estimate`` reports them (``peak_gib + headroom <=
capacity_gib``). A layout whose model states alone already exceed that
(``memory.static_lower_bound``, a bound on every moment's total, taken with a relative
margin of ``BOUND_MARGIN`` for the different order of its float sums) is rejected without
computing its activations. The stages are costed first stage first, and the first stage
that does not fit ends the layout's costing (``Row.partial``: its peak is at least that
stage's, so the layout cannot fit; the stages costed are the same computation as in the
full list). The step time (the pipeline simulation) is computed only for layouts that
fit, since the others are never chosen. When nothing fits, the rejected layouts are
costed in full after all (``complete_partial`` for the ones a stage rejected, before
anything orders them by their excess), so that the closest one can be named.

The candidates come already checked against the framework rules
(``planner.search.candidates``), so ``prepare`` skips that check.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from planner.cost.expert_load import ExpertLoadFactors, ExpertLoadSource
from planner.cost.frameworks import DEFAULT_RUNTIME, Framework, LayerSpec, Runtime
from planner.cost.memory import StageMemory, gib, iter_stage_memory, static_lower_bound
from planner.cost.reserve import usable_capacity_bytes
from planner.errors import TimeLimitReached
from planner.predict import (
    Estimate,
    Prepared,
    TimeReport,
    assemble,
    memory_stages,
    prepare,
)
from planner.predict import time_report as predict_time
from planner.search.bounds import pipeline_lower_bound
from planner.search.length_pricing import FIXED_LENGTH, TighteningBound, Timer
from planner.search.progress import Tracker
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import ParallelConfig
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec

BOUND_MARGIN = 1e-9
"""Relative margin on the lower bounds (their float sums run in another order)."""
STEP_ROUNDING_S = 1e-6
"""``estimate`` rounds the step time to this; the step bound is lowered by as much."""


@dataclass
class Row:
    """One candidate layout on one cluster size, with what the cost model says of it."""

    layout: ParallelConfig
    cluster: ClusterSpec
    prepared: Prepared
    stages: list[StageMemory]
    """Empty when the static lower bound rejected the layout (see ``bounded``)."""
    peak_gib: float
    capacity_gib: float
    excess_gib: float
    """peak + headroom - capacity, in reported GiB; a layout fits when it is <= 0. For a
    bounded row, from the lower bound: the real excess is at least this."""
    time: TimeReport | None = None
    """Only for layouts that fit and could be among the best (see ``tabulate``)."""
    step_bound_s: float | None = None
    """A lower bound on the reported step time (layouts that fit, when ranked)."""
    partial: bool = False
    """Rejected by its first stage that does not fit (``stages`` empty, ``peak_gib`` that
    stage's total): the excess is a lower bound, as for a row the static bound rejected,
    but the model states alone need not overflow."""
    pipeline_bound_s: float | None = None
    """The tighter bound that counts the pipeline's fill and drain (``search.bounds``),
    where it was needed to defer the row."""
    bound_refiner: TighteningBound | None = None
    """Set while ``step_bound_s`` is a partial bound (``Timer.quick_bound``), below the
    full one: ``refine_bound`` tightens it. ``bound_order`` tightens only the rows that
    come to the front of the order."""
    deferred: bool = False
    """Among the contenders the compute bound let through, but proven out of the best
    by ``pipeline_bound_s``: not timed (``time`` None) unless something needs its step
    (``time_deferred``; the split solver's choice of leading layouts)."""

    def time_deferred(self) -> None:
        """Time a deferred row (its step is then known like any timed row's)."""
        if self.time is None:
            self.time = predict_time(self.prepared)
        self.deferred = False

    def refine_bound(self) -> None:
        """Tighten a partial ``step_bound_s`` a step (the full bound in the end)."""
        if self.bound_refiner is not None:
            self.bound_refiner.tighten()
            self.step_bound_s = _margined(self.bound_refiner.value())
            if self.bound_refiner.exact:
                self.bound_refiner = None

    @property
    def bounded(self) -> bool:
        """Rejected by the static lower bound, without its full memory."""
        return not self.stages

    def complete_memory(self, headroom_gib: float) -> None:
        """Cost the full memory of a bounded row (for messages about the closest layout)."""
        if self.bounded:
            self.stages = memory_stages(self.prepared)
            self.peak_gib = gib(max(stage.total for stage in self.stages))
            self.excess_gib = self.peak_gib + headroom_gib - self.capacity_gib
            self.partial = False

    @property
    def fits(self) -> bool:
        return self.excess_gib <= 0

    @property
    def step_s(self) -> float:
        assert self.time is not None, "step time is tabulated for layouts that fit"
        return self.time.step_time_s

    @property
    def worst_stage(self) -> int:
        return max(self.stages, key=lambda s: s.total).stage

    def estimate(self) -> Estimate:
        """The full ``Estimate`` (what ``autopar estimate --json`` prints for this layout)."""
        timing = self.time if self.time is not None else predict_time(self.prepared)
        return assemble(self.prepared, self.stages, timing)


def complete_partial(rows: Iterable[Row], headroom_gib: float) -> None:
    """Cost in full the rows a stage rejected (``Row.partial``), so that every row's
    excess is exact or the static bound's, as without the early stop: for the paths that
    order rows that do not fit by their excess (nothing fits)."""
    for row in rows:
        if row.partial:
            row.complete_memory(headroom_gib)


@dataclass
class Table:
    """The tabulated rows; ``complete`` is False when the time limit cut tabulation short."""

    rows: list[Row]
    complete: bool

    @property
    def feasible(self) -> list[Row]:
        return [row for row in self.rows if row.fits and row.time is not None]


@dataclass(frozen=True)
class Ranking:
    """How the caller ranks fitting layouts, so that only the contenders are timed.

    ``key(row, step_s)`` is the objective of a layout given a step time, non-decreasing
    in the step time; ``admits(row)`` whether the objective allows a timed layout;
    ``keep`` how many best layouts the caller needs; ``incumbents`` the keys of layouts
    already found elsewhere (other cluster sizes).
    """

    keep: int
    key: Callable[[Row, float], float]
    admits: Callable[[Row], bool]
    incumbents: tuple[float, ...] = ()


def tabulate(
    layouts: Iterable[ParallelConfig],
    *,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    framework: Framework,
    headroom_gib: float,
    deadline: float | None = None,
    have_feasible: bool = False,
    ranking: Ranking | None = None,
    tracker: Tracker | None = None,
    expert_load: ExpertLoadSource | None = None,
    timer: Timer = FIXED_LENGTH,
    runtime: Runtime = DEFAULT_RUNTIME,
    layer_spec: LayerSpec = "transformer_engine",
) -> Table:
    """Cost every layout (module docstring). Past ``deadline`` (a ``time.perf_counter``
    value) the rest are skipped and ``complete`` is False, once some layout fits (here, or
    ``have_feasible`` from an earlier call); when none does by then, ``TimeLimitReached``
    (nothing to return, and no proof that nothing fits).

    With a ``ranking``, the layouts that fit are timed in the order of a lower bound on
    their objective (``predict.step_lower_bound``), and timing stops when the bound of
    the next exceeds the ``keep``-th best objective found: none of the rest can be among
    the best (they stay in the table with ``time`` None and ``step_bound_s`` set). Before
    that, a layout whose pipeline bound (``search.bounds``: fill and drain counted)
    already exceeds the ``keep``-th best is deferred instead of timed (``Row.deferred``);
    which layouts are timed or deferred, and where timing stops, is decided by the
    compute bound alone, as without the deferral. A timed layout faster than either
    bound would mean a bound is broken; then every layout is timed, the deferred ones
    included.

    ``tracker`` (``planner.search.progress``) counts each layout costed and timed.
    ``timer`` times a layout and bounds its time (``planner.search.length_pricing``: the
    fixed sequence length, or a distribution of lengths). ``runtime`` and ``layer_spec``
    are the run-time settings every layout is priced with, as ``estimate`` takes them (the
    local spec attends unfused).
    """
    tracker = tracker or Tracker(None)
    capacity_gib = gib(usable_capacity_bytes(cluster.gpu)[0])
    rows: list[Row] = []
    shared: dict[ParallelConfig, tuple[float, list[StageMemory], bool]] = {}
    cut = False
    for layout in layouts:
        if deadline is not None and time.perf_counter() > deadline:
            if not (have_feasible or any(row.fits for row in rows)):
                raise TimeLimitReached(
                    f"{tracker.evaluated} of {tracker.total} candidate layouts costed, none "
                    "fits in memory yet"
                )
            cut = True
            break
        row = _memory_row(layout, model=model, cluster=cluster, workload=workload,
                          framework=framework, headroom_gib=headroom_gib,
                          capacity_gib=capacity_gib, shared=shared,
                          expert_load=expert_load(layout.ep) if expert_load else None,
                          runtime=runtime, layer_spec=layer_spec)  # fmt: skip
        rows.append(row)
        tracker.costed()
        if row.fits and ranking is None:
            row.time = timer.time(row.prepared)
            tracker.timed_one()
            have_feasible = True
    if ranking is None:
        return Table(rows=rows, complete=not cut)
    tracker.enter("time")
    table = _time_contenders(
        rows, ranking, deadline=deadline, have_feasible=have_feasible, tracker=tracker,
        timer=timer,
    )  # fmt: skip
    table.complete = table.complete and not cut
    return table


def _memory_row(
    layout: ParallelConfig,
    *,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    framework: Framework,
    headroom_gib: float,
    capacity_gib: float,
    expert_load: ExpertLoadFactors | None = None,
    shared: dict[ParallelConfig, tuple[float, list[StageMemory], bool]] | None = None,
    runtime: Runtime = DEFAULT_RUNTIME,
    layer_spec: LayerSpec = "transformer_engine",
) -> Row:
    """The layout's memory row. Layouts that differ only in the CP algorithm share their
    memory (``planner.cost`` holds no memory per algorithm), computed once in ``shared``."""
    prepared = prepare(
        model=model, cluster=cluster, workload=workload, layout=layout, framework=framework,
        check=False, expert_load=expert_load, runtime=runtime, layer_spec=layer_spec,
        flash_attention=layer_spec != "local",
    )  # fmt: skip
    flat = {"cp_comm_type": "p2p", "hierarchical_cp_sizes": None}
    key = layout.model_copy(update=flat) if layout.cp > 1 else layout
    if shared is not None and key in shared:
        peak_gib, stages, partial = shared[key]
    else:
        peak_gib, stages, partial = _memory(
            prepared, headroom_gib=headroom_gib, capacity_gib=capacity_gib
        )
        if shared is not None:
            shared[key] = (peak_gib, stages, partial)
    return Row(
        layout=prepared.layout,
        cluster=cluster,
        prepared=prepared,
        stages=list(stages),
        peak_gib=peak_gib,
        capacity_gib=capacity_gib,
        excess_gib=peak_gib + headroom_gib - capacity_gib,
        partial=partial,
    )


def _memory(
    prepared: Prepared, *, headroom_gib: float, capacity_gib: float
) -> tuple[float, list[StageMemory], bool]:
    """(peak GiB, stages, partial): the stages only when the states' lower bound leaves
    room and every stage fits; else the bound's or the first overflowing stage's GiB,
    no stages, and whether a stage (not the states' bound) rejected it (module docstring).

    A stage whose total alone gives ``gib(total) + headroom > capacity`` proves the row
    cannot fit: ``gib`` rounds monotonically and the peak is the largest total, so the
    full row's ``peak_gib + headroom - capacity`` would be at least as large."""
    bound_gib = gib(static_lower_bound(prepared.ctx) * (1 - BOUND_MARGIN))
    if bound_gib + headroom_gib > capacity_gib:
        return bound_gib, [], False
    stages = []
    for stage in iter_stage_memory(prepared.ctx):
        stage_gib = gib(stage.total)
        if stage_gib + headroom_gib - capacity_gib > 0:
            return stage_gib, [], True
        stages.append(stage)
    return gib(max(stage.total for stage in stages)), stages, False


def _time_contenders(
    rows: list[Row],
    ranking: Ranking,
    *,
    deadline: float | None,
    have_feasible: bool,
    tracker: Tracker,
    timer: Timer = FIXED_LENGTH,
) -> Table:
    """Time the fitting rows best bound first until the rest cannot make the cut."""
    fitting = [row for row in rows if row.fits]
    for row in fitting:
        # the step is rounded to 1e-6 s in the report and the bound's sums run in
        # another order: both margins keep the bound below the reported step
        quick = timer.quick_bound(row.prepared)
        if quick is None:
            row.step_bound_s = _margined(timer.bound(row.prepared))
        else:  # ``_margined`` is non-decreasing: a partial bound stays below the full
            row.step_bound_s = _margined(quick.value())
            row.bound_refiner = None if quick.exact else quick
    order = bound_order(fitting, lambda row: ranking.key(row, row.step_bound_s or 0.0))
    best = sorted(ranking.incumbents)[: ranking.keep]
    prune = True
    deferred: list[Row] = []
    for row in order:
        if deadline is not None and have_feasible and time.perf_counter() > deadline:
            return Table(rows=rows, complete=False)
        bound = ranking.key(row, row.step_bound_s or 0.0)
        if prune and len(best) == ranking.keep and bound > best[-1]:
            break
        if prune and timer is FIXED_LENGTH and len(best) == ranking.keep:
            # the pipeline bound is the fixed length's; a length mix can be faster
            row.pipeline_bound_s = _margined(pipeline_lower_bound(row.prepared))
            if ranking.key(row, row.pipeline_bound_s) > best[-1]:
                row.deferred = True  # cannot be among the best; best[-1] is unchanged
                deferred.append(row)
                continue
        row.time = timer.time(row.prepared)
        tracker.timed_one()
        have_feasible = True
        if any(bound is not None and row.step_s < bound
               for bound in (row.step_bound_s, row.pipeline_bound_s)):  # fmt: skip
            prune = False  # a bound does not hold for this cost model: time them all
            for late in deferred:
                late.time_deferred()
                tracker.timed_one()
                if ranking.admits(late):
                    best = sorted([*best, ranking.key(late, late.step_s)])[: ranking.keep]
            deferred = []
        if ranking.admits(row):
            best = sorted([*best, ranking.key(row, row.step_s)])[: ranking.keep]
    return Table(rows=rows, complete=True)


def bound_order(rows: list[Row], key: Callable[[Row], float]) -> Iterator[Row]:
    """``rows`` in the order of ``sorted(rows, key=key)`` with every row's full bound,
    tightening (``Row.refine_bound``) only the rows that come to the front; the caller
    may stop early, and the rows it did not reach keep their partial bound.

    Exact: ``key`` is non-decreasing in the row's bound and a partial bound is at most
    the full one, so each heap entry (key, position) is at most the row's final one. A
    refined row popped from the heap is therefore the least of every remaining row's
    final (key, position): the next one in the stable sort's order, ties in list order.
    ``key`` is read when a row enters the heap: the caller must not change a row's
    bound or time while it is waiting (as ``sorted`` reads each key once)."""
    heap = [(key(row), position) for position, row in enumerate(rows)]
    heapq.heapify(heap)
    while heap:
        _, position = heapq.heappop(heap)
        row = rows[position]
        if row.bound_refiner is not None:
            row.refine_bound()
            heapq.heappush(heap, (key(row), position))
            continue
        yield row


def _margined(bound_s: float) -> float:
    """A bound lowered by the margins that keep it below the reported step: the step is
    rounded to ``STEP_ROUNDING_S`` and the bound's sums run in another order."""
    return max(0.0, bound_s * (1 - BOUND_MARGIN) - STEP_ROUNDING_S)
