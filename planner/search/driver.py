"""search(): tabulate the cost model over every candidate layout and let CP-SAT choose.

Step one of the planner (issue 5) is exact under the cost model by brute-force
tabulation: ``estimate()`` runs once per candidate of :mod:`planner.search.candidates`,
the layouts whose peak memory plus the headroom exceed the GPU's capacity are dropped,
and the choice is a :class:`solvers.degrees.DegreesProblem` over one axis:

  axis        ``candidate``: the indices of the memory-feasible candidates
  table       AllowedTable(candidate) = those indices (memory and the framework rules)
  cost        CostFactor(candidate) = t_i * N + r_i: t_i the predicted step time in integer
              microseconds (``estimate`` rounds step time to 1e-6 s, so t_i is exact), N
              the number of feasible candidates and r_i < N the candidate's rank by peak
              memory, so equal step times go to the layout with more headroom
  objective   minimise step time; top-k by the solver's no-good cuts

so the solver's optimum equals the brute-force minimum over the tabulated candidates,
which the tests check. Later steps factorise the table over tp, pp, ... axes.

Time limit: ``time_limit_s`` covers the tabulation too; when it runs out after at least
one layout that fits was found, the candidates not yet evaluated are skipped and the
result is labelled ``optimal: false`` (until one fits, tabulation goes on: an
infeasibility verdict needs every candidate).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from planner.errors import Infeasible, SpecError
from planner.predict import Estimate, estimate
from planner.search.candidates import Enumeration, enumerate_space
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import ParallelConfig
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec
from solvers import (
    AllowedTable,
    Axis,
    CostFactor,
    DegreesProblem,
    SolveOptions,
    SolveStatus,
    solve_degrees,
)

OBJECTIVES = ("throughput", "cost", "min-gpus")
MICROSECONDS = 1_000_000
SOLVER_MIN_TIME_S = 1.0
"""The solver always gets at least this long, even when tabulation used the time limit."""

KNOB_LABELS = {
    "tp": "tp",
    "cp": "cp",
    "pp": "pp",
    "dp": "dp",
    "ep": "ep",
    "vpp": "vpp",
    "mbs": "mbs",
    "recompute": "recompute",
    "recompute_num_layers": "recompute layers",
    "zero_stage": "ZeRO stage",
    "sequence_parallel": "sequence parallel",
    "cp_comm_type": "cp comm",
}


@dataclass(frozen=True)
class Plan:
    estimate: Estimate
    explanation: str


@dataclass(frozen=True)
class SearchResult:
    plans: list[Plan]
    search: dict[str, Any]


@dataclass(frozen=True)
class _Miss:
    """A candidate that does not fit: by how much, where."""

    excess_gib: float
    stage: int
    layout: ParallelConfig
    estimate: Estimate


def search(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    *,
    framework: str = "megatron",
    objective: str = "throughput",
    fixed: dict[str, Any] | None = None,
    maxima: dict[str, int] | None = None,
    headroom_gib: float = 0.0,
    top_k: int = 5,
    time_limit_s: float = 60.0,
    max_mbs: int = 8,
) -> SearchResult:
    """The ``top_k`` fastest layouts that fit, best first; raises ``Infeasible`` if none."""
    if objective not in OBJECTIVES:
        raise SpecError(f"objective: unknown '{objective}'; known: {', '.join(OBJECTIVES)}")
    if objective != "throughput":
        raise SpecError(
            f"objective '{objective}' is not implemented yet; use 'throughput' (issue 5)"
        )
    if top_k < 1:
        raise SpecError(f"top_k: {top_k} must be at least 1")
    if headroom_gib < 0:
        raise SpecError(f"headroom_gib: {headroom_gib} must not be negative")
    started = time.perf_counter()
    space = enumerate_space(
        model,
        cluster,
        workload,
        framework=framework,
        fixed=fixed,
        maxima=maxima,
        max_mbs=max_mbs,
    )
    if not space.layouts:
        raise Infeasible(_no_layout_message(space, cluster))
    feasible: list[Estimate] = []
    misses: list[_Miss] = []
    complete = True
    for layout in space.layouts:
        if feasible and time.perf_counter() - started > time_limit_s:
            complete = False
            break
        result = estimate(
            model=model, cluster=cluster, workload=workload, layout=layout, framework=framework
        )
        excess = result.memory.peak_gib + headroom_gib - result.memory.capacity_gib
        if excess <= 0:
            feasible.append(result)
        else:
            worst = max(result.memory.stages, key=lambda s: s.total_gib)
            misses.append(_Miss(excess, worst.stage, layout, result))
    if not feasible:
        raise Infeasible(_memory_message(space, misses, cluster, workload, headroom_gib, fixed))
    left_s = max(SOLVER_MIN_TIME_S, time_limit_s - (time.perf_counter() - started))
    indices = tuple(range(len(feasible)))
    # Ties in step time are common (cp and dp often trade evenly in the cost model): break
    # them by lower peak memory, then candidate order, so the choice is deterministic.
    by_memory = sorted(indices, key=lambda i: (feasible[i].memory.peak_gib, i))
    tie_rank = {i: rank for rank, i in enumerate(by_memory)}
    scale = len(feasible)
    problem = DegreesProblem(
        axes=(Axis("candidate", indices),),
        tables=(AllowedTable(("candidate",), tuple((i,) for i in indices)),),
        factors=(
            CostFactor(
                ("candidate",),
                {
                    (i,): round(e.time.step_time_s * MICROSECONDS) * scale + tie_rank[i]
                    for i, e in enumerate(feasible)
                },
            ),
        ),
        top_k=min(top_k, len(feasible)),
    )
    solution = solve_degrees(problem, SolveOptions(time_limit_s=left_s))
    if not solution.assignments:
        raise SpecError(f"the solver found no plan within {left_s:.1f} s; raise the time limit")
    chosen = [feasible[a["candidate"]] for a in solution.assignments]
    plans = [Plan(result, _explain(result, chosen, rank)) for rank, result in enumerate(chosen)]
    info = {
        "solver": "cp-sat",
        "optimal": complete and solution.status is SolveStatus.OPTIMAL,
        "wall_s": round(time.perf_counter() - started, 3),
        "solver_wall_s": round(solution.total_wall_s, 3),
        "layouts_considered": space.considered,
        "layouts_legal": len(space.layouts),
        "layouts_evaluated": len(feasible) + len(misses),
        "layouts_feasible": len(feasible),
    }
    return SearchResult(plans=plans, search=info)


def _knobs(result: Estimate) -> dict[str, Any]:
    return {k: result.config.get(k) for k in KNOB_LABELS}


def layout_label(config: dict[str, Any]) -> str:
    """'tp 8 pp 4 dp 2 cp 1 mbs 1 vpp 2 recompute selective' (ep only when above 1)."""
    c = config
    parts = [f"tp {c['tp']}", f"pp {c['pp']}", f"dp {c['dp']}", f"cp {c['cp']}"]
    if c["ep"] > 1:
        parts.append(f"ep {c['ep']}")
    parts.append(f"mbs {c['mbs']}")
    if c["vpp"]:
        parts.append(f"vpp {c['vpp']}")
    parts.append(f"recompute {c['recompute']}")
    return " ".join(parts)


def compare(better: Estimate, other: Estimate) -> str:
    """Which knobs differ and the biggest breakdown and memory differences, better vs other."""
    mine, theirs = _knobs(better), _knobs(other)
    knobs = [
        f"{KNOB_LABELS[k]} {mine[k]} instead of {theirs[k]}"
        for k in KNOB_LABELS
        if mine[k] != theirs[k]
    ]
    deltas = {
        name: better.time.breakdown_s.get(name, 0.0) - other.time.breakdown_s.get(name, 0.0)
        for name in {*better.time.breakdown_s, *other.time.breakdown_s}
    }
    biggest = sorted((d for d in deltas.items() if abs(d[1]) >= 5e-4), key=lambda d: -abs(d[1]))
    timing = [f"{name.replace('_', ' ')} {delta:+.3f} s" for name, delta in biggest[:3]]
    peak = better.memory.peak_gib - other.memory.peak_gib
    activations = max(s.activations_gib for s in better.memory.stages) - max(
        s.activations_gib for s in other.memory.stages
    )
    memory = f"peak memory {abs(peak):.1f} GiB {'lower' if peak < 0 else 'higher'}"
    if abs(activations) >= 0.05:
        memory += f" (activations {activations:+.1f} GiB)"
    return f"{', '.join(knobs) or 'same knobs'}: {'; '.join(timing) or 'same time'}; {memory}"


def _explain(result: Estimate, chosen: list[Estimate], rank: int) -> str:
    step = result.time.step_time_s
    if rank == 0:
        if len(chosen) == 1:
            return f"The only layout that fits: {layout_label(result.config)}, step {step:.3f} s."
        runner = chosen[1]
        gain = runner.time.step_time_s - step
        if gain <= 0:
            return (
                f"Fastest: {step:.3f} s per step, tied with the runner-up "
                f"({layout_label(runner.config)}) and chosen for its lower peak memory. "
                f"{compare(result, runner)}."
            )
        return (
            f"Fastest: {step:.3f} s per step, {gain:.3f} s ahead of the runner-up "
            f"({layout_label(runner.config)}). {compare(result, runner)}."
        )
    best = chosen[0]
    loss = step - best.time.step_time_s
    return f"{loss:.3f} s slower than the best. Best vs this: {compare(best, result)}."


def _no_layout_message(space: Enumeration, cluster: ClusterSpec) -> str:
    if not space.considered:
        return (
            f"no layout: the knob domains, fixed values and maxima leave no combination of "
            f"tp x cp x pp x dp for {cluster.num_gpus} GPUs"
        )
    rules = "; ".join(
        f"{label} removed {count} (e.g. {space.examples[label]})"
        for label, count in space.dropped.most_common()
    )
    return (
        f"no layout passes the framework rules: all {space.considered} candidates break "
        f"one: {rules}. Try another GPU count, batch or sequence length, or fewer fixed knobs"
    )


def _memory_message(
    space: Enumeration,
    misses: list[_Miss],
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    headroom_gib: float,
    fixed: dict[str, Any] | None,
) -> str:
    closest = min(misses, key=lambda m: m.excess_gib)
    capacity = closest.estimate.memory.capacity_gib
    rules = ", ".join(f"{label} {count}" for label, count in space.dropped.most_common())
    layout = closest.estimate
    suggestions = [f"more GPUs (e.g. {2 * cluster.num_gpus})"]
    fixed = fixed or {}
    if layout.config["recompute"] != "full":
        suggestions.append(
            "full recomputation" + (" (recompute is fixed)" if "recompute" in fixed else "")
        )
    suggestions.append(f"a shorter sequence than {workload.seq_len}")
    if layout.config["mbs"] > 1:
        suggestions.append(f"a smaller micro-batch than {layout.config['mbs']}")
    if headroom_gib > 0:
        suggestions.append(f"less headroom than {headroom_gib:g} GiB")
    suggestions.append("optimizer offload")
    if layout.config["model_spec"].get("moe") and "ep" not in fixed:
        suggestions.append(
            "expert parallelism across nodes (--fix ep=N; by default expert groups stay "
            "inside a node)"
        )
    return (
        f"no layout fits in memory: of {space.considered} candidates "
        f"{len(space.layouts)} pass the rules"
        + (f" (removed per rule: {rules})" if rules else "")
        + f" and none fits in {capacity:.2f} GiB per GPU"
        + (f" less {headroom_gib:g} GiB headroom" if headroom_gib else "")
        + f". Closest: {layout_label(layout.config)} needs {layout.memory.peak_gib:.2f} GiB on "
        f"stage {closest.stage}, {closest.excess_gib:.2f} GiB over. Would change it: "
        + ", ".join(suggestions)
        + "."
    )
