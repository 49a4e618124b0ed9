"""estimate(): the single entry that turns specs and a layout into predictions.

It fills the knobs the user left unset with the framework's defaults, resolves the layout
against the cluster (the data-parallel degree), checks every rule, builds the model graph
once and runs the cost model on it. The result is a pydantic ``Estimate`` whose JSON is
what ``autopar estimate --json`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.cost.compute import Rates
from planner.cost.expert_load import ExpertLoadFactors
from planner.cost.frameworks import (
    DEFAULT_RUNTIME,
    Framework,
    LayerSpec,
    Runtime,
    StateLayout,
    grad_reduce_in_bf16_refusal,
    implementation,
    state_layout,
)
from planner.cost.keys import Same
from planner.cost.memory import (
    MemoryContext,
    OptimizerKind,
    StageMemory,
    gib,
    parameters_per_rank,
    stage_memory,
    virtual_stages,
)
from planner.cost.rates import rates_for
from planner.cost.reserve import (
    communication_buckets,
    memory_reserve,
    usable_capacity_bytes,
)
from planner.cost.stage_work import StageTimes, layer_shape, stage_times
from planner.cost.time import TENSORS_PER_LAYER, TimeContext, step_time
from planner.cost.timeline import PipelineTimes
from planner.errors import SpecError
from planner.frameworks import get_profile
from planner.graph.build import Implementation, build_graph
from planner.graph.params import training_flops_per_token
from planner.resolved import CONFIG_SCHEMA, ResolvedConfig
from planner.specs._base import spec_error
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import (
    ParallelConfig,
    layout_violations,
    resolve_data_parallel,
    virtual_stage_layer_counts,
)
from planner.specs.limits import check_pipeline_ops
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec


class StageReport(BaseModel):
    """One GPU of one pipeline stage, GiB (2^30 bytes)."""

    model_config = ConfigDict(frozen=True)

    stage: int
    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    other_gib: float
    total_gib: float
    allocated_gib: float
    """What ``torch.cuda.max_memory_allocated`` would show (total less the reserve)."""
    activations_in_flight_gib: float
    """Saved activations of all in-flight micro-batches at the forward peak."""
    peak_moment: str


def _is_none(value: object) -> bool:
    return value is None


class SimulatedStagePeak(BaseModel):
    """One GPU of one pipeline stage replayed through ``planner.memplan``, GiB (2^30 bytes):
    the tensor lifetimes of its training step through a simulated caching allocator and
    through autopar's planned placement (``autopar memplan`` prints the same numbers)."""

    model_config = ConfigDict(frozen=True)

    stage: int
    live_gib: float
    """Largest sum of live tensors: the analytical allocated peak, a lower bound."""
    allocator_gib: float
    """Simulated ``max_memory_reserved`` with the default allocator settings."""
    allocator_expandable_gib: float
    """The same with ``expandable_segments:True``."""
    planned_gib: float
    """Arena of the planned (offline) placement."""
    plan_status: str
    reserved_total_gib: float
    """``allocator_gib`` plus what is allocated outside PyTorch's allocator (CUDA context,
    library workspaces, NCCL buffers: the reserve's fixed part)."""


class MemoryReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    capacity_gib: float
    peak_gib: float
    fits: bool
    headroom_gib: float
    reserve_source: str
    stages: list[StageReport]
    simulated: list[SimulatedStagePeak] | None = Field(None, exclude_if=_is_none)
    """With ``--memplan``: the allocator-simulated and planned peaks per stage. Left out
    of the JSON otherwise, like ``fits_basis``."""
    fits_basis: str | None = Field(None, exclude_if=_is_none)
    """With ``--memplan``: which model ``fits`` was decided on (analytical or allocator
    simulation) and why."""


class PipelineSchedule(BaseModel):
    """What the pipeline schedule was simulated from, so it can be simulated (drawn) again.

    ``forward_s[k]`` / ``backward_s[k]``: one micro-batch through virtual stage k = chunk x
    pp + rank, seconds, the exposed in-layer communication and (plain 1F1B) the blocking
    send included; ``p2p_s``: one transfer between consecutive virtual stages.
    ``planner.cost.timeline.simulate`` on these gives the op-by-op timeline.
    """

    model_config = ConfigDict(frozen=True)

    pp: int
    vpp: int
    microbatches: int
    forward_s: list[float]
    backward_s: list[float]
    p2p_s: float
    microbatch_group: int | None = Field(None, exclude_if=_is_none)
    """The interleaved schedule's micro-batch group where it is not pp (Megatron-LM's
    ``--microbatch-group-size-per-virtual-pipeline-stage``)."""


class TimeReport(BaseModel):
    """Predicted step time and throughput; ``mfu``/``hfu`` are fractions (0 to 1).

    MFU counts model FLOPs as Megatron-LM does (6 x active matmul parameters + the causal
    attention term per token, no recomputation: ``planner.graph.params``); HFU counts
    the FLOPs executed, recomputation included. Both are over the GPU's dense peak for
    the training precision.
    """

    model_config = ConfigDict(frozen=True)

    step_time_s: float
    tokens_per_s: float
    tokens_per_s_per_gpu: float
    mfu: float
    hfu: float
    breakdown_s: dict[str, float]
    rates_source: str
    pipeline: PipelineSchedule | None = None


class Estimate(BaseModel):
    """Predictions for one layout: the resolved config, memory per stage, step time."""

    model_config = ConfigDict(frozen=True)

    config: Annotated[ResolvedConfig, CONFIG_SCHEMA]
    memory: MemoryReport
    time: TimeReport


def check_precision(cluster: ClusterSpec, workload: WorkloadSpec) -> None:
    """The cluster's GPU runs the workload's precision (it has a dense peak for it)."""
    if getattr(cluster.gpu.peak_tflops, workload.precision) is None:
        raise SpecError(
            f"precision: {cluster.gpu.id} has no dense {workload.precision} peak (it does not "
            f"support {workload.precision}); choose another precision or GPU"
        )


def apply_framework_defaults(layout: ParallelConfig, *, framework: Framework) -> ParallelConfig:
    """Fill the knobs the user left unset (not in ``model_fields_set``) with the framework's
    (its profile's ``layout_defaults``: torchtitan's FSDP2, i.e. ZeRO-3)."""
    defaults = {
        key: value
        for key, value in get_profile(framework).layout_defaults.items()
        if key not in layout.model_fields_set
    }
    if not defaults:
        return layout
    try:
        return ParallelConfig(**{**layout.model_dump(exclude_unset=True), **defaults})
    except ValidationError as error:  # e.g. --distributed-optimizer under torchtitan's FSDP
        shown = ", ".join(f"{key} {value}" for key, value in defaults.items())
        raise spec_error(error, what=f"layout with {framework}'s default {shown}") from None


@dataclass(frozen=True)
class Prepared:
    """A layout resolved against the cluster, with what the memory and time models read.

    ``estimate`` is ``prepare`` + :func:`memory_stages` + :func:`time_report` + the report
    blocks; the planner calls the parts, so that it costs thousands of layouts without
    building a report for each, with the very same numbers.
    """

    model: ModelSpec
    cluster: ClusterSpec
    workload: WorkloadSpec
    framework: Framework
    layout: ParallelConfig
    """Resolved: framework defaults applied, ``dp`` filled."""
    states: StateLayout
    impl: Implementation
    ctx: MemoryContext
    flash_attention: bool
    optimizer_impl: OptimizerKind
    runtime: Runtime = DEFAULT_RUNTIME
    layer_spec: LayerSpec = "transformer_engine"
    expert_load: ExpertLoadFactors | None = None
    """Routing skew under an expert placement (``cost.expert_load``); None: balanced."""


def prepare(
    *,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    layout: ParallelConfig,
    framework: Framework = "megatron",
    state_layout_name: str | None = None,
    flash_attention: bool = True,
    optimizer_impl: OptimizerKind | None = None,
    check: bool = True,
    runtime: Runtime = DEFAULT_RUNTIME,
    layer_spec: LayerSpec = "transformer_engine",
    expert_load: ExpertLoadFactors | None = None,
) -> Prepared:
    """Resolve ``layout`` and build the model graph and memory context (see ``estimate``).

    ``check=False`` skips the rule check, for callers that already ran
    ``layout_violations`` on the resolved layout (the planner's candidates). ``runtime``
    describes the training loop beyond the framework's defaults (``frameworks.Runtime``).
    """
    profile = get_profile(framework)
    check_precision(cluster, workload)
    layout = apply_framework_defaults(layout, framework=framework)
    resolved = resolve_data_parallel(layout, num_gpus=cluster.num_gpus)
    if check:
        problems = layout_violations(
            model=model, cluster=cluster, workload=workload, layout=resolved
        )
        if problems:
            raise SpecError("layout: " + "; ".join(v.message for v in problems))
        # the schedule the time model simulates, bounded before anything is allocated
        check_pipeline_ops(
            microbatches=workload.sequences_per_step // (resolved.mbs * (resolved.dp or 1)),
            pp=resolved.pp,
            vpp=resolved.vpp or 1,
        )
    if layer_spec == "local":
        _check_local_spec(resolved, precision=workload.precision)
    states = state_layout(state_layout_name or profile.state_layout)
    if runtime.grad_reduce_in_bf16:
        refused = grad_reduce_in_bf16_refusal(framework)
        if refused:
            raise SpecError(refused)
        states = replace(states, grad_bytes=2)
    impl = implementation(
        framework=framework,
        layout=states,
        precision=workload.precision,
        flash_attention=flash_attention,
        runtime=runtime,
        layer_spec=layer_spec,
    )
    graph = build_graph(model, seq_len=workload.seq_len, implementation=impl)
    assert resolved.dp is not None
    microbatches = workload.sequences_per_step // (resolved.mbs * resolved.dp)
    reserve = memory_reserve(
        cluster.gpu,
        layout=resolved,
        framework=framework,
        fused_attention=impl.flash_attention,
        expandable_segments=runtime.expandable_segments,
    )
    plain_ddp = (
        profile.allocator_pattern == "ddp-buckets" and resolved.dp > 1 and resolved.zero_stage == 0
    )
    kind = optimizer_impl or profile.optimizer_impl
    ctx = MemoryContext(
        model=model,
        graph=graph,
        layout=resolved,
        states=states,
        num_gpus=cluster.num_gpus,
        microbatches=microbatches,
        ddp_bucket_copy=plain_ddp and not runtime.ddp_bucket_view,
        grads_bucket_view=plain_ddp and runtime.ddp_bucket_view,
        reshard_after_forward=runtime.reshard_after_forward,
        kept_output_bytes=impl.activation_bytes if runtime.pipeline_keeps_outputs else 0.0,
        loop_logits_bytes=impl.activation_bytes if runtime.loop_keeps_logits else 0.0,
        communication_buckets=communication_buckets(
            framework=framework, zero_stage=resolved.zero_stage, states=states
        ),
        optimizer_kind=kind,
        reserve=reserve,
    )
    return Prepared(
        model=model,
        cluster=cluster,
        workload=workload,
        framework=framework,
        layout=resolved,
        states=states,
        impl=impl,
        ctx=ctx,
        flash_attention=flash_attention,
        optimizer_impl=kind,
        runtime=runtime,
        layer_spec=layer_spec,
        expert_load=expert_load,
    )


def _check_local_spec(layout: ParallelConfig, *, precision: str) -> None:
    """Refuse what only Transformer Engine's modules run: megatron-core's local linears
    compute in the parameters' dtype (no fp8 recipe) and never use TE's userbuffers, so
    under ``--transformer-impl local`` Megatron-LM would run neither."""
    if precision == "fp8":
        raise SpecError(
            "layer_spec local: megatron-core's local linears have no fp8 (Transformer "
            "Engine's); use bf16 or the transformer_engine spec"
        )
    if layout.tp_comm_overlap:
        raise SpecError(
            "layer_spec local: tp_comm_overlap runs on Transformer Engine's userbuffers, "
            "which the local linears do not use"
        )


def memory_stages(prepared: Prepared) -> list[StageMemory]:
    """Memory of one GPU of every pipeline stage (bytes), first stage first."""
    return stage_memory(prepared.ctx)


def time_report(prepared: Prepared) -> TimeReport:
    """Step time, throughput and where the time goes, as ``estimate`` reports it."""
    return _time_report(
        prepared.ctx,
        cluster=prepared.cluster,
        workload=prepared.workload,
        impl=prepared.impl,
        framework=prepared.framework,
        expert_load=prepared.expert_load,
    )


def estimate(
    *,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    layout: ParallelConfig,
    framework: Framework = "megatron",
    state_layout_name: str | None = None,
    flash_attention: bool = True,
    optimizer_impl: OptimizerKind | None = None,
    runtime: Runtime = DEFAULT_RUNTIME,
    layer_spec: LayerSpec = "transformer_engine",
) -> Estimate:
    """Predict per-stage memory of ``layout`` for ``model`` on ``cluster`` for ``workload``.

    ``layer_spec="local"`` (Megatron only, with ``flash_attention=False``): megatron-core's
    local modules, as Megatron runs without Transformer Engine. Raises ``SpecError``
    naming every rule the layout breaks.
    """
    prepared = prepare(
        model=model,
        cluster=cluster,
        workload=workload,
        layout=layout,
        framework=framework,
        state_layout_name=state_layout_name,
        flash_attention=flash_attention,
        optimizer_impl=optimizer_impl,
        runtime=runtime,
        layer_spec=layer_spec,
    )
    return assemble(prepared, memory_stages(prepared), time_report(prepared))


def assemble(prepared: Prepared, stages: list[StageMemory], timing: TimeReport) -> Estimate:
    """The ``Estimate`` of a prepared layout from its memory stages and time report."""
    model, cluster, workload = prepared.model, prepared.cluster, prepared.workload
    resolved = prepared.layout
    capacity, capacity_source = usable_capacity_bytes(cluster.gpu)
    peak = max(stage.total for stage in stages)
    config = ResolvedConfig(
        model=model.name,
        cluster=cluster.name,
        gpu=cluster.gpu.id,
        num_gpus=cluster.num_gpus,
        nodes=cluster.nodes,
        seq_len=workload.seq_len,
        global_batch=workload.sequences_per_step,
        global_batch_tokens=workload.tokens_per_step,
        precision=workload.precision,
        framework=prepared.framework,
        state_layout=prepared.states.name,
        flash_attention=prepared.flash_attention,
        layer_spec=prepared.layer_spec,
        optimizer_impl=prepared.optimizer_impl,
        runtime=prepared.runtime,
        microbatches=prepared.ctx.microbatches,
        gpus_per_node=cluster.gpus_per_node,
        model_spec=model,
        **dict(resolved),
    )
    return Estimate(
        config=config,
        memory=MemoryReport(
            capacity_gib=gib(capacity),
            peak_gib=gib(peak),
            fits=peak <= capacity,
            headroom_gib=gib(capacity - peak),
            reserve_source=f"Capacity: {capacity_source}. {prepared.ctx.reserve.source}",
            stages=[_stage_report(stage) for stage in stages],
        ),
        time=timing,
    )


def time_rates(*, cluster: ClusterSpec, workload: WorkloadSpec, framework: str) -> Rates:
    """The achievable rates the time model runs on (one place, shared with the bound)."""
    return rates_for(cluster.gpu, workload.precision, framework=framework)


CHUNK_TIMES_LIMIT = 20_000
"""Entries ``chunk_compute_times`` keeps before it starts afresh."""
_chunk_times: dict[tuple, tuple[StageTimes, ...]] = {}


def chunk_compute_times(prepared: Prepared) -> list[StageTimes]:
    """Each model chunk's forward and backward compute per micro-batch, in virtual-stage
    order (``stage_work.stage_times``, the calls ``planner.cost.time`` makes, without the
    exposed communication): what the step-time lower bounds are built from.

    Cached on exactly what ``stage_times`` reads of the layout, its chunks' layer counts
    (which, with the model, give the chunks' layers), the model and rates objects
    (by identity) and the implementation: the search bounds thousands of layouts that
    differ only in knobs these times do not read (dp, the optimizer sharding, the
    overlaps), and the compute bound and the pipeline bound ask for the same layout."""
    ctx, layout = prepared.ctx, prepared.layout
    rates = time_rates(
        cluster=prepared.cluster, workload=prepared.workload, framework=prepared.framework
    )
    seq_len = prepared.workload.seq_len
    counts = tuple(virtual_stage_layer_counts(ctx.model, layout))
    key = (
        Same(ctx.model), Same(rates), prepared.impl, layer_shape(layout, seq_len),
        layout.recompute, layout.recompute_method, layout.recompute_num_layers, counts,
    )  # fmt: skip
    hit = _chunk_times.get(key)
    if hit is None:
        chunks = virtual_stages(ctx.model, layout)
        last = len(chunks) - 1
        hit = tuple(
            stage_times(
                ctx.model, chunk, first=k == 0, last=k == last, layout=layout,
                seq_len=seq_len, impl=prepared.impl, rates=rates,
            )
            for k, chunk in enumerate(chunks)
        )  # fmt: skip
        if len(_chunk_times) >= CHUNK_TIMES_LIMIT:
            _chunk_times.clear()
        _chunk_times[key] = hit
    return list(hit)


def step_lower_bound(prepared: Prepared) -> float:
    """A lower bound on the unrounded step time of ``time_report(prepared)``, seconds.

    The step is at least the pipeline simulated without transfers (the breakdown's
    compute, communication and bubble add up to it), which is at least the busiest
    rank's busy time, which is at least the micro-batches times that rank's compute per
    micro-batch (``stage_work.stage_times``, the same calls ``planner.cost.time`` makes,
    without the exposed communication). The float sums run in another order, so callers
    compare with a margin; ``tests/search`` checks the bound on many layouts.
    """
    ctx, layout = prepared.ctx, prepared.layout
    compute = chunk_compute_times(prepared)
    vpp = layout.vpp or 1
    busiest = max(
        sum(
            compute[c * layout.pp + rank].forward_s + compute[c * layout.pp + rank].backward_s
            for c in range(vpp)
        )
        for rank in range(layout.pp)
    )
    return ctx.microbatches * busiest


def _time_report(
    ctx: MemoryContext,
    *,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    impl: Implementation,
    framework: str,
    expert_load: ExpertLoadFactors | None = None,
) -> TimeReport:
    layout = ctx.layout
    rates = time_rates(cluster=cluster, workload=workload, framework=framework)
    chunks = virtual_stages(ctx.model, layout)
    per_rank = parameters_per_rank(ctx)
    layers_per_rank = [
        sum(len(chunks[c * layout.pp + rank]) for c in range(layout.vpp or 1))
        for rank in range(layout.pp)
    ]
    time_ctx = TimeContext(
        model=ctx.model,
        cluster=cluster,
        layout=layout,
        seq_len=workload.seq_len,
        microbatches=ctx.microbatches,
        impl=impl,
        states=ctx.states,
        rates=rates,
        optimizer_kind=ctx.optimizer_kind,
        chunks=chunks,
        local_params_per_rank=per_rank,
        param_tensors_per_rank=[TENSORS_PER_LAYER * n + 3 for n in layers_per_rank],
        expert_load=expert_load,
    )
    breakdown = step_time(time_ctx)
    step = breakdown.step_s
    tokens = workload.tokens_per_step
    peak = cluster.gpu.peak_flops(workload.precision)
    model_flops = tokens * training_flops_per_token(ctx.model, workload.seq_len)
    replicas = layout.tp * layout.cp * (layout.dp or 1)
    executed = breakdown.executed_flops_total_per_replica_gpu * replicas
    return TimeReport(
        step_time_s=round(step, 6),
        tokens_per_s=round(tokens / step, 3),
        tokens_per_s_per_gpu=round(tokens / step / cluster.num_gpus, 3),
        mfu=round(model_flops / (step * cluster.num_gpus * peak), 4),
        hfu=round(executed / (step * cluster.num_gpus * peak), 4),
        breakdown_s={key: round(value, 6) for key, value in breakdown.parts().items()},
        rates_source=rates.source,
        pipeline=_schedule(breakdown.pipeline),
    )


def _schedule(times: PipelineTimes | None) -> PipelineSchedule | None:
    if times is None:
        return None
    return PipelineSchedule(
        pp=times.pp,
        vpp=times.vpp,
        microbatches=times.microbatches,
        forward_s=list(times.forward_s),
        backward_s=list(times.backward_s),
        p2p_s=times.p2p_s,
        microbatch_group=times.microbatch_group,
    )


def _stage_report(stage: StageMemory) -> StageReport:
    return StageReport(
        stage=stage.stage,
        weights_gib=gib(stage.weights),
        gradients_gib=gib(stage.gradients),
        optimizer_gib=gib(stage.optimizer),
        activations_gib=gib(stage.activations),
        other_gib=gib(stage.transient + stage.reserve),
        total_gib=gib(stage.total),
        allocated_gib=gib(stage.allocated),
        activations_in_flight_gib=gib(stage.activations_in_flight),
        peak_moment=stage.peak_moment,
    )
