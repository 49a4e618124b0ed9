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
   layouts that fit and that the objective admits; the solver returns the top-k.

The optimum is exact under the cost model: every candidate's objective is tabulated from
the cost model itself or proven out of the top_k by a bound, and the solver is proven
optimal over them (the tests compare it with the brute-force minimum of ``estimate`` on
100 random instances).

Time limit: ``time_limit_s`` covers tabulation too. When it runs out after at least one
layout that fits was found, the layouts not yet costed are skipped and the result is
labelled ``optimal: false``; until one fits, tabulation goes on (an infeasibility verdict
needs every candidate).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from planner.cost.frameworks import Framework
from planner.errors import Infeasible, SpecError
from planner.search import partition
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
from planner.search.objectives import OBJECTIVES, Objective, cluster_sizes, make_objective, resized
from planner.search.progress import ProgressCallback, Tracker
from planner.search.results import PlanEntry, PlanResult, SearchInfo
from planner.search.tabulate import Ranking, Row, tabulate
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
    objective: str = "throughput",
    fixed: dict[str, Any] | None = None,
    maxima: dict[str, int] | None = None,
    headroom_gib: float = 0.0,
    top_k: int = 5,
    time_limit_s: float = 60.0,
    max_mbs: int = 8,
    price_per_gpu_hour: float | None = None,
    token_budget: float | None = None,
    deadline_hours: float | None = None,
    split_solver: bool = True,
    progress: ProgressCallback | None = None,
) -> PlanResult:
    """The ``top_k`` best layouts that fit, best first; raises ``Infeasible`` if none.

    ``progress`` is called as the search goes (``planner.search.progress``)."""
    tracker = Tracker(progress)
    goal = make_objective(
        objective,
        price_per_gpu_hour=price_per_gpu_hour,
        token_budget=token_budget,
        deadline_hours=deadline_hours,
    )
    if top_k < 1:
        raise SpecError(f"top_k: {top_k} must be at least 1")
    if headroom_gib < 0:
        raise SpecError(f"headroom_gib: {headroom_gib} must not be negative")
    started = time.perf_counter()
    sizes = cluster_sizes(cluster) if goal.sizes_searched else [cluster.num_gpus]
    found = _tabulate_sizes(
        model, cluster, workload, sizes=sizes, goal=goal, framework=framework, fixed=fixed,
        maxima=maxima, headroom_gib=headroom_gib, top_k=top_k, max_mbs=max_mbs,
        deadline=started + time_limit_s, split_solver=split_solver, tracker=tracker,
    )  # fmt: skip
    if not found.admitted:
        raise Infeasible(_infeasible_message(found, goal, cluster, workload, headroom_gib, fixed))
    tracker.enter("solve")
    formulation = formulate(found.admitted, objective=goal, top_k=top_k)
    left_s = max(SOLVER_MIN_TIME_S, time_limit_s - (time.perf_counter() - started))
    solution = solve_degrees(formulation.problem, SolveOptions(time_limit_s=left_s))
    if not solution.assignments:
        raise SpecError(f"the solver found no plan within {left_s:.1f} s; raise the time limit")
    rows = [formulation.decode(a) for a in solution.assignments]
    estimates = [row.estimate() for row in rows]
    plans = [
        PlanEntry.of(
            estimate,
            explanation=explain(rank, rows, estimates, goal),
            training=_training(goal, row),
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
        layouts_considered=sum(space.considered for _, space in found.spaces),
        layouts_legal=sum(len(space.layouts) for _, space in found.spaces),
        layouts_evaluated=len(found.rows),
        layouts_feasible=sum(row.fits for row in found.rows),
        layouts_timed=sum(row.time is not None for row in found.rows),
        layouts_split_solver=found.refined,
    )
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
) -> _Sizes:
    found = _Sizes(spaces=[], rows=[], admitted=[], complete=True)
    for gpus in sizes:
        sized = resized(cluster, gpus) if gpus != cluster.num_gpus else cluster
        try:
            space = enumerate_space(
                model, sized, workload, framework=framework, fixed=fixed, maxima=maxima,
                max_mbs=max_mbs,
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
            ranking=ranking, tracker=tracker,
        )  # fmt: skip
        found.complete = found.complete and table.complete
        found.rows.extend(table.rows)
        admitted = [row for row in table.feasible if goal.admits(row)]
        if split_solver and table.complete:
            tracker.enter("split")
            variants = partition.split_variants(
                table.rows, admitted, model=model, cluster=sized, workload=workload,
                framework=framework, headroom_gib=headroom_gib, fixed=fixed or {},
                maxima=maxima or {}, leaders=2 * top_k,
            )  # fmt: skip
            found.refined += len(variants)
            tracker.add_timed(sum(row.time is not None for row in variants))
            found.rows.extend(variants)
            admitted.extend(row for row in variants if row.fits and goal.admits(row))
        found.admitted.extend(admitted)
        if goal.stops_at_first_fit and admitted:
            break  # sizes go smallest first: this is the fewest GPUs that can do it
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


def _infeasible_message(
    found: _Sizes,
    goal: Objective,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    headroom_gib: float,
    fixed: dict[str, Any] | None,
) -> str:
    if not found.spaces:
        return f"no cluster size up to {cluster.num_gpus} GPUs can take the fixed knobs {fixed}"
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
    for row in misses:
        row.complete_memory(headroom_gib)
    closest = min(misses, key=lambda row: row.excess_gib)
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
    )
