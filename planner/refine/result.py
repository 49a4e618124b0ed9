"""The refinement result: every trial on record, the best plan(s), the gain over the solver.

``collect(study, problem)`` reads every trial of the study (all workers', in number order)
into a ``TrialRecord`` and counts them by status: feasible, infeasible (over memory,
completed with a violated constraint), illegal (a framework rule broken: pruned), failed
(an error, or a worker that stopped answering: see ``storage.GRACE_PERIOD_S``), running
and waiting (enqueued seeds not yet taken). Nothing is dropped: the counts add up to
``total``.

Best plans, from the feasible trials only, each re-estimated for its full report:

  one objective    the trial with the highest value (ties: more headroom, then the
                   earlier trial)
  several          the Pareto front: every feasible trial that no other feasible trial
                   matches or beats on all objectives and beats on one; a layout tried
                   twice appears once; sorted by throughput when it is an objective

Gain: the solver's best predicted step time (seed 0) minus that of the fastest best plan,
in seconds and as a percentage of the former; 0 when refinement found nothing faster.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict

from planner.predict import MemoryReport, TimeReport
from planner.refine.objective import evaluate
from planner.refine.problem import RefineProblem
from planner.refine.space import NOT_REFINED, Space
from planner.resolved import CONFIG_SCHEMA, ResolvedConfig

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

STATUSES = ("feasible", "infeasible", "illegal", "failed", "running", "waiting")


class TrialRecord(BaseModel):
    """One trial as the storage holds it."""

    model_config = ConfigDict(frozen=True)

    number: int
    state: str
    """Optuna's state: complete, pruned, fail, running or waiting."""
    status: str
    """One of ``STATUSES``."""
    reason: str | None = None
    seed_rank: int | None = None
    """The solver plan this trial reproduces (0 = the solver's best), for seeded trials."""
    worker: str | None = None
    proposed_by: str | None = None
    """enqueued (a solver plan), tpe, or 'neighbour of N: PARAM' (``refine.sampler``)."""
    params: dict[str, Any]
    layout: dict[str, Any] | None = None
    values: list[float] | None = None
    step_time_s: float | None = None
    tokens_per_s: float | None = None
    peak_gib: float | None = None
    headroom_gib: float | None = None
    duration_s: float | None = None


class TrialCounts(BaseModel):
    model_config = ConfigDict(frozen=True)

    total: int
    seeds: int
    feasible: int
    infeasible: int
    illegal: int
    failed: int
    running: int
    waiting: int


class RefinedPlan(BaseModel):
    """A best plan: the trial, what it changed from the solver's best, its predictions."""

    model_config = ConfigDict(frozen=True)

    trial: int
    seed_rank: int | None
    changes: dict[str, list[Any]]
    """Knob -> [solver's best plan, this plan], for every knob that differs."""
    step_gain_s: float
    """Solver's best step time minus this plan's (positive: faster)."""
    step_gain_pct: float
    config: Annotated[ResolvedConfig, CONFIG_SCHEMA]
    memory: MemoryReport
    time: TimeReport


class SolverBest(BaseModel):
    model_config = ConfigDict(frozen=True)

    step_time_s: float
    tokens_per_s: float
    headroom_gib: float
    layout: dict[str, Any]


class RefineResult(BaseModel):
    """What ``autopar plan --refine`` adds under "refinement" and ``refine-worker`` prints."""

    model_config = ConfigDict(frozen=True)

    study_name: str
    storage: str
    objectives: list[str]
    space: dict[str, list[Any]]
    not_refined: dict[str, str]
    counts: TrialCounts
    solver_best: SolverBest
    best: list[RefinedPlan]
    """One plan for one objective, the Pareto front for several; empty if none fits."""
    gain_s: float | None
    gain_pct: float | None
    trials: list[TrialRecord]


def collect(study: optuna.Study, problem: RefineProblem, *, storage: str) -> RefineResult:
    """Read the whole study into a ``RefineResult`` (see the module docstring)."""
    records = [_record(trial) for trial in study.get_trials(deepcopy=False)]
    records.sort(key=lambda r: r.number)
    counts = {status: sum(r.status == status for r in records) for status in STATUSES}
    seed = problem.seeds[0]
    feasible = [r for r in records if r.status == "feasible" and r.values is not None]
    chosen = _best(feasible, problem)
    best = [_refined(record, problem) for record in chosen]
    fastest = min(best, key=lambda p: p.time.step_time_s, default=None)
    gain_s = None if fastest is None else round(fastest.step_gain_s, 6)
    return RefineResult(
        study_name=study.study_name,
        storage=storage,
        objectives=list(problem.objectives),
        space=Space(problem).describe(),
        not_refined=NOT_REFINED,
        counts=TrialCounts(
            total=len(records), seeds=sum(r.seed_rank is not None for r in records), **counts
        ),
        solver_best=SolverBest(
            step_time_s=seed.step_time_s,
            tokens_per_s=seed.tokens_per_s,
            headroom_gib=seed.headroom_gib,
            layout=seed.layout,
        ),
        best=best,
        gain_s=gain_s,
        gain_pct=None if fastest is None else fastest.step_gain_pct,
        trials=records,
    )


def pareto_front(points: list[tuple[float, ...]]) -> list[int]:
    """Indices of the non-dominated points (every coordinate maximised), in input order."""
    front = []
    for i, p in enumerate(points):
        dominated = any(
            all(a >= b for a, b in zip(q, p, strict=True)) and q != p
            for j, q in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def _best(feasible: list[TrialRecord], problem: RefineProblem) -> list[TrialRecord]:
    unique: dict[str, TrialRecord] = {}
    for record in feasible:  # in number order: the first trial of a layout stays
        unique.setdefault(json.dumps(record.layout, sort_keys=True), record)
    candidates = list(unique.values())
    if not candidates:
        return []
    if len(problem.objectives) == 1:
        top = max(
            candidates,
            key=lambda r: (r.values[0], r.headroom_gib or 0.0, -r.number),  # type: ignore[index]
        )
        return [top]
    points = [tuple(r.values or ()) for r in candidates]
    front = [candidates[i] for i in pareto_front(points)]
    if "throughput" in problem.objectives:
        at = problem.objectives.index("throughput")
        front.sort(key=lambda r: (-(r.values or [])[at], r.number))
    return front


def _refined(record: TrialRecord, problem: RefineProblem) -> RefinedPlan:
    assert record.layout is not None
    outcome = evaluate(problem, record.layout)
    assert outcome.estimate is not None, f"trial {record.number} no longer evaluates"
    result = outcome.estimate
    solver = problem.seeds[0]
    changes = {
        key: [solver.layout.get(key), value]
        for key, value in record.layout.items()
        if solver.layout.get(key) != value
    }
    gain = solver.step_time_s - result.time.step_time_s
    return RefinedPlan(
        trial=record.number,
        seed_rank=record.seed_rank,
        changes=changes,
        step_gain_s=round(gain, 6),
        step_gain_pct=round(100 * gain / solver.step_time_s, 3),
        config=result.config,
        memory=result.memory,
        time=result.time,
    )


def _record(trial: FrozenTrial) -> TrialRecord:
    from optuna.trial import TrialState  # with refinement only: Optuna loads slowly

    attrs = trial.user_attrs
    state = trial.state
    status = attrs.get("status")
    reason = attrs.get("reason")
    if state == TrialState.FAIL:
        status = "failed"
        reason = reason or str(
            trial.system_attrs.get("fail_reason", "the trial raised, or its worker stopped")
        )
    elif state == TrialState.RUNNING:
        status = "running"
    elif state == TrialState.WAITING:
        status = "waiting"
    elif status is None:  # completed or pruned without our attributes: not our objective
        status = "failed"
        reason = f"trial ended {state.name.lower()} without autopar's record"
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return TrialRecord(
        number=trial.number,
        state=state.name.lower(),
        status=status,
        reason=reason,
        seed_rank=attrs.get("seed_rank"),
        worker=attrs.get("worker"),
        proposed_by=attrs.get("proposed_by"),
        params=dict(trial.params),
        layout=attrs.get("layout"),
        values=list(trial.values) if trial.values is not None else None,
        **attrs.get("prediction", {}),
        duration_s=round(duration, 4) if duration is not None else None,
    )


__all__ = [
    "RefineResult",
    "RefinedPlan",
    "SolverBest",
    "TrialCounts",
    "TrialRecord",
    "collect",
    "pareto_front",
]
