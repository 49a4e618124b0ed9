"""``autopar estimate``: predict one layout's memory per pipeline stage (and later, time)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from planner.accuracy import default_headroom, memory_error
from planner.cli.inputs import (
    ClusterOption,
    FrameworkOption,
    GlobalBatchOption,
    GlobalBatchTokensOption,
    GpusOption,
    JsonOption,
    MemplanOption,
    ModelOption,
    NodesOption,
    PrecisionOption,
    SeqLenOption,
    check_framework,
    load_inputs,
)
from planner.cli.layout_options import (
    CpOption,
    DistributedOptimizerOption,
    EpOption,
    EtpOption,
    FlashAttentionOption,
    MbsOption,
    OffloadOptimizerOption,
    PpOption,
    RecomputeLayersOption,
    RecomputeMethodOption,
    RecomputeOption,
    SequenceParallelOption,
    StateLayoutOption,
    TpOption,
    VppOption,
    ZeroOption,
    layout_from_options,
)
from planner.cli.output import console, print_json
from planner.cost.frameworks import ATTENTION_BACKENDS, AttentionBackend, Runtime
from planner.errors import SpecError
from planner.memplan.fits import MEMPLAN_TIME_LIMIT_S, with_simulated
from planner.predict import Estimate, MemoryReport, assemble, memory_stages, prepare, time_report


def estimate_command(
    model: ModelOption,
    cluster: ClusterOption,
    seq_len: SeqLenOption,
    nodes: NodesOption = None,
    gpus: GpusOption = None,
    global_batch: GlobalBatchOption = None,
    global_batch_tokens: GlobalBatchTokensOption = None,
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
    first_stage_layers: Annotated[
        int | None,
        typer.Option(
            "--first-stage-layers",
            "--decoder-first-pipeline-num-layers",
            min=1,
            help="Transformer layers on the first pipeline stage (uneven split; the middle "
            "stages share the rest evenly).",
        ),
    ] = None,
    last_stage_layers: Annotated[
        int | None,
        typer.Option(
            "--last-stage-layers",
            "--decoder-last-pipeline-num-layers",
            min=1,
            help="Transformer layers on the last pipeline stage (uneven split).",
        ),
    ] = None,
    account_for_embedding: Annotated[
        bool,
        typer.Option(
            "--account-for-embedding-in-pipeline-split",
            help="Count the embedding as one layer when splitting layers over stages.",
        ),
    ] = False,
    account_for_loss: Annotated[
        bool,
        typer.Option(
            "--account-for-loss-in-pipeline-split",
            help="Count the output layer and loss as one layer when splitting.",
        ),
    ] = False,
    pipeline_schedule: Annotated[
        str, typer.Option("--pipeline-schedule", help="1f1b (interleaved with --vpp) | gpipe.")
    ] = "1f1b",
    recompute: RecomputeOption = "none",
    recompute_method: RecomputeMethodOption = None,
    recompute_layers: RecomputeLayersOption = None,
    precision: PrecisionOption = "bf16",
    framework: FrameworkOption = "megatron",
    state_layout: StateLayoutOption = None,
    flash_attention: FlashAttentionOption = True,
    attention_backend: Annotated[
        str | None,
        typer.Option(
            "--attention-backend",
            help="flash | cudnn | efficient | unfused: the attention kernel timed "
            "[default: flash].",
        ),
    ] = None,
    memplan: MemplanOption = False,
    as_json: JsonOption = False,
) -> None:
    """Predict one layout: per-GPU memory of every stage (does it fit?), step time, MFU."""
    check_framework(framework)
    model_spec, cluster_spec, workload = load_inputs(
        model=model, cluster=cluster, nodes=nodes, gpus=gpus, seq_len=seq_len,
        global_batch=global_batch, global_batch_tokens=global_batch_tokens, precision=precision,
    )  # fmt: skip
    layout = layout_from_options(
        tp=tp, pp=pp, cp=cp, ep=ep, etp=etp, vpp=vpp, mbs=mbs, zero=zero,
        distributed_optimizer=distributed_optimizer, sequence_parallel=sequence_parallel,
        offload_optimizer=offload_optimizer, recompute=recompute,
        recompute_method=recompute_method, recompute_layers=recompute_layers,
        first_stage_layers=first_stage_layers, last_stage_layers=last_stage_layers,
        account_for_embedding=account_for_embedding, account_for_loss=account_for_loss,
        pipeline_schedule=pipeline_schedule,
    )  # fmt: skip
    prepared = prepare(
        model=model_spec,
        cluster=cluster_spec,
        workload=workload,
        layout=layout,
        framework=framework,
        state_layout_name=state_layout,  # type: ignore[arg-type]
        flash_attention=flash_attention,
        runtime=Runtime(attention_backend=_attention_backend(attention_backend)),
    )
    result = assemble(prepared, memory_stages(prepared), time_report(prepared))
    if memplan:
        result = with_simulated(result, prepared, time_limit_s=MEMPLAN_TIME_LIMIT_S)
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    render_estimate(result)


def _attention_backend(name: str | None) -> AttentionBackend | None:
    if name is not None and name not in ATTENTION_BACKENDS:
        raise SpecError(
            f"--attention-backend: unknown '{name}'; known: {', '.join(ATTENTION_BACKENDS)}"
        )
    return name  # type: ignore[return-value]


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
