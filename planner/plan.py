"""plan(): the top layouts for one ``PlanRequest``, then the steps the request asks for.

Steps, in order:

1. the search (``planner.search.driver``): the ``top_k`` best layouts that fit, ranked,
   each with the ``config``, ``memory`` and ``time`` blocks exactly as ``autopar estimate
   --json`` gives them and an ``explanation``, and ``search`` (solver, whether the ranking
   is proven optimal, wall time, how many layouts were considered and fit);
2. with ``request.refine``: an Optuna study seeded with those plans
   (``planner.refine``), run here for the requested trials;
3. with ``request.hardware``: the top plans measured with short real training steps on
   this machine and ranked again (``planner.refine.hardware``; plain PyTorch, so the
   request's framework must be ``pytorch``);
4. with ``request.lengths``: the search prices every layout over those variable lengths
   (``planner.search.length_pricing``: documents packed into samples of ``seq_len``
   tokens, attention priced per document, and Megatron-Core's hybrid context parallel
   where the framework and layout run it), so each plan's ``time`` is its expected step
   and its ``length_pricing`` says how; then the best plan's batches are scattered over
   SP groups of different sizes and compared with the best static degree
   (``planner.scattering.for_plan``), and the best plan carries that as ``scattering``,
   with the search's verdict on its layout deciding ``wins``.

``PlanOutcome`` is what ``autopar plan --json`` prints: the search's ``PlanResult``
(``plans``, ``search``) plus ``refinement`` and ``hardware`` when those steps ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import SerializerFunctionWrapHandler, model_serializer

from planner.errors import SpecError
from planner.experts.load import ExpertLoads
from planner.refine import RefineProblem, parse_objectives, seeds_from_plans
from planner.refine.hardware import HardwareRanking, measure_candidates
from planner.refine.result import RefineResult
from planner.scattering.for_plan import (
    check_lengths_option,
    pricing_lengths,
    scatter_for_plan,
    with_search_verdict,
)
from planner.search.driver import Infeasible, search
from planner.search.length_pricing import FIXED_LENGTH, DistributionTimer, Timer, length_mix
from planner.search.objectives import resized
from planner.search.progress import Progress, ProgressCallback
from planner.search.results import PlanEntry, PlanResult, SearchInfo
from planner.settings import database_url
from planner.specs.limits import check_budget, check_headroom, check_time_limit, check_top_k
from planner.specs.request import (
    DEFAULT_TIME_LIMIT_S,
    HardwareRankOptions,
    LengthsOption,
    PlanRequest,
    RefineOptions,
)

if TYPE_CHECKING:
    from planner.refine.study import Callback

__all__ = [
    "DEFAULT_TIME_LIMIT_S",
    "HardwareRankOptions",
    "Infeasible",
    "LengthsOption",
    "PlanEntry",
    "PlanOutcome",
    "PlanRequest",
    "PlanResult",
    "Progress",
    "RefineOptions",
    "SearchInfo",
    "plan",
]

MEASURED_FRAMEWORK = "pytorch"
"""The software the hardware ranking runs (``benchmarks/measure/train_step.py``)."""


BALANCED_ROUTING_NOTE = (
    "MoE routing assumed balanced (every EP rank gets the mean tokens, uniform all-to-all "
    "destinations); pass --routing STATS to time each EP degree with its expert placement"
)


class PlanOutcome(PlanResult):
    """The search's plans and, when the request asked for them, refinement and measurement."""

    refinement: RefineResult | None = None
    hardware: HardwareRanking | None = None
    routing_note: str | None = None
    """For an MoE model planned without routing statistics: that routing was assumed
    balanced."""

    @model_serializer(mode="wrap")
    def _without_steps_not_run(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for step in ("refinement", "hardware", "routing_note"):
            if data.get(step) is None:
                data.pop(step, None)
        return data

    def best_entry(self) -> dict[str, Any]:
        """The plan to launch, as JSON: the fastest refined plan when refinement found one
        (of the front, for several objectives), else the solver's best (the whole result,
        which ``planner.emit`` reads the first plan of). A refined plan on the same number
        of GPUs takes the solver's best plan's ``scattering`` block with it."""
        if self.refinement is not None:
            fastest = min(self.refinement.best, key=lambda p: p.time.step_time_s, default=None)
            if fastest is not None:
                entry = fastest.model_dump(mode="json")
                scattering = self.plans[0].scattering if self.plans else None
                # the comparison depends on the cluster size and workload, not the layout
                if scattering is not None and entry["config"]["num_gpus"] == scattering.gpus:
                    entry["scattering"] = scattering.model_dump(mode="json")
                return entry
        return PlanResult.model_dump(self, mode="json")


def plan(
    request: PlanRequest,
    *,
    progress: ProgressCallback | None = None,
    refine_callbacks: Sequence[Callback] = (),
) -> PlanOutcome:
    """The ``top_k`` best layouts that fit, best first; raises ``Infeasible`` if none.

    ``request.objective``: ``throughput`` (shortest step), ``cost`` (cheapest
    ``token_budget`` at ``price_per_gpu_hour``, over cluster sizes up to the cluster) or
    ``min-gpus`` (fewest GPUs that train ``token_budget`` tokens within
    ``deadline_hours``); see ``planner.search.objectives``.

    ``progress``, if given, is called with a :class:`Progress` as the search goes: its
    phase, candidate layouts evaluated out of the total, layouts timed
    (``planner.search.progress``). ``refine_callbacks`` are called after every
    refinement trial (Optuna's ``(study, trial)``).

    ``request.time_limit_s`` (``planner.specs.limits``: 0.1 s to an hour) is a wall-clock
    deadline for the whole search; past it the best plans found are returned, labelled not
    proven optimal (``TimeLimitReached`` if none fits by then).
    """
    check_time_limit(request.time_limit_s)
    check_top_k(request.top_k)
    if request.headroom_gib is not None:
        check_headroom(request.headroom_gib)
    check_budget(
        token_budget=request.token_budget,
        price_per_gpu_hour=request.price_per_gpu_hour,
        deadline_hours=request.deadline_hours,
    )
    if request.refine is not None:
        parse_objectives(request.refine.objectives)  # a bad name fails before the search
    if request.hardware is not None:
        _check_hardware(request, request.hardware)
    if request.lengths is not None:
        check_lengths_option(request.lengths, gpus=request.cluster.num_gpus)
        check_refine_with_lengths(request)
    loads = None
    if request.routing is not None:
        loads = ExpertLoads(model=request.model, cluster=request.cluster, routing=request.routing)
    timer = FIXED_LENGTH if request.lengths is None else _length_timer(request, request.lengths)
    result = search(
        request.model,
        request.cluster,
        request.workload,
        framework=request.framework,
        framework_version=request.framework_version,
        objective=request.objective,
        fixed=request.fixed,
        maxima=request.maxima,
        headroom_gib=request.headroom_gib,
        risk=request.risk,
        top_k=request.top_k,
        time_limit_s=request.time_limit_s,
        price_per_gpu_hour=request.price_per_gpu_hour,
        token_budget=request.token_budget,
        deadline_hours=request.deadline_hours,
        progress=progress,
        expert_load=loads,
        timer=timer,
        runtime=request.runtime,
        layer_spec=request.layer_spec,
    )
    refinement = hardware = None
    if request.refine is not None:
        refinement = _refine(
            request, request.refine, result.plans, refine_callbacks,
            headroom_gib=result.search.headroom_gib,
        )  # fmt: skip
    if request.hardware is not None:
        options = request.hardware
        hardware = measure_candidates(
            [entry.config for entry in result.plans[: options.top]],
            model=request.model, cluster=request.cluster, workload=request.workload,
            device=options.device, steps=options.steps,
        )  # fmt: skip
    plans = result.plans
    if loads is not None:  # the placement each plan was timed with
        plans = [
            entry.model_copy(update={"expert_placement": loads.summary(entry.config.ep)})
            for entry in plans
        ]
    if request.lengths is not None:
        plans = [_with_scattering(request, request.lengths, plans[0]), *plans[1:]]
    balanced = request.model.moe is not None and loads is None
    return PlanOutcome(
        plans=plans, search=result.search, refinement=refinement, hardware=hardware,
        routing_note=BALANCED_ROUTING_NOTE if balanced else None,
    )  # fmt: skip


def check_refine_with_lengths(request: PlanRequest) -> None:
    """Refinement scores trials at the one ``seq_len``; a plan priced over lengths cannot
    mix with it (two different prices), so the pair is refused."""
    if request.refine is not None and request.lengths is not None:
        raise SpecError(
            "--refine: refinement scores layouts at the one --seq-len, while "
            "--length-dist/--seq-lengths prices them over the lengths; give one of them"
        )


def _with_scattering(request: PlanRequest, lengths: LengthsOption, best: PlanEntry) -> PlanEntry:
    config = best.config
    summary = scatter_for_plan(
        lengths,
        model=request.model,
        cluster=resized(request.cluster, config.num_gpus),
        seq_len=config.seq_len,
        global_batch=config.global_batch,
        precision=config.precision,
    )
    pricing = best.length_pricing
    if pricing is not None:
        summary = with_search_verdict(
            summary,
            hybrid=pricing.method == "hybrid_cp",
            static_step_s=pricing.static_step_time_s,
            hybrid_step_s=pricing.hybrid_step_time_s,
            cp_sizes=sorted({b.cp for b in pricing.buckets if b.cp is not None}),
            reason=pricing.reason,
        )
    return best.model_copy(update={"scattering": summary})


def _length_timer(request: PlanRequest, lengths: LengthsOption) -> Timer:
    """The search's pricing over the request's lengths (``planner.search.length_pricing``)."""
    seq_len = request.workload.seq_len
    pieces, source = pricing_lengths(lengths, seq_len=seq_len)
    return DistributionTimer(length_mix(pieces, max_len=seq_len, source=source))


def _check_hardware(request: PlanRequest, options: HardwareRankOptions) -> None:
    if request.framework != MEASURED_FRAMEWORK:
        raise SpecError(
            "--refine-on-hardware measures plain PyTorch training steps: plan with "
            "--framework pytorch so the candidates are layouts that software runs"
        )
    if options.device not in ("cuda", "cpu"):
        raise SpecError(f"--measure-device: '{options.device}' is not cuda or cpu")


def _refine(
    request: PlanRequest,
    options: RefineOptions,
    plans: list[PlanEntry],
    callbacks: Sequence[Callback],
    *,
    headroom_gib: float,
) -> RefineResult:
    """An Optuna study seeded with ``plans`` (best first), ``options.trials`` trials run,
    keeping the headroom the search kept."""
    if not plans:
        raise SpecError("--refine: the solver returned no plan to refine")
    problem = RefineProblem(
        model=request.model,
        cluster=request.cluster,
        workload=request.workload,
        framework=request.framework,
        framework_version=request.framework_version,
        headroom_gib=headroom_gib,
        objectives=parse_objectives(options.objectives),
        seeds=seeds_from_plans(plans[: max(1, options.trials)]),
        runtime=request.runtime,
        layer_spec=request.layer_spec,
    )
    # Optuna and the study storage load here, not with every plan (a quarter of a second)
    import optuna

    from planner.refine.result import collect
    from planner.refine.storage import masked
    from planner.refine.study import create_study, run_trials

    url = options.storage or database_url()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = create_study(problem, storage=url, study_name=options.study_name, seed=0)
    run_trials(study, problem, trials=options.trials, callbacks=list(callbacks))
    return collect(study, problem, storage=masked(url))
