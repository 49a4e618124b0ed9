"""``autopar estimate``: predict one layout's memory per pipeline stage, step time and MFU.

The layout comes from the flags, or from a plan file (``--plan PLAN.json [--rank K]``:
entry K of ``autopar plan --json``, or an ``autopar estimate --json``), estimated with
every knob the plan chose, so that it reproduces the plan's prediction exactly. Flags
given alongside ``--plan`` override the plan's value for that knob, as command-line
arguments override a configuration file in Megatron-LM, each with a note on stderr; the
model and the framework cannot be overridden (a plan's layout is resolved for them).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from planner import catalog
from planner.accuracy import default_headroom, memory_error
from planner.cli.inputs import (
    FrameworkOption,
    GlobalBatchOption,
    GlobalBatchTokensOption,
    GpusOption,
    JsonOption,
    MemplanOption,
    NodesOption,
    PrecisionOption,
    build_spec,
    check_framework,
    load_inputs,
    parse_tokens,
)
from planner.cli.layout_options import (
    KERNEL_SWITCH_FLAGS,
    AccountForEmbeddingOption,
    AccountForLossOption,
    AttentionBackendOption,
    CpCommTypeOption,
    CpOption,
    CrossEntropyLossFusionOption,
    DdpBucketViewOption,
    DistributedOptimizerOption,
    EpOption,
    EtpOption,
    ExpandableSegmentsOption,
    FirstStageLayersOption,
    FlashAttentionOption,
    GradientAccumulationFusionOption,
    GradReduceInBf16Option,
    HierarchicalCpSizesOption,
    LastStageLayersOption,
    LayerSpecOption,
    MbsOption,
    MicrobatchGroupOption,
    OffloadOptimizerOption,
    OverlapGradReduceOption,
    OverlapParamGatherOption,
    PipelineScheduleOption,
    PpOption,
    RecomputeLayersOption,
    RecomputeMethodOption,
    RecomputeOption,
    SequenceParallelOption,
    StateLayoutOption,
    TpCommOverlapOption,
    TpOption,
    VppOption,
    ZeroOption,
    default_cp_comm_type,
    framework_knob_refusals,
    layout_from_options,
)
from planner.cli.layout_options import attention_backend as attention_backend_name
from planner.cli.layout_options import (
    hierarchical_cp_sizes as parse_cp_sizes,
)
from planner.cli.output import console, print_json
from planner.cost.frameworks import LayerSpec, Runtime, layer_spec_choice
from planner.errors import SpecError
from planner.memplan.fits import MEMPLAN_TIME_LIMIT_S, with_simulated
from planner.plan_file import (
    PlanFileEntry,
    PlannedEntry,
    check_reproducible,
    plan_inputs,
    read_plan_entry,
)
from planner.predict import Estimate, MemoryReport, assemble, memory_stages, prepare, time_report
from planner.resolved import ResolvedConfig
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import ParallelConfig
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec

PlanOption = Annotated[
    Path | None,
    typer.Option(
        "--plan",
        help="A plan file (autopar plan --json, or an estimate --json): estimate its layout "
        "with every knob the plan chose (model, cluster, workload, framework, layout, "
        "overlaps, runtime), reproducing its prediction. Flags given with it override the "
        "plan's value, with a note on stderr.",
        show_default=False,
    ),
]
RankOption = Annotated[
    int | None,
    typer.Option(
        "--rank",
        min=1,
        help="Which plan of --plan's file: 1 = the best. [default: 1]",
        show_default=False,
    ),
]
OptionalModelOption = Annotated[
    str | None,
    typer.Option(
        "--model", help="Catalogue name, model file or HF config.json (required without --plan)."
    ),
]
OptionalClusterOption = Annotated[
    str | None,
    typer.Option(
        "--cluster", help="Cluster preset (dgx-h100) or cluster file (required without --plan)."
    ),
]
OptionalSeqLenOption = Annotated[
    int | None,
    typer.Option("--seq-len", min=1, help="Tokens per sequence (required without --plan)."),
]


def estimate_command(
    ctx: typer.Context,
    model: OptionalModelOption = None,
    cluster: OptionalClusterOption = None,
    seq_len: OptionalSeqLenOption = None,
    nodes: NodesOption = None,
    gpus: GpusOption = None,
    global_batch: GlobalBatchOption = None,
    global_batch_tokens: GlobalBatchTokensOption = None,
    plan: PlanOption = None,
    rank: RankOption = None,
    tp: TpOption = 1,
    pp: PpOption = 1,
    cp: CpOption = 1,
    ep: EpOption = 1,
    etp: EtpOption = None,
    vpp: VppOption = None,
    mbs: MbsOption = 1,
    zero: ZeroOption = None,
    distributed_optimizer: DistributedOptimizerOption = False,
    sequence_parallel: SequenceParallelOption = False,
    offload_optimizer: OffloadOptimizerOption = 0.0,
    first_stage_layers: FirstStageLayersOption = None,
    last_stage_layers: LastStageLayersOption = None,
    account_for_embedding: AccountForEmbeddingOption = False,
    account_for_loss: AccountForLossOption = False,
    microbatch_group_size: MicrobatchGroupOption = None,
    pipeline_schedule: PipelineScheduleOption = "1f1b",
    recompute: RecomputeOption = "none",
    recompute_method: RecomputeMethodOption = None,
    recompute_layers: RecomputeLayersOption = None,
    tp_comm_overlap: TpCommOverlapOption = None,
    overlap_grad_reduce: OverlapGradReduceOption = None,
    overlap_param_gather: OverlapParamGatherOption = None,
    cp_comm_type: CpCommTypeOption = None,
    hierarchical_cp_sizes: HierarchicalCpSizesOption = None,
    precision: PrecisionOption = "bf16",
    framework: FrameworkOption = "megatron",
    state_layout: StateLayoutOption = None,
    flash_attention: FlashAttentionOption = True,
    attention_backend: AttentionBackendOption = None,
    layer_spec: LayerSpecOption = None,
    ddp_bucket_view: DdpBucketViewOption = None,
    expandable_segments: ExpandableSegmentsOption = None,
    grad_reduce_in_bf16: GradReduceInBf16Option = None,
    cross_entropy_loss_fusion: CrossEntropyLossFusionOption = None,
    gradient_accumulation_fusion: GradientAccumulationFusionOption = None,
    memplan: MemplanOption = False,
    as_json: JsonOption = False,
) -> None:
    """Predict one layout: per-GPU memory of every stage (does it fit?), step time, MFU."""
    values = dict(locals())
    del values["ctx"]
    values["hierarchical_cp_sizes"] = parse_cp_sizes(hierarchical_cp_sizes)
    if plan is None:
        if rank is not None:
            raise SpecError("--rank: only with --plan PLAN.json (which plan of the file)")
        setup = setup_from_flags(values)
        planned = None
    else:
        planned = read_plan_entry(plan, rank or 1)
        setup = setup_from_plan(planned, values, given=given_flags(ctx, values))
        for note in setup.notes:
            print(f"autopar: note: {note}", file=sys.stderr)
    reasons = framework_knob_refusals(
        setup.layout,
        framework=setup.framework,
        ddp_bucket_view=setup.runtime.ddp_bucket_view,
        switches={name: getattr(setup.runtime, name) for name in KERNEL_SWITCH_FLAGS},
    )
    if reasons:
        raise SpecError("; ".join(reasons))
    prepared = prepare(
        model=setup.model,
        cluster=setup.cluster,
        workload=setup.workload,
        layout=setup.layout,
        framework=setup.framework,
        state_layout_name=setup.state_layout,
        flash_attention=setup.flash_attention,
        optimizer_impl=setup.optimizer_impl,  # type: ignore[arg-type]
        runtime=setup.runtime,
        layer_spec=setup.layer_spec,
    )
    result = assemble(prepared, memory_stages(prepared), time_report(prepared))
    if memplan:
        result = with_simulated(result, prepared, time_limit_s=MEMPLAN_TIME_LIMIT_S)
    differs = None
    if planned is not None and not setup.notes:
        differs = plan_difference(result, planned.entry)
        if differs:
            print(f"autopar: note: {differs}", file=sys.stderr)
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    render_estimate(result)
    if planned is not None:
        render_against_plan(result, planned, overridden=bool(setup.notes), differs=differs)


@dataclass(frozen=True)
class Setup:
    """Everything ``prepare`` is called with, and the notes of flags that overrode a plan."""

    model: ModelSpec
    cluster: ClusterSpec
    workload: WorkloadSpec
    layout: ParallelConfig
    framework: str
    state_layout: str | None
    flash_attention: bool
    runtime: Runtime
    optimizer_impl: str | None = None
    layer_spec: LayerSpec = "transformer_engine"
    notes: tuple[str, ...] = ()


def setup_from_flags(values: dict[str, Any]) -> Setup:
    """The run the flags alone describe (no ``--plan``)."""
    for name in ("model", "cluster", "seq_len"):
        if values[name] is None:
            flag = "--" + name.replace("_", "-")
            raise SpecError(f"{flag}: required (or give --plan PLAN.json)")
    framework = values["framework"]
    check_framework(framework)
    model_spec, cluster_spec, workload = load_inputs(
        model=values["model"], cluster=values["cluster"], nodes=values["nodes"],
        gpus=values["gpus"], seq_len=values["seq_len"], global_batch=values["global_batch"],
        global_batch_tokens=values["global_batch_tokens"], precision=values["precision"],
    )  # fmt: skip
    cp_comm_type = values["cp_comm_type"]
    if cp_comm_type is None and values["hierarchical_cp_sizes"] is not None:
        cp_comm_type = "a2a+p2p"
    if cp_comm_type is None and values["cp"] > 1:
        cp_comm_type = default_cp_comm_type(framework)
    layout = layout_from_options(
        **{name: values[name] for name in _LAYOUT_ARGUMENTS}, cp_comm_type=cp_comm_type
    )
    layer_spec, flash_attention = layer_spec_choice(
        values["layer_spec"],
        framework=framework,
        flash_attention=values["flash_attention"],
        attention_backend=values["attention_backend"],
    )
    return Setup(
        model=model_spec,
        cluster=cluster_spec,
        workload=workload,
        layout=layout,
        framework=framework,
        state_layout=values["state_layout"],
        flash_attention=flash_attention,
        runtime=Runtime(
            attention_backend=attention_backend_name(values["attention_backend"]),
            ddp_bucket_view=bool(values["ddp_bucket_view"]),
            expandable_segments=bool(values["expandable_segments"]),
            grad_reduce_in_bf16=bool(values["grad_reduce_in_bf16"]),
            **{name: values[name] for name in KERNEL_SWITCH_FLAGS},
        ),
        layer_spec=layer_spec,
    )


_LAYOUT_ARGUMENTS = (
    "tp", "pp", "cp", "ep", "etp", "vpp", "mbs", "zero", "distributed_optimizer",
    "sequence_parallel", "offload_optimizer", "recompute", "recompute_method",
    "recompute_layers", "first_stage_layers", "last_stage_layers", "account_for_embedding",
    "account_for_loss", "pipeline_schedule", "tp_comm_overlap", "overlap_grad_reduce",
    "overlap_param_gather", "hierarchical_cp_sizes", "microbatch_group_size",
)  # fmt: skip
"""The command's parameters that ``layout_from_options`` takes by the same name."""

LAYOUT_FIELDS: dict[str, str] = {
    **{name: name for name in _LAYOUT_ARGUMENTS},
    "zero": "zero_stage",
    "offload_optimizer": "offload_optimizer_fraction",
    "recompute_layers": "recompute_num_layers",
    "account_for_embedding": "account_for_embedding_in_pipeline_split",
    "account_for_loss": "account_for_loss_in_pipeline_split",
    "cp_comm_type": "cp_comm_type",
    "microbatch_group_size": "microbatch_group_size_per_vp_stage",
}
"""Each layout flag's parameter and the ``ParallelConfig`` field it sets."""

_NOT_OVERRIDES = frozenset({"plan", "rank", "memplan", "as_json"})
_DEPENDENTS = {
    "recompute": ("recompute_method", "recompute_num_layers"),
    "pp": ("first_stage_layers", "last_stage_layers", "microbatch_group_size_per_vp_stage"),
    "vpp": ("microbatch_group_size_per_vp_stage",),
    "cp": ("hierarchical_cp_sizes",),
    "cp_comm_type": ("hierarchical_cp_sizes",),
}
"""Fields reset when the field they depend on is overridden and they are not given."""


def given_flags(ctx: typer.Context, values: dict[str, Any]) -> set[str]:
    """The command's parameters given on the command line (not left at their default)."""
    given = set()
    for name in values:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            given.add(name)
    return given - _NOT_OVERRIDES


_FLAG_NAMES = {
    "account_for_embedding": "account-for-embedding-in-pipeline-split",
    "account_for_loss": "account-for-loss-in-pipeline-split",
    "microbatch_group_size": "microbatch-group-size-per-virtual-pipeline-stage",
}
"""Parameters whose flag is not their name with dashes (Megatron-LM's spelling)."""


def _flag(name: str, value: Any) -> str:
    flag = "--" + _FLAG_NAMES.get(name, name.replace("_", "-"))
    if isinstance(value, bool):
        return flag if value else flag.replace("--", "--no-", 1)
    if isinstance(value, tuple):
        return f"{flag} {','.join(map(str, value))}"
    return f"{flag} {value}"


class Overrides:
    """The flags given alongside ``--plan``: each one's value in place of the plan's, and
    a note for each that differs from it."""

    def __init__(self, values: dict[str, Any], given: set[str], label: str) -> None:
        self.values, self.given, self.label = values, given, label
        self.notes: list[str] = []

    def take(self, name: str, plan_value: Any, *, shown: Any = None) -> Any:
        """The flag's value if given (noting it when it differs), else the plan's."""
        if name not in self.given or self.values[name] == plan_value:
            return plan_value
        was = plan_value if shown is None else shown
        self.note(f"{_flag(name, self.values[name])} overrides {self.label}'s {name} {was}")
        return self.values[name]

    def note(self, text: str) -> None:
        self.notes.append(text)


def setup_from_plan(planned: PlanFileEntry, values: dict[str, Any], *, given: set[str]) -> Setup:
    """The run of plan entry ``planned`` with every knob it chose, then the ``given``
    flags' values in place of the plan's (one note each); the model and framework must
    be the plan's."""
    entry, label = planned.entry, f"plan {planned.rank}"
    config = entry.config
    check_reproducible(entry)
    if "model" in given and catalog.load_model(values["model"]) != config.model_spec:
        raise SpecError(
            f"--model: {label} of {planned.path} is for {config.model}; a plan's layout is "
            "resolved for its model (omit --model, or estimate without --plan)"
        )
    if "framework" in given and values["framework"] != config.framework:
        raise SpecError(
            f"--framework: {label} of {planned.path} is for {config.framework}; a plan's "
            "layout is resolved for its framework (omit --framework, or estimate without --plan)"
        )
    overrides = Overrides(values, given, label)
    model_spec, cluster_spec, workload = _plan_run(config, overrides)
    fields = config.layout.model_dump()
    for name, field in LAYOUT_FIELDS.items():
        fields[field] = overrides.take(name, fields[field])
    given_fields = {LAYOUT_FIELDS.get(name, name) for name in given}
    for name, dependents in _DEPENDENTS.items():
        if fields[LAYOUT_FIELDS[name]] != getattr(config, LAYOUT_FIELDS[name]):
            for dependent in (d for d in dependents if d not in given_fields):
                if fields[dependent] is not None:
                    overrides.note(f"{dependent} reset with {name} (was {fields[dependent]})")
                    fields[dependent] = None
    fields["dp"] = None  # resolved from the GPU count, as without --plan (the same dp)
    layout: ParallelConfig = build_spec(ParallelConfig, "layout", **fields)
    backend = overrides.take(
        "attention_backend",
        config.runtime.attention_backend,
        shown=config.runtime.attention_backend or "default",
    )
    runtime = replace(
        config.runtime,
        attention_backend=attention_backend_name(backend),
        ddp_bucket_view=overrides.take("ddp_bucket_view", config.runtime.ddp_bucket_view),
        expandable_segments=overrides.take(
            "expandable_segments", config.runtime.expandable_segments
        ),
        grad_reduce_in_bf16=overrides.take(
            "grad_reduce_in_bf16", config.runtime.grad_reduce_in_bf16
        ),
        **{
            name: overrides.take(
                name,
                getattr(config.runtime, name),
                shown="the framework's default" if getattr(config.runtime, name) is None else None,
            )
            for name in KERNEL_SWITCH_FLAGS
        },
    )
    layer_spec: LayerSpec = config.layer_spec
    flash_attention = overrides.take("flash_attention", config.flash_attention)
    if "layer_spec" in given:
        layer_spec, flash_attention = layer_spec_choice(
            overrides.take("layer_spec", config.layer_spec),
            framework=config.framework,
            flash_attention=flash_attention,
            attention_backend=runtime.attention_backend,
        )
    return Setup(
        model=model_spec,
        cluster=cluster_spec,
        workload=workload,
        layout=layout,
        framework=config.framework,
        state_layout=overrides.take("state_layout", config.state_layout),
        flash_attention=flash_attention,
        runtime=runtime,
        optimizer_impl=config.optimizer_impl,
        layer_spec=layer_spec,
        notes=tuple(overrides.notes),
    )


def _plan_run(
    config: ResolvedConfig, overrides: Overrides
) -> tuple[ModelSpec, ClusterSpec, WorkloadSpec]:
    """The plan's model, cluster and workload, with the given run flags in their place."""
    values, given = overrides.values, overrides.given
    cluster_spec = None
    if given & {"cluster", "nodes", "gpus"}:
        name = overrides.take("cluster", config.cluster)
        sized = bool(given & {"nodes", "gpus"})
        gpus = values["gpus"] if "gpus" in given else (None if sized else config.num_gpus)
        nodes = values["nodes"] if "nodes" in given else None
        cluster_spec = catalog.load_cluster(name, nodes=nodes, gpus=gpus)
        if cluster_spec.num_gpus != config.num_gpus:
            flag = f"--nodes {nodes}" if nodes is not None else f"--gpus {gpus}"
            overrides.note(
                f"{flag} overrides {overrides.label}'s {config.num_gpus} GPUs with "
                f"{cluster_spec.num_gpus}"
            )
    model_spec, cluster_spec, workload = plan_inputs(config, cluster=cluster_spec)
    run: dict[str, Any] = {
        "seq_len": overrides.take("seq_len", config.seq_len),
        "precision": overrides.take("precision", config.precision),
        "global_batch": overrides.take("global_batch", config.global_batch),
    }
    if "global_batch_tokens" in given:
        tokens = parse_tokens(
            values["global_batch_tokens"], option="--global-batch-tokens", whole=True
        )
        if tokens != config.global_batch_tokens:
            overrides.note(
                f"--global-batch-tokens {values['global_batch_tokens']} overrides "
                f"{overrides.label}'s global_batch_tokens {config.global_batch_tokens}"
            )
        run["global_batch_tokens"] = tokens
        if "global_batch" not in given:
            run["global_batch"] = None
    if run != {"seq_len": config.seq_len, "precision": config.precision,
               "global_batch": config.global_batch}:  # fmt: skip
        workload = build_spec(WorkloadSpec, "workload", **run)
    return model_spec, cluster_spec, workload


def plan_difference(result: Estimate, entry: PlannedEntry) -> str | None:
    """How ``result`` differs from the plan entry it re-estimates (None: it does not).

    The memory blocks are compared without the allocator simulation, which only
    ``--memplan`` adds."""
    bare = {"simulated": None, "fits_basis": None}
    same_memory = result.memory.model_copy(update=bare) == entry.memory.model_copy(update=bare)
    if result.config == entry.config and result.time == entry.time and same_memory:
        return None
    return (
        f"the estimate differs from the plan's own prediction (step "
        f"{result.time.step_time_s:.6f} s vs {entry.time.step_time_s:.6f} s, peak "
        f"{result.memory.peak_gib:.3f} vs {entry.memory.peak_gib:.3f} GiB): the plan was "
        "written by another version of autopar, or its catalogue entries changed"
    )


def render_against_plan(
    result: Estimate, planned: PlanFileEntry, *, overridden: bool, differs: str | None
) -> None:
    """One line: the estimate against the plan entry it came from."""
    plan_time, timing = planned.entry.time, result.time
    where = f"Plan {planned.rank} of {planned.count} in {planned.path}"
    if not overridden and differs is None:
        console().print(f"{where}: reproduced exactly.")
        return
    console().print(
        f"{where} predicted step {plan_time.step_time_s:.3f} s, MFU {plan_time.mfu:.1%}, peak "
        f"{planned.entry.memory.peak_gib:.2f} GiB; this estimate: step {timing.step_time_s:.3f} "
        f"s, MFU {timing.mfu:.1%}, peak {result.memory.peak_gib:.2f} GiB"
        + (" (with the overrides noted)." if overridden else ".")
    )


def render_estimate(result: Estimate) -> None:
    """The per-stage memory table and a plain verdict."""
    config, memory = result.config, result.memory
    title = (
        f"{config.model} on {config.num_gpus} x {config.gpu}: tp {config.tp} "
        f"pp {config.pp} dp {config.dp} cp {config.cp} mbs {config.mbs} "
        f"({config.framework}, {config.state_layout} states)"
    )
    table = Table(title=title)
    columns = ("stage", "weights", "grads", "optimizer", "activations", "other", "total")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("peak at")
    for stage in memory.stages:
        table.add_row(
            str(stage.stage),
            f"{stage.weights_gib:.2f}",
            f"{stage.gradients_gib:.2f}",
            f"{stage.optimizer_gib:.2f}",
            f"{stage.activations_gib:.2f}",
            f"{stage.other_gib:.2f}",
            f"{stage.total_gib:.2f}",
            stage.peak_moment,
        )
    out = console()
    out.print(table)
    out.print("GiB per GPU. " + memory.reserve_source)
    _render_time(result, out)
    render_simulated(memory, out)
    if memory.fits:
        out.print(
            f"Fits: peak {memory.peak_gib:.2f} GiB of {memory.capacity_gib:.2f} GiB "
            f"({memory.headroom_gib:.2f} GiB headroom). {margin_verdict(result)}"
        )
    else:
        out.print(
            f"Does NOT fit: peak {memory.peak_gib:.2f} GiB exceeds {memory.capacity_gib:.2f} GiB "
            f"by {-memory.headroom_gib:.2f} GiB."
        )


def margin_verdict(result: Estimate) -> str:
    """Whether the layout also keeps the default margin ``autopar plan`` keeps."""
    memory, config = result.memory, result.config
    kept = default_headroom(
        framework=config.framework, capacity_gib=memory.capacity_gib, layer_spec=config.layer_spec
    )
    error = memory_error(config.framework, layer_spec=config.layer_spec).fraction
    margin = f"{kept.gib:.2f} GiB: {error:.2%} of capacity, the worst validated memory error"
    if memory.headroom_gib >= kept.gib:
        return f"It keeps the default margin of `autopar plan` too ({margin})."
    return (
        f"It does NOT keep the default margin of `autopar plan` ({margin}): "
        f"{kept.gib - memory.headroom_gib:.2f} GiB short."
    )


def render_simulated(memory: MemoryReport, out: Any) -> None:
    """With ``--memplan``: the simulated and planned peaks per stage, and the fits basis."""
    if memory.simulated is None:
        return
    table = Table(title="Allocator simulation (autopar memplan), GiB per GPU")
    columns = ("stage", "live (bound)", "allocator", "expandable", "planned", "+ outside")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("plan")
    for peak in memory.simulated:
        table.add_row(
            str(peak.stage),
            f"{peak.live_gib:.2f}",
            f"{peak.allocator_gib:.2f}",
            f"{peak.allocator_expandable_gib:.2f}",
            f"{peak.planned_gib:.2f}",
            f"{peak.reserved_total_gib:.2f}",
            peak.plan_status,
        )
    out.print(table)
    if memory.fits_basis:
        out.print(memory.fits_basis)


def _render_time(result: Estimate, out: Any) -> None:
    timing = result.time
    out.print(
        f"Step {timing.step_time_s:.3f} s, {timing.tokens_per_s:,.0f} tokens/s "
        f"({timing.tokens_per_s_per_gpu:,.0f} per GPU), MFU {timing.mfu:.1%}, HFU {timing.hfu:.1%}"
    )
    parts = ", ".join(
        f"{name.replace('_', ' ')} {seconds:.3f}"
        for name, seconds in timing.breakdown_s.items()
        if seconds > 0
    )
    out.print(f"Where the time goes (s): {parts}.")
    out.print(f"Rates: {timing.rates_source}.")
