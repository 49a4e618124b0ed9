"""``memplan``: peak memory of a stage (or a real snapshot) four ways, and what to recompute
or offload under a budget. Pydantic results; ``autopar memplan --json`` prints them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from planner.cost.frameworks import DEFAULT_RUNTIME, Framework, LayerSpec, Runtime
from planner.cost.memory import gib
from planner.errors import SpecError
from planner.memplan.analysis import TraceAnalysis, allocator_advice, analyse, fragmentation
from planner.memplan.budget import BudgetChoice, choose
from planner.memplan.lifetimes import stage_trace
from planner.memplan.settings import EMITTERS, FrameworkSetting, framework_setting
from planner.memplan.snapshot import read_snapshot
from planner.predict import memory_stages, prepare
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import ParallelConfig
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec


class PeakReport(BaseModel):
    """One trace's peak memory, GiB (2^30 bytes)."""

    model_config = ConfigDict(frozen=True)

    live_gib: float
    """Largest sum of live (512-byte rounded) sizes: a lower bound on any allocator."""
    allocator_gib: float
    """Simulated caching allocator, default settings (``max_memory_reserved``)."""
    allocator_expandable_gib: float
    """Simulated caching allocator with ``expandable_segments:True``."""
    allocator_allocated_gib: float
    """Simulated ``max_memory_allocated`` (default settings)."""
    fragmentation: float
    fragmentation_expandable: float
    planned_gib: float
    plan_status: str
    plan_gap: float
    plan_lower_bound_gib: float
    warm_start_gib: float
    solve_s: float
    tensors: int
    events: int
    measured_reserved_gib: float | None = None
    """Snapshots: the reserved peak the trace's own segment events reach."""
    analytical_allocated_gib: float | None = None
    """Model stages: the memory model's allocated peak (``autopar estimate``)."""
    advice: str


class BudgetReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    budget_gib: float
    status: str
    added_time_s: float | None
    peak_gib: float | None
    recompute_layers: list[int]
    offload_layers: list[int]
    binding: str | None
    host_link: str
    solve_s: float
    gap: float
    """(added time - its proven lower bound) / added time."""


class StagePlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    stage: int | None
    peaks: PeakReport
    budget: BudgetReport | None = None


class MemoryPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: Literal["model", "snapshot"]
    config: dict[str, Any]
    stages: list[StagePlan]
    framework_settings: dict[str, FrameworkSetting] = {}
    """Under a budget: the choice as each emitter's own setting, priced on the stages
    planned (``planner.memplan.settings``); empty without a budget."""


def _peaks(analysis: TraceAnalysis, events: int, **extra: float | None) -> PeakReport:
    live = analysis.live_peak
    return PeakReport(
        live_gib=gib(live),
        allocator_gib=gib(analysis.default.peak_reserved),
        allocator_expandable_gib=gib(analysis.expandable.peak_reserved),
        allocator_allocated_gib=gib(analysis.default.peak_allocated),
        fragmentation=round(fragmentation(analysis.default.peak_reserved, live), 4),
        fragmentation_expandable=round(fragmentation(analysis.expandable.peak_reserved, live), 4),
        planned_gib=gib(analysis.planned_peak),
        plan_status=analysis.plan_status,
        plan_gap=round(analysis.plan_gap, 4),
        plan_lower_bound_gib=gib(analysis.plan_bound),
        warm_start_gib=gib(analysis.warm_start_peak),
        solve_s=round(analysis.solve_s, 3),
        tensors=analysis.tensors,
        events=events,
        advice=allocator_advice(analysis),
        **extra,
    )


def memplan(
    *,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    layout: ParallelConfig,
    framework: Framework = "megatron",
    state_layout_name: str | None = None,
    flash_attention: bool = True,
    runtime: Runtime = DEFAULT_RUNTIME,
    layer_spec: LayerSpec = "transformer_engine",
    stage: int | None = None,
    budget_gib: float | None = None,
    time_limit_s: float = 10.0,
) -> MemoryPlan:
    """Peak memory of one GPU of each pipeline stage (or only ``stage``) four ways, and
    under ``budget_gib`` the cheapest recompute/offload choice (module docstring).

    Raises ``SpecError`` for a layout that breaks a rule or a stage out of range.
    """
    prepared = prepare(
        model=model, cluster=cluster, workload=workload, layout=layout, framework=framework,
        state_layout_name=state_layout_name, flash_attention=flash_attention,
        runtime=runtime, layer_spec=layer_spec,
    )  # fmt: skip
    pp = prepared.layout.pp
    if stage is not None and not 0 <= stage < pp:
        raise SpecError(f"--stage: {stage} is not a pipeline stage of pp {pp} (0..{pp - 1})")
    if budget_gib is not None and budget_gib <= 0:
        raise SpecError(f"--budget-gib: must be positive, got {budget_gib}")
    analytical = memory_stages(prepared)
    stages, choices = [], []
    for rank in range(pp) if stage is None else [stage]:
        trace = stage_trace(prepared, stage=rank)
        analysis = analyse(
            trace.events, chains=trace.chains, ties=trace.ties, time_limit_s=time_limit_s
        )
        budget = None
        if budget_gib is not None:
            choice = choose(
                prepared, trace, budget_bytes=budget_gib * 2**30, time_limit_s=time_limit_s
            )
            budget = _budget_report(budget_gib, choice)
            choices.append((rank, choice))
        peaks = _peaks(
            analysis, len(trace.events), analytical_allocated_gib=gib(analytical[rank].allocated)
        )
        stages.append(StagePlan(stage=rank, peaks=peaks, budget=budget))
    settings = {}
    if budget_gib is not None:
        for emitter in EMITTERS:
            setting = framework_setting(
                emitter, model=prepared.model, layout=prepared.layout, choices=choices,
                budget_bytes=budget_gib * 2**30,
            )  # fmt: skip
            if setting is not None:
                settings[emitter] = setting
    config = {
        "model": model.name,
        "cluster": cluster.name,
        "gpu": cluster.gpu.id,
        "num_gpus": cluster.num_gpus,
        "framework": prepared.framework,
        "microbatches": prepared.ctx.microbatches,
        "seq_len": workload.seq_len,
        **prepared.layout.model_dump(mode="json"),
    }
    return MemoryPlan(source="model", config=config, stages=stages, framework_settings=settings)


def memplan_snapshot(path: Path, *, time_limit_s: float = 10.0) -> MemoryPlan:
    """The same analysis on a ``torch.cuda.memory._dump_snapshot`` file."""
    snapshot = read_snapshot(path)
    analysis = analyse(snapshot.events, time_limit_s=time_limit_s)
    peaks = _peaks(
        analysis, len(snapshot.events), measured_reserved_gib=gib(snapshot.trace_reserved_peak)
    )
    config = {
        "snapshot": snapshot.source,
        "device": snapshot.device,
        "expandable_segments": snapshot.expandable_segments,
        "untracked_frees": snapshot.untracked_frees,
        "actions": snapshot.actions,
    }
    return MemoryPlan(source="snapshot", config=config, stages=[StagePlan(stage=None, peaks=peaks)])


def _budget_report(budget_gib: float, choice: BudgetChoice) -> BudgetReport:
    return BudgetReport(
        budget_gib=budget_gib,
        status=choice.status,
        added_time_s=None if choice.added_s is None else round(choice.added_s, 4),
        peak_gib=None if choice.peak_bytes is None else gib(choice.peak_bytes),
        recompute_layers=list(choice.recompute_layers),
        offload_layers=list(choice.offload_layers),
        binding=choice.binding,
        host_link=choice.host_link,
        solve_s=round(choice.solve_s, 3),
        gap=round(choice.gap, 4),
    )
