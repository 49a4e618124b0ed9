"""An estimate's memory section with the allocator-simulated peaks (``--memplan``).

``with_simulated`` replays each pipeline stage's tensor lifetimes (``stage_trace``)
through the caching-allocator simulation, with and without expandable segments, and
through the planned placement, and adds the peaks to ``MemoryReport.simulated``.

The fits verdict then uses the simulation where it is validated: the committed H200
allocator snapshots (plain PyTorch training steps, ``benchmarks/memplan.py``) are
reproduced by the simulation within 0.23% of the measured reserved peak, so for a
framework whose allocator pattern is plain PyTorch's (``ddp-buckets``: the ``pytorch``
profile) ``fits`` is decided on the simulated reserved peak of the default allocator
settings plus the memory allocated outside the allocator (CUDA context and library
workspaces as measured, NCCL buffers from NCCL's defaults: the reserve's fixed part).
DeepSpeed's ZeRO buckets and FSDP2's per-layer buffers sit in the allocator in ways no
snapshot has recorded yet, so for those frameworks ``fits`` stays on the analytical model
(allocated peak plus the measured fragmentation share) and the simulated peaks are
reported beside it.

Megatron-LM (``contiguous-grad-buffer``) was measured and stays on the analytical model
too. Fourteen Megatron-Core 0.16.1 snapshots on one H200
(``2026-12-03-h200-megatron-allocator-snapshots``: dense and MoE, recompute none,
selective and full, default and expandable segments) are reproduced exactly by the
simulation of their own allocation sequences (0.00% on every one), so the allocator
model holds for Megatron's buffers. But the verdict for a layout can only simulate
autopar's own trace of the step, and on those fourteen runs that misses the measured
reserved peak by -1.6% to -20.8% (``benchmarks/memplan.py``, ``snapshot_runs``): its
live peak is 5-11% under the measured allocated peak of the local layer spec's steps,
and it has one block per node's saved activations and none of the recurring large
transients (the unfused attention's score blocks, the logits) whose new segments make
Megatron's unusable memory (the 21.6% of the llama-1b full-recompute step). The
analytical model's fragmentation share for Megatron is measured on Megatron-Core steps
(``planner.cost.reserve``).
``MemoryReport.fits_basis`` says which was used.
"""

from __future__ import annotations

from planner.cost.memory import gib
from planner.cost.reserve import usable_capacity_bytes
from planner.frameworks import get_profile
from planner.frameworks.profile import AllocatorPattern
from planner.memplan.analysis import analyse
from planner.memplan.lifetimes import stage_trace
from planner.predict import Estimate, Prepared, SimulatedStagePeak, prepare
from planner.search.results import PlanEntry
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import ParallelConfig
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec

MEMPLAN_TIME_LIMIT_S = 4.0
"""Placement solve time per stage (``analyse`` splits it over its two solves)."""
PLAN_TOP = 3
"""``autopar plan --memplan`` simulates this many of the best plans (a few seconds each)."""

VALIDATED_PATTERNS: frozenset[AllocatorPattern] = frozenset({"ddp-buckets"})
"""Allocator patterns the committed snapshots validate the simulation on."""
NOT_VALIDATED_WHY: dict[AllocatorPattern, str] = {
    "contiguous-grad-buffer": (
        "Megatron-Core allocator snapshots are reproduced exactly from their own allocation "
        "sequences, but autopar's trace of the same steps misses their reserved peak by up "
        "to 21%"
    ),
}
"""Why a measured pattern is not in ``VALIDATED_PATTERNS`` (module docstring)."""


def simulated_peaks(prepared: Prepared, *, time_limit_s: float) -> list[SimulatedStagePeak]:
    """The simulated and planned peaks of one GPU of every pipeline stage."""
    outside = prepared.ctx.reserve.non_allocator_bytes
    peaks = []
    for rank in range(prepared.layout.pp):
        trace = stage_trace(prepared, stage=rank)
        analysis = analyse(
            trace.events, chains=trace.chains, ties=trace.ties, time_limit_s=time_limit_s
        )
        peaks.append(
            SimulatedStagePeak(
                stage=rank,
                live_gib=gib(analysis.live_peak),
                allocator_gib=gib(analysis.default.peak_reserved),
                allocator_expandable_gib=gib(analysis.expandable.peak_reserved),
                planned_gib=gib(analysis.planned_peak),
                plan_status=analysis.plan_status,
                reserved_total_gib=gib(analysis.default.peak_reserved + outside),
            )
        )
    return peaks


def with_simulated(estimate: Estimate, prepared: Prepared, *, time_limit_s: float) -> Estimate:
    """``estimate`` with ``memory.simulated`` and ``memory.fits_basis`` filled, and ``fits``
    decided on the simulation where it is validated (module docstring)."""
    peaks = simulated_peaks(prepared, time_limit_s=time_limit_s)
    memory = estimate.memory
    capacity = gib(usable_capacity_bytes(prepared.cluster.gpu)[0])
    worst = max(peaks, key=lambda peak: peak.reserved_total_gib)
    pattern = get_profile(prepared.framework).allocator_pattern
    simulated_text = (
        f"allocator simulation (default settings): stage {worst.stage} reserves "
        f"{worst.allocator_gib:.2f} GiB + {worst.reserved_total_gib - worst.allocator_gib:.2f}"
        f" GiB outside the allocator = {worst.reserved_total_gib:.2f} GiB of {capacity:.2f}"
    )
    if pattern in VALIDATED_PATTERNS:
        fits = worst.reserved_total_gib <= capacity
        basis = (
            f"Fits decided on the {simulated_text} (validated on plain-PyTorch allocator "
            f"snapshots); the analytical peak is {memory.peak_gib:.2f} GiB."
        )
    else:
        fits = memory.fits
        why = NOT_VALIDATED_WHY.get(pattern, "no allocator snapshot has recorded it")
        basis = (
            f"Fits decided on the analytical model (peak {memory.peak_gib:.2f} GiB): "
            f"the simulation is not validated for {prepared.framework}'s allocator pattern "
            f"({pattern}): {why}; for comparison, the {simulated_text} "
            f"({'fits' if worst.reserved_total_gib <= capacity else 'does not fit'})."
        )
    report = memory.model_copy(update={"simulated": peaks, "fits_basis": basis, "fits": fits})
    return estimate.model_copy(update={"memory": report})


def entry_with_simulated(
    entry: PlanEntry,
    *,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    time_limit_s: float,
) -> PlanEntry:
    """A ranked plan with its memory section simulated like ``with_simulated``'s."""
    config = entry.config
    fields = ParallelConfig.model_fields
    if config.num_gpus != cluster.num_gpus:  # cost and min-gpus searches size the cluster
        cluster = cluster.model_copy(update={"num_gpus": config.num_gpus})
    prepared = prepare(
        model=model,
        cluster=cluster,
        workload=workload,
        layout=ParallelConfig(**{name: getattr(config, name) for name in fields}),
        framework=config.framework,  # type: ignore[arg-type]
        state_layout_name=config.state_layout,
        flash_attention=config.flash_attention,
        optimizer_impl=config.optimizer_impl,
        runtime=config.runtime,
        layer_spec=config.layer_spec,
        check=False,
    )
    simulated = with_simulated(entry.estimate, prepared, time_limit_s=time_limit_s)
    return entry.model_copy(update={"memory": simulated.memory})
