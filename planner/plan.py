"""plan(): the top layouts for a model, cluster and workload, as a pydantic result.

``PlanResult`` is what ``autopar plan --json`` prints: ``plans`` (best first), each with
the ``config``, ``memory`` and ``time`` blocks exactly as ``autopar estimate --json`` gives
them for that layout plus an ``explanation``, and ``search`` (solver, whether the ranking
is proven optimal, wall time, how many layouts were considered and fit). The search
itself is ``planner.search.driver``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from planner.cost.frameworks import Framework
from planner.predict import MemoryReport, TimeReport
from planner.search.driver import Infeasible, search
from planner.search.progress import Progress, ProgressCallback
from planner.specs.hardware import ClusterSpec
from planner.specs.limits import check_budget, check_headroom, check_time_limit, check_top_k
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec

__all__ = ["Infeasible", "PlanEntry", "PlanResult", "Progress", "SearchInfo", "plan"]

DEFAULT_TIME_LIMIT_S = 60.0


class PlanEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    config: dict[str, Any]
    memory: MemoryReport
    time: TimeReport
    explanation: str
    training: dict[str, float] | None = None
    """With a token budget: token_budget, steps, hours, gpu_hours, and with a price
    price_per_gpu_hour and cost (steps x step time x GPUs x price per GPU-hour). Left out
    of the JSON when there is no budget, so a plan is exactly config, memory, time and
    explanation then."""

    @model_serializer(mode="wrap")
    def _without_empty_training(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if data.get("training") is None:
            data.pop("training", None)
        return data


class SearchInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    solver: str
    objective: str = "throughput"
    optimal: bool
    """The ranking is proven and every candidate was evaluated within the time limit."""
    wall_s: float
    solver_wall_s: float
    gpus_searched: list[int] = []
    """Cluster sizes searched (cost and min-gpus search sizes up to the cluster)."""
    layouts_considered: int
    layouts_legal: int
    layouts_evaluated: int
    layouts_feasible: int
    layouts_timed: int = 0
    """Layouts that fit whose step time was simulated: the others have a lower bound on
    their objective above the top_k-th best (``planner.search.tabulate``)."""
    layouts_split_solver: int = 0
    """Layouts proposed by the stage-partition solver (layer split, recompute blocks)."""


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
    price_per_gpu_hour: float | None = None,
    token_budget: float | None = None,
    deadline_hours: float | None = None,
    progress: ProgressCallback | None = None,
) -> PlanResult:
    """The ``top_k`` best layouts that fit, best first; raises ``Infeasible`` if none.

    ``objective``: ``throughput`` (shortest step), ``cost`` (cheapest ``token_budget``
    at ``price_per_gpu_hour``, over cluster sizes up to ``cluster``) or ``min-gpus``
    (fewest GPUs that train ``token_budget`` tokens within ``deadline_hours``); see
    ``planner.search.objectives``.

    ``progress``, if given, is called with a :class:`Progress` as the search goes: its
    phase, candidate layouts evaluated out of the total, layouts timed
    (``planner.search.progress``).

    ``time_limit_s`` (``planner.specs.limits``: 0.1 s to an hour) is a wall-clock deadline
    for the whole search; past it the best plans found are returned, labelled not proven
    optimal (``TimeLimitReached`` if none fits by then).
    """
    check_time_limit(time_limit_s)
    check_top_k(top_k)
    check_headroom(headroom_gib)
    check_budget(
        token_budget=token_budget,
        price_per_gpu_hour=price_per_gpu_hour,
        deadline_hours=deadline_hours,
    )
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
        price_per_gpu_hour=price_per_gpu_hour,
        token_budget=token_budget,
        deadline_hours=deadline_hours,
        progress=progress,
    )
    plans = [
        PlanEntry(
            config=p.estimate.config,
            memory=p.estimate.memory,
            time=p.estimate.time,
            explanation=p.explanation,
            training=p.training,
        )
        for p in result.plans
    ]
    return PlanResult(plans=plans, search=SearchInfo(**result.search))
