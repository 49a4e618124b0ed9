"""What a search returns: ranked ``PlanEntry`` records and ``SearchInfo``, as ``PlanResult``.

``PlanResult`` is what ``autopar plan --json`` prints and ``GET /v1/plans/{id}`` returns:
``plans`` (best first), each with the ``config``, ``memory`` and ``time`` blocks exactly
as ``autopar estimate --json`` gives them for that layout plus an ``explanation``, and
``search`` (solver, whether the ranking is proven optimal, wall time, how many layouts
were considered and fit).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from planner.experts.load import PlacementSummary
from planner.predict import Estimate, MemoryReport, TimeReport
from planner.resolved import CONFIG_SCHEMA, ResolvedConfig
from planner.scattering.result import ScatterSummary
from planner.search.length_pricing import LengthPricing


class Uncertainty(BaseModel):
    # a prediction's band (planner.accuracy.time_band); no docstring: REST schema

    model_config = ConfigDict(frozen=True)

    regime: str
    """compute-bound, communication-bound or host-bound (``planner.accuracy.regime``)."""
    step_time_band: float
    """Relative: the step may be this much shorter or longer than predicted."""
    step_time_range_s: tuple[float, float]
    basis: str


class RobustChoice(BaseModel):
    # with --risk averse: the objective's own best and the best conventional layout

    model_config = ConfigDict(frozen=True)

    best_layout: str
    best_step_s: float
    best_value: float
    """The objective's value of ``best_layout`` (step seconds, or the budget's cost)."""
    conventional_layout: str | None
    """The best layout that breaks no convention (``planner.search.robust``); None when
    none fits."""
    conventional_step_s: float | None
    conventional_value: float | None
    band: float
    """The step-time band of the best plan's prediction."""
    regime: str


class PlanEntry(BaseModel):
    # one ranked layout: its estimate's blocks, why it ranks there, what training costs
    # (no docstring: it would become the REST schema's description)

    model_config = ConfigDict(frozen=True)

    config: Annotated[ResolvedConfig, CONFIG_SCHEMA]
    memory: MemoryReport
    time: TimeReport
    explanation: str
    uncertainty: Uncertainty | None = None
    """How far the step time may be off: the band for this framework and regime."""
    training: dict[str, float] | None = None
    """With a token budget: token_budget, steps, hours, gpu_hours, and with a price
    price_per_gpu_hour and cost (steps x step time x GPUs x price per GPU-hour). Left out
    of the JSON when there is no budget, so a plan is exactly config, memory, time and
    explanation then."""
    scattering: ScatterSummary | None = None
    """On the best plan, when the plan was asked about variable sequence lengths
    (``planner.scattering.for_plan``); left out of the JSON otherwise."""
    length_pricing: LengthPricing | None = None
    """With a length distribution (``autopar plan --length-dist``): how this layout's step
    was priced over it (``planner.search.length_pricing``); left out of the JSON otherwise."""
    expert_placement: PlacementSummary | None = None
    """With MoE routing statistics (``autopar plan --routing``): the expert placement this
    layout's EP degree was timed with; left out of the JSON otherwise."""

    @model_serializer(mode="wrap")
    def _without_empty_training(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for optional in (
            "training",
            "expert_placement",
            "scattering",
            "length_pricing",
            "uncertainty",
        ):
            if data.get(optional) is None:
                data.pop(optional, None)
        return data

    @classmethod
    def of(
        cls,
        estimate: Estimate,
        *,
        explanation: str,
        training: dict[str, float] | None = None,
        length_pricing: LengthPricing | None = None,
        uncertainty: Uncertainty | None = None,
    ) -> PlanEntry:
        return cls(
            config=estimate.config,
            memory=estimate.memory,
            time=estimate.time,
            explanation=explanation,
            training=training,
            length_pricing=length_pricing,
            uncertainty=uncertainty,
        )

    @property
    def estimate(self) -> Estimate:
        """The layout's ``Estimate`` (the config, memory and time blocks)."""
        return Estimate(config=self.config, memory=self.memory, time=self.time)


class SearchInfo(BaseModel):
    # how the search went (no docstring: it would become the REST schema's description)

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
    """Layouts proposed by the stage-partition solver (layer split, recompute blocks);
    counted in ``layouts_considered`` and ``layouts_legal`` too."""
    headroom_gib: float = 0.0
    """GiB every plan keeps free on every GPU (the fits test: peak + this <= capacity)."""
    headroom_basis: str = ""
    """Why that much: the framework's default margin and the error it covers, or as asked."""
    risk: str = "neutral"
    """averse: plans inside the best one's error band ordered by robustness
    (``planner.search.robust``); neutral: by the objective alone."""
    robust: RobustChoice | None = None
    """With ``risk`` averse: the objective's own best and the best conventional layout."""

    @property
    def headroom_words(self) -> str:
        """'headroom kept: 2.70 GiB (why)', as every plan shows it."""
        return f"headroom kept: {self.headroom_gib:.2f} GiB ({self.headroom_basis})"


class PlanResult(BaseModel):
    # the ranked plans, best first, and how the search went (no docstring: see above)

    model_config = ConfigDict(frozen=True)

    plans: list[PlanEntry]
    search: SearchInfo
