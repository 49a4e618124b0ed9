"""plan(): the top layouts for a model, cluster and workload, as a pydantic result.

``PlanResult`` is what ``autopar plan --json`` prints: ``plans`` (best first), each with
the ``config``, ``memory`` and ``time`` blocks exactly as ``autopar estimate --json`` gives
them for that layout plus an ``explanation``, and ``search`` (solver, whether the ranking
is proven optimal, wall time, how many layouts were considered and fit). The search
itself is ``planner.search.driver``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from planner.cost.frameworks import Framework
from planner.predict import MemoryReport, TimeReport
from planner.search.driver import Infeasible, search
from planner.specs.hardware import ClusterSpec
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec

__all__ = ["Infeasible", "PlanEntry", "PlanResult", "SearchInfo", "plan"]

DEFAULT_TIME_LIMIT_S = 60.0


class PlanEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    config: dict[str, Any]
    memory: MemoryReport
    time: TimeReport
    explanation: str


class SearchInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    solver: str
    optimal: bool
    """The ranking is proven and every candidate was evaluated within the time limit."""
    wall_s: float
    solver_wall_s: float
    layouts_considered: int
    layouts_legal: int
    layouts_evaluated: int
    layouts_feasible: int


class PlanResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    plans: list[PlanEntry]
    search: SearchInfo


def plan(
    *,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    framework: Framework = "megatron",
    objective: str = "throughput",
    fixed: dict[str, Any] | None = None,
    maxima: dict[str, int] | None = None,
    headroom_gib: float = 0.0,
    top_k: int = 5,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
) -> PlanResult:
    """The ``top_k`` fastest layouts that fit, best first; raises ``Infeasible`` if none."""
    result = search(
        model,
        cluster,
        workload,
        framework=framework,
        objective=objective,
        fixed=fixed,
        maxima=maxima,
        headroom_gib=headroom_gib,
        top_k=top_k,
        time_limit_s=time_limit_s,
    )
    plans = [
        PlanEntry(
            config=p.estimate.config,
            memory=p.estimate.memory,
            time=p.estimate.time,
            explanation=p.explanation,
        )
        for p in result.plans
    ]
    return PlanResult(plans=plans, search=SearchInfo(**result.search))
