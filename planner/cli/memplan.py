"""``autopar memplan``: peak memory of a stage four ways (live bytes, the caching allocator
with and without expandable segments, our planned placement), what to recompute or
offload under ``--budget-gib`` (and, with ``--emit``, the launch files that carry it); or
the same analysis of a real allocator snapshot. Its layout flags are ``autopar
estimate``'s (``planner.cli.layout_options``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from planner.cli.files import write_files
from planner.cli.inputs import (
    FrameworkOption,
    GlobalBatchOption,
    GlobalBatchTokensOption,
    GpusOption,
    JsonOption,
    NodesOption,
    PrecisionOption,
    check_framework,
    load_inputs,
)
from planner.cli.layout_options import (
    AccountForEmbeddingOption,
    AccountForLossOption,
    AttentionBackendOption,
    CpOption,
    DistributedOptimizerOption,
    EpOption,
    EtpOption,
    FirstStageLayersOption,
    FlashAttentionOption,
    LastStageLayersOption,
    LayerSpecOption,
    MbsOption,
    MicrobatchGroupOption,
    OffloadOptimizerOption,
    PipelineScheduleOption,
    PpOption,
    RecomputeLayersOption,
    RecomputeMethodOption,
    RecomputeOption,
    SequenceParallelOption,
    StateLayoutOption,
    TpOption,
    VppOption,
    ZeroOption,
    attention_backend,
    layout_from_options,
)
from planner.cli.output import console, print_json
from planner.cli.plan import check_emit
from planner.cost.frameworks import Runtime, layer_spec_choice
from planner.errors import SpecError
from planner.memplan import MemoryPlan, memplan, memplan_snapshot
from planner.memplan.launch import check_launch_layout, launch_files


def memplan_command(
    model: Annotated[
        str | None, typer.Option(help="Catalogue name, model file or HF config.json.")
    ] = None,
    cluster: Annotated[str | None, typer.Option(help="Cluster preset or cluster file.")] = None,
    seq_len: Annotated[
        int | None, typer.Option("--seq-len", min=1, help="Tokens per sequence.")
    ] = None,
    snapshot: Annotated[
        Path | None,
        typer.Option(help="A torch.cuda.memory._dump_snapshot pickle (.pickle or .pickle.gz)."),
    ] = None,
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
    first_stage_layers: FirstStageLayersOption = None,
    last_stage_layers: LastStageLayersOption = None,
    account_for_embedding: AccountForEmbeddingOption = False,
    account_for_loss: AccountForLossOption = False,
    microbatch_group_size: MicrobatchGroupOption = None,
    pipeline_schedule: PipelineScheduleOption = "1f1b",
    recompute: RecomputeOption = "none",
    recompute_method: RecomputeMethodOption = None,
    recompute_layers: RecomputeLayersOption = None,
    precision: PrecisionOption = "bf16",
    framework: FrameworkOption = "megatron",
    state_layout: StateLayoutOption = None,
    flash_attention: FlashAttentionOption = True,
    attention_backend_name: AttentionBackendOption = None,
    layer_spec_name: LayerSpecOption = None,
    stage: Annotated[
        int | None, typer.Option(min=0, help="One pipeline stage [default: every stage].")
    ] = None,
    budget_gib: Annotated[
        float | None,
        typer.Option("--budget-gib", help="Fit activations in this many GiB per GPU."),
    ] = None,
    time_limit: Annotated[
        float, typer.Option("--time-limit", min=0.1, help="Seconds per solver call.")
    ] = 10.0,
    emit: Annotated[
        str | None,
        typer.Option(
            help="With --budget-gib: write launch files whose recompute/offload setting fits "
            "the budget: megatron | deepspeed | torchtitan | torchtitan-toml (the plan's "
            "--framework)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Directory for --emit's files. [default: run]")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Plan where tensors live: live-bytes bound, simulated allocator, planned placement.

    Under --budget-gib B it also picks, per layer, what to keep, recompute or offload to
    the host at least added time, and prints that choice as each framework's own setting,
    mapped to the nearest one the framework can express that still fits (Megatron:
    the first N layers of every stage, --recompute-method block, or
    --cpu-offloading-num-layers without pipeline parallelism; DeepSpeed: every layer or
    none; torchtitan 0.2.2: full, or every k-th block). --emit FORMAT --out DIR writes the
    launch files with it, e.g.

    \b
        autopar memplan --model llama-3.1-70b --cluster dgx-h100 --nodes 8 --seq-len 8192
            --global-batch 512 --tp 8 --pp 4 --budget-gib 70 --emit megatron --out run/
    """
    written: list[str] = []
    directory: Path | None = None
    if snapshot is not None:
        given = [f for f, v in (("--model", model), ("--cluster", cluster)) if v is not None]
        for flag, value in (("--budget-gib", budget_gib), ("--emit", emit), ("--out", out)):
            if value is not None:
                given.append(flag)
        if given:
            raise SpecError(f"--snapshot: analyses a recorded file alone; drop {', '.join(given)}")
        result = memplan_snapshot(snapshot, time_limit_s=time_limit)
    else:
        missing = [
            flag
            for flag, value in (("--model", model), ("--cluster", cluster), ("--seq-len", seq_len))
            if value is None
        ]
        if missing:
            raise SpecError(f"{', '.join(missing)}: required (or give --snapshot FILE)")
        assert model is not None and cluster is not None and seq_len is not None
        check_framework(framework)
        model_spec, cluster_spec, workload = load_inputs(
            model=model, cluster=cluster, nodes=nodes, gpus=gpus, seq_len=seq_len,
            global_batch=global_batch, global_batch_tokens=global_batch_tokens,
            precision=precision,
        )  # fmt: skip
        layout = layout_from_options(
            tp=tp, pp=pp, cp=cp, ep=ep, etp=etp, vpp=vpp, mbs=mbs, zero=zero,
            distributed_optimizer=distributed_optimizer, sequence_parallel=sequence_parallel,
            offload_optimizer=offload_optimizer, recompute=recompute,
            recompute_method=recompute_method, recompute_layers=recompute_layers,
            first_stage_layers=first_stage_layers, last_stage_layers=last_stage_layers,
            account_for_embedding=account_for_embedding, account_for_loss=account_for_loss,
            pipeline_schedule=pipeline_schedule, microbatch_group_size=microbatch_group_size,
        )  # fmt: skip
        backend = attention_backend(attention_backend_name)
        layer_spec, flash_attention = layer_spec_choice(
            layer_spec_name,
            framework=framework,
            flash_attention=flash_attention,
            attention_backend=backend,
        )
        directory = check_emit(emit, out)
        if emit is not None:
            check_launch_layout(layout, budget_gib=budget_gib)
            target = emit.split("-")[0]
            if target != framework:
                raise SpecError(
                    f"--emit {emit}: the memory plan is made for --framework {framework}; "
                    f"plan with --framework {target} (memory and time are per framework)"
                )
            if stage is not None:
                raise SpecError("--emit: the setting holds for every stage: drop --stage")
        inputs = {
            "model": model_spec, "cluster": cluster_spec, "workload": workload,
            "layout": layout, "framework": framework, "state_layout_name": state_layout,
            "flash_attention": flash_attention, "runtime": Runtime(attention_backend=backend),
            "layer_spec": layer_spec,
        }  # fmt: skip
        result = memplan(**inputs, stage=stage, budget_gib=budget_gib, time_limit_s=time_limit)
        if emit is not None and directory is not None:
            files = launch_files(result, emitter=emit, **inputs)
            written = [path.name for path in write_files(directory, files, option="--out")]
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    render_memplan(result)
    if written:
        console().print(f"wrote {', '.join(sorted(written))} to {directory}/")


def render_memplan(result: MemoryPlan) -> None:
    """The peaks table, the allocator advice and the budget choice."""
    out = console()
    title = (
        f"Memory plan of {result.config['snapshot']}"
        if result.source == "snapshot"
        else f"Memory plan of {result.config['model']} on {result.config['num_gpus']} x "
        f"{result.config['gpu']} (tp {result.config['tp']} pp {result.config['pp']} "
        f"dp {result.config['dp']}, {result.config['microbatches']} micro-batches)"
    )
    table = Table(title=title)
    columns = ["stage", "live (bound)", "allocator", "expandable", "planned", "frag.", "plan"]
    if result.source == "snapshot":
        columns.insert(2, "measured")
    for column in columns:
        table.add_column(column, justify="right")
    for stage in result.stages:
        p = stage.peaks
        row = [
            "-" if stage.stage is None else str(stage.stage),
            f"{p.live_gib:.2f}",
            f"{p.allocator_gib:.2f}",
            f"{p.allocator_expandable_gib:.2f}",
            f"{p.planned_gib:.2f}",
            f"{p.fragmentation:.1%}",
            f"{p.plan_status} (gap {p.plan_gap:.1%}, {p.solve_s:.1f} s)",
        ]
        if result.source == "snapshot":
            row.insert(2, f"{p.measured_reserved_gib or 0:.2f}")
        table.add_row(*row)
    out.print(table)
    out.print(
        "GiB per GPU. live: largest sum of live tensors (a lower bound); allocator: PyTorch's "
        "caching allocator simulated (reserved); planned: every tensor placed knowing all "
        "lifetimes."
    )
    for stage in result.stages:
        label = "" if stage.stage is None else f"stage {stage.stage}: "
        out.print(f"{label}{stage.peaks.advice}.")
        budget = stage.budget
        if budget is None:
            continue
        if budget.added_time_s is None:
            out.print(f"{label}no choice fits {budget.budget_gib:g} GiB: {budget.binding}.")
            continue
        out.print(
            f"{label}to fit {budget.budget_gib:g} GiB (peak {budget.peak_gib:.2f} GiB): "
            f"recompute layers {budget.recompute_layers or 'none'}, offload layers "
            f"{budget.offload_layers or 'none'}; adds {budget.added_time_s:.3f} s per step "
            f"({budget.status}, gap {budget.gap:.1%}; {budget.host_link})."
        )
    for emitter, setting in result.framework_settings.items():
        verdict = "" if setting.fits else "; does NOT fit"
        out.print(
            f"  {emitter}: {setting.flags} (peak {setting.peak_gib:.2f} GiB, adds "
            f"{setting.added_time_s:.3f} s{verdict})",
            markup=False,
        )
        if setting.mapped is not None:
            out.print(f"    mapped: {setting.mapped}", markup=False)
