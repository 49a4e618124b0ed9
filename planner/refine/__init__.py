"""Optuna refinement of the solver's plans against the full cost model.

The solver picks degrees, micro-batch, recomputation and (un)interleaving from a coarse
grid; refinement searches the neighbourhood of its best plans over the knobs the cost
model prices but the solver fixes or samples coarsely (``space``), scoring each trial with
``estimate()`` (``objective``), in a study stored in Optuna storage that several workers
can share (``study``, ``storage``), and reports every trial, the best plan(s) and the
gain (``result``). Typical use::

    result = plan(PlanRequest(model=m, cluster=c, workload=w))
    problem = RefineProblem(model=m, cluster=c, workload=w, seeds=seeds_from_plans(result.plans))
    refined = refine(problem, trials=50, storage="sqlite:///studies.db")
    refined.gain_pct, refined.best[0].config

(``plan(PlanRequest(..., refine=RefineOptions(trials=50)))`` runs the same as a step.)

A worker elsewhere joins with the study name alone: ``join_study(name, storage=url)``
then ``run_trials(...)`` (``autopar refine-worker --study NAME --storage URL``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from planner.refine.problem import OBJECTIVES, RefineProblem, Seed, parse_objectives
from planner.resolved import ResolvedConfig
from planner.settings import database_url

if TYPE_CHECKING:
    from planner.refine.objective import MEMORY_CONSTRAINT, Objective, evaluate
    from planner.refine.result import (
        RefinedPlan,
        RefineResult,
        TrialCounts,
        TrialRecord,
        collect,
        pareto_front,
    )
    from planner.refine.sampler import NeighbourhoodSampler, make_sampler, neighbours
    from planner.refine.space import NOT_REFINED, Space, framework_knobs
    from planner.refine.storage import masked, open_storage
    from planner.refine.study import Callback, create_study, join_study, run_trials

_EXPORTS = {
    "planner.refine.objective": ("MEMORY_CONSTRAINT", "Objective", "evaluate"),
    "planner.refine.result": (
        "RefinedPlan", "RefineResult", "TrialCounts", "TrialRecord", "collect", "pareto_front",
    ),
    "planner.refine.sampler": ("NeighbourhoodSampler", "make_sampler", "neighbours"),
    "planner.refine.space": ("NOT_REFINED", "Space", "framework_knobs"),
    "planner.refine.storage": ("masked", "open_storage"),
    "planner.refine.study": ("Callback", "create_study", "join_study", "run_trials"),
}  # fmt: skip
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    """The public names, imported from their module on first use: Optuna and SQLAlchemy
    (about a quarter of a second) load only when refinement runs, not with every plan."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


class _PlanLike(Protocol):
    """What a seed is read from: ``planner.plan.PlanEntry`` (config, time, memory)."""

    @property
    def config(self) -> ResolvedConfig: ...
    @property
    def time(self) -> Any: ...
    @property
    def memory(self) -> Any: ...


def seeds_from_plans(plans: Sequence[_PlanLike]) -> tuple[Seed, ...]:
    """The solver's plans (best first) as seeds: their layouts and predictions."""
    return tuple(
        Seed(
            layout=p.config.layout.model_dump(mode="json"),
            step_time_s=p.time.step_time_s,
            tokens_per_s=p.time.tokens_per_s,
            headroom_gib=p.memory.headroom_gib,
        )
        for p in plans
    )


def refine(
    problem: RefineProblem,
    *,
    trials: int,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int | None = 0,
    callbacks: Sequence[Callback] = (),
) -> RefineResult:
    """Create (or resume) the study, run ``trials`` trials here, and collect the study."""
    from planner.refine.result import collect
    from planner.refine.storage import masked
    from planner.refine.study import create_study, run_trials

    url = storage or database_url()
    study = create_study(problem, storage=url, study_name=study_name, seed=seed)
    run_trials(study, problem, trials=trials, callbacks=callbacks)
    return collect(study, problem, storage=masked(url))


__all__ = [
    "MEMORY_CONSTRAINT",
    "NOT_REFINED",
    "OBJECTIVES",
    "Callback",
    "NeighbourhoodSampler",
    "Objective",
    "RefineProblem",
    "RefineResult",
    "RefinedPlan",
    "Seed",
    "Space",
    "TrialCounts",
    "TrialRecord",
    "collect",
    "create_study",
    "evaluate",
    "framework_knobs",
    "join_study",
    "make_sampler",
    "masked",
    "neighbours",
    "open_storage",
    "pareto_front",
    "parse_objectives",
    "refine",
    "run_trials",
    "seeds_from_plans",
]
