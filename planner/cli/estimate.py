"""``autopar estimate``: predict one layout's memory per pipeline stage (and later, time)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from planner.cli.inputs import (
    ClusterOption,
    FrameworkOption,
    GlobalBatchOption,
    GlobalBatchTokensOption,
    GpusOption,
    JsonOption,
    ModelOption,
    NodesOption,
    PrecisionOption,
    SeqLenOption,
    build_spec,
    check_framework,
    load_inputs,
)
from planner.cli.output import console, print_json
from planner.predict import Estimate, estimate
from planner.specs.layout import ParallelConfig


def estimate_command(
    model: ModelOption,
    cluster: ClusterOption,
    seq_len: SeqLenOption,
    nodes: NodesOption = None,
    gpus: GpusOption = None,
    global_batch: GlobalBatchOption = None,
    global_batch_tokens: GlobalBatchTokensOption = None,
    tp: Annotated[int, typer.Option(min=1, help="Tensor parallel size.")] = 1,
    pp: Annotated[int, typer.Option(min=1, help="Pipeline parallel size.")] = 1,
    cp: Annotated[int, typer.Option(min=1, help="Context parallel size.")] = 1,
    ep: Annotated[int, typer.Option(min=1, help="Expert parallel size.")] = 1,
    etp: Annotated[int | None, typer.Option(min=1, help="Expert tensor parallel size.")] = None,
    vpp: Annotated[
        int | None, typer.Option(min=1, help="Virtual stages per pipeline rank.")
    ] = None,
    mbs: Annotated[int, typer.Option(min=1, help="Micro-batch size (sequences).")] = 1,
    zero: Annotated[int | None, typer.Option(min=0, max=3, help="ZeRO stage 0-3.")] = None,
    distributed_optimizer: Annotated[
        bool, typer.Option("--distributed-optimizer", help="Megatron's sharded optimizer.")
    ] = False,
    sequence_parallel: Annotated[
        bool,
        typer.Option(
            "--sequence-parallel",
            help="Megatron sequence parallelism: norms and dropout split along the sequence "
            "over the tp ranks (needs tp > 1).",
        ),
    ] = False,
    offload_optimizer: Annotated[
        float,
        typer.Option(
            "--offload-optimizer",
            min=0.0,
            max=1.0,
            help="Share of the optimizer states and step kept on the host (DeepSpeed "
            "offload_optimizer, Megatron --optimizer-cpu-offload): 0 to 1.",
        ),
    ] = 0.0,
    recompute: Annotated[str, typer.Option(help="none | selective | full.")] = "none",
    recompute_method: Annotated[
        str | None, typer.Option("--recompute-method", help="uniform | block (full only).")
    ] = None,
    recompute_layers: Annotated[
        int | None, typer.Option("--recompute-layers", min=1, help="Layers per recompute group.")
    ] = None,
    precision: PrecisionOption = "bf16",
    framework: FrameworkOption = "megatron",
    state_layout: Annotated[
        str | None,
        typer.Option(help="megatron | zero | fsdp | autocast | bf16 [default: per framework]."),
    ] = None,
    flash_attention: Annotated[
        bool,
        typer.Option(
            "--flash-attention/--no-flash-attention",
            help="Fused attention (no s x s scores kept) or an unfused softmax.",
        ),
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Predict one layout: per-GPU memory of every stage (does it fit?), step time, MFU."""
    check_framework(framework)
    model_spec, cluster_spec, workload = load_inputs(
        model=model, cluster=cluster, nodes=nodes, gpus=gpus, seq_len=seq_len,
        global_batch=global_batch, global_batch_tokens=global_batch_tokens, precision=precision,
    )  # fmt: skip
    fields: dict[str, Any] = {
        "tp": tp,
        "pp": pp,
        "cp": cp,
        "ep": ep,
        "etp": etp,
        "vpp": vpp,
        "mbs": mbs,
        "distributed_optimizer": distributed_optimizer,
        "sequence_parallel": sequence_parallel,
        "offload_optimizer_fraction": offload_optimizer,
        "recompute": recompute,
        "recompute_method": recompute_method,
        "recompute_num_layers": recompute_layers,
    }
    if zero is not None:
        fields["zero_stage"] = zero
    layout = build_spec(ParallelConfig, "layout", **fields)
    result = estimate(
        model=model_spec,
        cluster=cluster_spec,
        workload=workload,
        layout=layout,
        framework=framework,
        state_layout_name=state_layout,  # type: ignore[arg-type]
        flash_attention=flash_attention,
    )
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    render_estimate(result)


def render_estimate(result: Estimate) -> None:
    """The per-stage memory table and a plain verdict."""
    config, memory = result.config, result.memory
    title = (
        f"{config['model']} on {config['num_gpus']} x {config['gpu']}: tp {config['tp']} "
        f"pp {config['pp']} dp {config['dp']} cp {config['cp']} mbs {config['mbs']} "
        f"({config['framework']}, {config['state_layout']} states)"
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
    if memory.fits:
        out.print(
            f"Fits: peak {memory.peak_gib:.2f} GiB of {memory.capacity_gib:.2f} GiB "
            f"({memory.headroom_gib:.2f} GiB headroom)."
        )
    else:
        out.print(
            f"Does NOT fit: peak {memory.peak_gib:.2f} GiB exceeds {memory.capacity_gib:.2f} GiB "
            f"by {-memory.headroom_gib:.2f} GiB."
        )


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
