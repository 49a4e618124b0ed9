"""search(): enumerate the layouts, tabulate the cost model over them, let CP-SAT choose.

Steps, for each cluster size the objective searches (one for ``throughput``):

1. ``candidates.enumerate_space``: every layout that passes the framework rules.
2. ``tabulate.tabulate``: peak memory of each, and the step time of those that fit
   (``peak_gib + headroom <= capacity_gib``), with the very functions ``estimate`` runs;
   layouts whose lower bounds (model states alone over capacity; compute alone slower
   than the top_k-th best objective found) exclude them are not costed further.
3. ``partition.split_variants`` (pipelines only): for the leading layouts, the layer split
   and recompute blocks chosen by the stage-partition solver (``solvers.stage_partition``),
   tabulated the same way and added as candidates.
4. ``formulation.formulate``: the factorised CP-SAT model (``solvers.degrees``) over the
   layouts that fit and that the objective admits; the solver returns the top-k (with
   ``risk="averse"``, ``robust.pool_size`` of them).
5. ``robust.order``: with ``risk="averse"``, the plans whose objective is inside the best
   one's error band are reordered by robustness (``planner.search.robust``); the first
   top_k are returned.

Headroom: ``headroom_gib=None`` keeps the framework's default margin
(``planner.accuracy.default_headroom``: its worst validated peak-memory error of the
capacity); ``search.headroom_gib`` and ``search.headroom_basis`` say what was kept.

The optimum is exact under the cost model: every candidate's objective is tabulated from
the cost model itself or proven out of the top_k by a bound, and the solver is proven
optimal over them (the tests compare it with the brute-force minimum of ``estimate`` on
100 random instances).

Time limit: ``time_limit_s`` is a wall-clock deadline for every phase: enumeration,
tabulation, the cluster sizes of the cost objectives, and the solver (which always gets
``SOLVER_MIN_TIME_S``, so a search ends at most about that long after its limit). When
it runs out after at least one layout that fits was found, the candidates not yet
enumerated or costed are skipped and the best plans found are returned, labelled
``optimal: false``. When none fits by then, ``TimeLimitReached`` says how far the search
got: there is neither a plan nor a proof that none fits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from planner.accuracy import resolve_headroom
from planner.cost.expert_load import ExpertLoadSource
from planner.cost.frameworks import DEFAULT_RUNTIME, Framework, LayerSpec, Runtime
from planner.cost.reserve import usable_capacity_bytes
from planner.errors import Infeasible, SpecError, TimeLimitReached
from planner.frameworks import get_profile
from planner.search import partition, robust
from planner.search.candidates import Enumeration, enumerate_space
from planner.search.explain import (
    compare,
    deadline_message,
    explain,
    layout_label,
    memory_message,
    no_layout_message,
)
from planner.search.formulation import formulate
from planner.search.grow import Grown, smallest_fitting
from planner.search.length_pricing import FIXED_LENGTH, Timer
from planner.search.objectives import OBJECTIVES, Objective, cluster_sizes, make_objective, resized
from planner.search.progress import ProgressCallback, Tracker
from planner.search.results import PlanEntry, PlanResult, SearchInfo
from planner.search.tabulate import Ranking, Row, complete_partial, tabulate
from planner.specs.hardware import ClusterSpec
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec
from solvers import SolveOptions, SolveStatus, solve_degrees

__all__ = [
    "OBJECTIVES",
    "Infeasible",
    "PlanEntry",
    "PlanResult",
    "SearchInfo",
    "compare",
    "layout_label",
    "search",
]

SOLVER_MIN_TIME_S = 1.0
"""The solver always gets at least this long, even when tabulation used the time limit."""
SPLIT_LEADERS_EXTRA = 1
"""With the split solver, tabulation keeps (1 + this) x top_k contenders timed: the
leading families it refines come from them."""


@dataclass
class _Sizes:
    """What tabulation found over the cluster sizes searched."""

    spaces: list[tuple[ClusterSpec, Enumeration]]
    rows: list[Row]
    admitted: list[Row]
    complete: bool
    refined: int = 0


def search(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    *,
    framework: Framework = "megatron",
    framework_version: str | None = None,
    objective: str = "throughput",
    fixed: dict[str, Any] | None = None,
    maxima: dict[str, int] | None = None,
    headroom_gib: float | None = None,
    top_k: int = 5,
    time_limit_s: float = 60.0,
    max_mbs: int = 8,
    price_per_gpu_hour: float | None = None,
    token_budget: float | None = None,
    deadline_hours: float | None = None,
    split_solver: bool = True,
    progress: ProgressCallback | None = None,
    expert_load: ExpertLoadSource | None = None,
    timer: Timer = FIXED_LENGTH,
    risk: str = "averse",
    runtime: Runtime = DEFAULT_RUNTIME,
    layer_spec: LayerSpec = "transformer_engine",
) -> PlanResult:
    """The ``top_k`` best layouts that fit, best first; raises ``Infeasible`` if none.

    ``progress`` is called as the search goes (``planner.search.progress``);
    ``expert_load`` gives the routing factors each EP degree's layouts are timed with
    (``cost.expert_load``; None: balanced routing); ``timer`` prices a layout's step
    (``planner.search.length_pricing``: at the workload's sequence length, or over a
    distribution of lengths, when each plan carries ``length_pricing``). ``headroom_gib``
    None keeps the framework's default margin; ``risk`` is ``averse`` (robust order inside
    the error band) or ``neutral`` (the objective's order). ``runtime`` and ``layer_spec``
    are the launch's run-time settings (``cost.frameworks.Runtime``: the allocator, the
    gradient buffer's dtype, kernel switches; Megatron's layer spec): every layout, in
    every phase, is priced with them, and each plan records them in ``config``."""
    tracker = Tracker(progress)
    goal = make_objective(
        objective,
        price_per_gpu_hour=price_per_gpu_hour,
        token_budget=token_budget,
        deadline_hours=deadline_hours,
    )
    get_profile(framework).release(framework_version)  # an unknown version fails first
    if top_k < 1:
        raise SpecError(f"top_k: {top_k} must be at least 1")
    if headroom_gib is not None and headroom_gib < 0:
        raise SpecError(f"headroom_gib: {headroom_gib} must not be negative")
    if risk not in robust.RISKS:
        raise SpecError(f"risk: unknown '{risk}'; known: {', '.join(robust.RISKS)}")
    kept = resolve_headroom(
        headroom_gib,
        framework=framework,
        capacity_gib=round(usable_capacity_bytes(cluster.gpu)[0] / 2**30, 2),
    )
    headroom_gib = kept.gib
    pool = robust.pool_size(top_k, risk)
    started = time.perf_counter()
    sizes = cluster_sizes(cluster) if goal.sizes_searched else [cluster.num_gpus]
    try:
        found = _tabulate_sizes(
            model, cluster, workload, sizes=sizes, goal=goal, framework=framework, fixed=fixed,
            maxima=maxima, headroom_gib=headroom_gib, top_k=pool, max_mbs=max_mbs,
            deadline=started + time_limit_s, split_solver=split_solver, tracker=tracker,
            expert_load=expert_load, timer=timer, framework_version=framework_version,
            runtime=runtime, layer_spec=layer_spec,
        )  # fmt: skip
    except TimeLimitReached as error:
        raise TimeLimitReached(
            f"time limit of {time_limit_s:g} s reached before any layout that fits was "
            f"found ({error}); raise the time limit, or narrow the search by pinning or "
            "bounding knobs"
        ) from None
    if not found.admitted:

        def grown(largest: ClusterSpec) -> Grown:
            return smallest_fitting(
                model, largest, workload, framework=framework, headroom_gib=headroom_gib,
                fixed=fixed, maxima=maxima, max_mbs=max_mbs, runtime=runtime,
                layer_spec=layer_spec,
            )  # fmt: skip

        raise Infeasible(
            _infeasible_message(found, goal, cluster, workload, headroom_gib, fixed, grown)
        )
    tracker.enter("solve")
    formulation = formulate(found.admitted, objective=goal, top_k=pool)
    left_s = max(SOLVER_MIN_TIME_S, time_limit_s - (time.perf_counter() - started))
    solution = solve_degrees(formulation.problem, SolveOptions(time_limit_s=left_s))
    if not solution.assignments:
        raise SpecError(f"the solver found no plan within {left_s:.1f} s; raise the time limit")
    rows = [formulation.decode(a) for a in solution.assignments]
    if risk == "averse":  # the conventional plans join the re-ranking (robust.py)

        def split(leaders: list[Row]) -> list[Row]:
            """The stage-partition solver's splits of these layouts (one cluster size)."""
            if not split_solver:
                return []
            return partition.split_variants(
                found.rows, leaders, model=model, cluster=leaders[0].cluster,
                workload=workload, framework=framework, headroom_gib=headroom_gib,
                fixed=fixed or {}, maxima=maxima or {}, leaders=len(leaders),
                expert_load=expert_load, timer=timer, runtime=runtime, layer_spec=layer_spec,
            )  # fmt: skip

        rows = robust.with_conventional(
            rows, found.rows, key=goal.key, admits=goal.admits,
            same_gpus=goal.stops_at_first_fit, split=split, timer=timer,
        )  # fmt: skip
    estimates = [row.estimate() for row in rows]
    values = [goal.key(row, row.step_s) for row in rows]
    shown = robust.order(estimates, values, risk=risk, same_gpus=goal.stops_at_first_fit)
    shown = shown[:top_k]
    best = conventional = None
    if risk == "averse":
        best = (estimates[0], values[0])
        conventional = next(
            ((e, v) for e, v in zip(estimates, values, strict=True) if robust.conventional(e)),
            None,
        )
    rows, estimates = [rows[i] for i in shown], [estimates[i] for i in shown]
    fitting = sum(row.fits for row in found.rows)
    plans = [
        PlanEntry.of(
            estimate,
            explanation=explain(
                rank,
                rows,
                estimates,
                goal,
                fitting=fitting,
                best=best,
                conventional=conventional,
            ),
            training=_training(goal, row),
            length_pricing=timer.record(row.layout),
            uncertainty=robust.uncertainty(estimate),
        )
        for rank, (row, estimate) in enumerate(zip(rows, estimates, strict=True))
    ]
    info = SearchInfo(
        solver="cp-sat",
        objective=goal.name,
        optimal=found.complete and solution.status is SolveStatus.OPTIMAL,
        wall_s=round(time.perf_counter() - started, 3),
        solver_wall_s=round(solution.total_wall_s, 3),
        gpus_searched=[c.num_gpus for c, _ in found.spaces],
        # the split solver's layouts are counted as considered and legal too, so that
        # considered >= legal >= fit always holds
        layouts_considered=sum(space.considered for _, space in found.spaces) + found.refined,
        layouts_legal=sum(len(space.layouts) for _, space in found.spaces) + found.refined,
        layouts_evaluated=len(found.rows),
        layouts_feasible=fitting,
        layouts_timed=sum(row.time is not None for row in found.rows),
        layouts_split_solver=found.refined,
        headroom_gib=kept.gib,
        headroom_basis=kept.basis,
        risk=risk,
        robust=None if best is None else robust.choice(best, conventional),
    )
    # layouts timed after tabulation (the robust pass's conventional layouts, deferred
    # rows the split solver's walk reached) count in the final progress too
    tracker.add_timed(info.layouts_timed - tracker.timed)
    tracker.enter("done")
    return PlanResult(plans=plans, search=info)


def _tabulate_sizes(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    *,
    sizes: list[int],
    goal: Objective,
    framework: Framework,
    fixed: dict[str, Any] | None,
    maxima: dict[str, int] | None,
    headroom_gib: float,
    top_k: int,
    max_mbs: int,
    deadline: float,
    split_solver: bool,
    tracker: Tracker,
    expert_load: ExpertLoadSource | None = None,
    timer: Timer = FIXED_LENGTH,
    framework_version: str | None = None,
    runtime: Runtime = DEFAULT_RUNTIME,
    layer_spec: LayerSpec = "transformer_engine",
) -> _Sizes:
    found = _Sizes(spaces=[], rows=[], admitted=[], complete=True)
    for gpus in sizes:
        if found.admitted and time.perf_counter() > deadline:
            found.complete = False  # the larger sizes are not searched
            break
        sized = resized(cluster, gpus) if gpus != cluster.num_gpus else cluster
        try:
            space = enumerate_space(
                model, sized, workload, framework=framework, fixed=fixed, maxima=maxima,
                max_mbs=max_mbs, deadline=deadline, framework_version=framework_version,
                layer_spec=layer_spec,
            )  # fmt: skip
        except SpecError:
            if len(sizes) == 1:
                raise
            continue  # a pinned knob this size cannot take (e.g. tp 8 on 4 GPUs)
        found.spaces.append((sized, space))
        tracker.candidates(len(space.layouts))
        ranking = Ranking(
            keep=top_k + SPLIT_LEADERS_EXTRA * top_k * split_solver,
            key=goal.key,
            admits=goal.admits,
            incumbents=tuple(goal.key(row, row.step_s) for row in found.admitted),
        )
        table = tabulate(
            space.layouts, model=model, cluster=sized, workload=workload, framework=framework,
            headroom_gib=headroom_gib, deadline=deadline, have_feasible=bool(found.admitted),
            ranking=ranking, tracker=tracker, expert_load=expert_load, timer=timer,
            runtime=runtime, layer_spec=layer_spec,
        )  # fmt: skip
        found.complete = found.complete and table.complete and space.complete
        found.rows.extend(table.rows)
        admitted = [row for row in table.feasible if goal.admits(row)]
        if split_solver and table.complete and time.perf_counter() <= deadline:
            tracker.enter("split")
            deferred = [row for row in table.rows if row.deferred]
            variants = partition.split_variants(
                table.rows, admitted, model=model, cluster=sized, workload=workload,
                framework=framework, headroom_gib=headroom_gib, fixed=fixed or {},
                maxima=maxima or {}, leaders=2 * top_k, expert_load=expert_load, timer=timer,
                admits=goal.admits, runtime=runtime, layer_spec=layer_spec,
            )  # fmt: skip
            found.refined += len(variants)
            tracker.add_timed(sum(row.time is not None for row in [*variants, *deferred]))
            found.rows.extend(variants)
            admitted.extend(row for row in variants if row.fits and goal.admits(row))
        found.admitted.extend(admitted)
        if goal.stops_at_first_fit and admitted:
            break  # sizes go smallest first: this is the fewest GPUs that can do it
    if not found.admitted and not found.complete:
        raise TimeLimitReached("the candidates were not all enumerated")
    return found


def _training(goal: Objective, row: Row) -> dict[str, float] | None:
    if goal.token_budget is None:
        return None
    steps = goal.steps(row)
    hours = goal.train_hours(row)
    training = {
        "token_budget": goal.token_budget,
        "steps": steps,
        "hours": round(hours, 3),
        "gpu_hours": round(hours * row.cluster.num_gpus, 1),
    }
    if goal.price_per_gpu_hour is not None:
        training["price_per_gpu_hour"] = goal.price_per_gpu_hour
        training["cost"] = round(goal.train_cost(row), 2)
    return training


def _closest_miss(misses: list[Row], headroom_gib: float) -> Row:
    """The layout that misses memory by the least, costing in full only the rows that can
    be it: a bounded row's excess is a lower bound, so rows are completed smallest bound
    first until the next bound exceeds the best full excess found (exact, and it spares
    the full memory model of thousands of hopeless layouts)."""
    best: Row | None = None
    for row in sorted(misses, key=lambda row: row.excess_gib):
        if best is not None and row.excess_gib > best.excess_gib:
            break
        row.complete_memory(headroom_gib)
        if best is None or row.excess_gib < best.excess_gib:
            best = row
    assert best is not None, "called with at least one row"
    return best


def _states_overflow(row: Row, headroom_gib: float) -> bool:
    """Whether the layout's memory less its activations and transients already exceeds
    the capacity less the headroom (a bounded row: its bound is the model states)."""
    if row.bounded:
        return True
    static = max(stage.total - stage.activations - stage.transient for stage in row.stages)
    return static / 2**30 + headroom_gib > row.capacity_gib


def _infeasible_message(
    found: _Sizes,
    goal: Objective,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    headroom_gib: float,
    fixed: dict[str, Any] | None,
    grown: Callable[[ClusterSpec], Grown],
) -> str:
    if not found.spaces:
        return f"no cluster size up to {cluster.num_gpus} GPUs can take the fixed knobs {fixed}"
    complete_partial(found.rows, headroom_gib)  # the messages below read the excess
    sized, space = found.spaces[-1]
    if not found.rows:
        return no_layout_message(space, sized)
    fitting = [row for row in found.rows if row.fits and row.time is not None]
    if fitting:  # layouts fit, but the objective admits none (the deadline)
        fastest = min(
            (r for r in fitting if r.cluster.num_gpus == max(x.cluster.num_gpus for x in fitting)),
            key=lambda row: row.step_s,
        )
        return deadline_message(goal, fastest, [c.num_gpus for c, _ in found.spaces])
    largest = max(c.num_gpus for c, _ in found.spaces)
    misses = [row for row in found.rows if row.cluster.num_gpus == largest] or found.rows
    # the model states alone (no activations) overflow every layout: a shorter sequence,
    # recomputation or a smaller micro-batch cannot help
    states_alone = all(_states_overflow(row, headroom_gib) for row in misses)
    closest = _closest_miss(misses, headroom_gib)
    space = next(s for c, s in found.spaces if c.num_gpus == closest.cluster.num_gpus)
    return memory_message(
        considered=space.considered,
        legal=len(space.layouts),
        dropped=", ".join(f"{rule.text}: {count}" for rule, count in space.dropped.most_common()),
        closest=closest,
        cluster=closest.cluster,
        workload=workload,
        headroom_gib=headroom_gib,
        fixed=fixed or {},
        moe=closest.prepared.model.moe is not None,
        more_gpus=grown(closest.cluster).words(closest.cluster.num_gpus),
        states_alone=states_alone,
    )
