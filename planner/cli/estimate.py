"""``autopar estimate``: predict one layout's memory per pipeline stage (and later, time)."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from planner import catalog
from planner.cli.output import console, print_json
from planner.errors import SpecError
from planner.predict import Estimate, estimate
from planner.specs._base import spec_error
from planner.specs.layout import ParallelConfig
from planner.specs.workload import WorkloadSpec

_SUFFIXES = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def parse_count(text: str, *, option: str) -> int:
    """'16M' -> 16 * 2**20 (binary suffixes, as token batches are quoted); '4096' -> 4096."""
    match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", text)
    if match is None:
        raise SpecError(f"{option}: '{text}' is not a whole number (suffixes K, M, G allowed)")
    return int(match.group(1)) * _SUFFIXES[match.group(2).lower()]


def estimate_command(
    model: Annotated[str, typer.Option(help="Catalogue name, model file or HF config.json.")],
    cluster: Annotated[str, typer.Option(help="Cluster preset (dgx-h100) or cluster file.")],
    seq_len: Annotated[int, typer.Option("--seq-len", min=1, help="Tokens per sequence.")],
    nodes: Annotated[int | None, typer.Option(min=1, help="Whole nodes.")] = None,
    gpus: Annotated[
        int | None, typer.Option(min=1, help="Total GPUs (a partial node is fine).")
    ] = None,
    global_batch: Annotated[
        int | None, typer.Option("--global-batch", min=1, help="Sequences per step.")
    ] = None,
    global_batch_tokens: Annotated[
        str | None, typer.Option("--global-batch-tokens", help="Tokens per step (e.g. 16M).")
    ] = None,
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
    sequence_parallel: Annotated[bool, typer.Option("--sequence-parallel")] = False,
    recompute: Annotated[str, typer.Option(help="none | selective | full.")] = "none",
    recompute_method: Annotated[
        str | None, typer.Option("--recompute-method", help="uniform | block (full only).")
    ] = None,
    recompute_layers: Annotated[
        int | None, typer.Option("--recompute-layers", min=1, help="Layers per recompute group.")
    ] = None,
    precision: Annotated[str, typer.Option(help="bf16 | fp16 | fp8 | fp32.")] = "bf16",
    framework: Annotated[
        str, typer.Option(help="megatron | deepspeed | torchtitan | pytorch: sets defaults.")
    ] = "megatron",
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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON and nothing else.")] = False,
) -> None:
    """Predict per-GPU memory of every pipeline stage for one layout, and whether it fits."""
    if framework not in ("megatron", "deepspeed", "torchtitan", "pytorch"):
        raise SpecError(
            f"--framework: unknown '{framework}'; known: megatron, deepspeed, torchtitan, pytorch"
        )
    model_spec = catalog.load_model(model)
    cluster_spec = catalog.load_cluster(cluster, nodes=nodes, gpus=gpus)
    tokens = (
        None
        if global_batch_tokens is None
        else parse_count(global_batch_tokens, option="--global-batch-tokens")
    )
    workload = _build(
        WorkloadSpec,
        "workload",
        seq_len=seq_len,
        global_batch=global_batch,
        global_batch_tokens=tokens,
        precision=precision,
    )
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
        "recompute": recompute,
        "recompute_method": recompute_method,
        "recompute_num_layers": recompute_layers,
    }
    if zero is not None:
        fields["zero_stage"] = zero
    layout = _build(ParallelConfig, "layout", **fields)
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


def _build(cls: Any, what: str, **fields: Any) -> Any:
    try:
        return cls(**fields)
    except ValidationError as error:
        raise spec_error(error, what=what) from None


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
