"""``autopar plan``: the fastest layouts that fit, ranked, with why the best one wins."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from planner.cli.emit import write_emitted
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
    check_framework,
    load_inputs,
)
from planner.cli.output import console, print_json
from planner.errors import SpecError
from planner.plan import DEFAULT_TIME_LIMIT_S, PlanResult, plan
from planner.search.candidates import coerce_knobs
from planner.search.driver import OBJECTIVES, layout_label


def parse_knobs(text: str | None, *, option: str) -> dict[str, Any]:
    """'tp=8,cp=2' -> {'tp': 8, 'cp': 2}; names and values checked against ParallelConfig."""
    if text is None:
        return {}
    raw: dict[str, str] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise SpecError(f"{option}: '{item.strip()}' is not knob=value (e.g. tp=8,cp=2)")
        if name in raw:
            raise SpecError(f"{option}: knob '{name}' is given twice")
        raw[name] = value
    return coerce_knobs(raw, option=option)


def plan_command(
    model: ModelOption,
    cluster: ClusterOption,
    seq_len: SeqLenOption,
    nodes: NodesOption = None,
    gpus: GpusOption = None,
    global_batch: GlobalBatchOption = None,
    global_batch_tokens: GlobalBatchTokensOption = None,
    precision: PrecisionOption = "bf16",
    framework: FrameworkOption = "megatron",
    objective: Annotated[
        str, typer.Option(help="throughput (cost and min-gpus: not implemented yet).")
    ] = "throughput",
    fix: Annotated[str | None, typer.Option("--fix", help="Pin knobs, e.g. tp=8,cp=2.")] = None,
    maximum: Annotated[
        str | None, typer.Option("--max", help="Bound knobs, e.g. tp=8,pp=4.")
    ] = None,
    headroom_gib: Annotated[
        float, typer.Option("--headroom-gib", min=0.0, help="GiB to leave free on every GPU.")
    ] = 0.0,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Plans to show.")] = 5,
    time_limit: Annotated[
        float, typer.Option("--time-limit", min=0.1, help="Seconds for the whole search.")
    ] = DEFAULT_TIME_LIMIT_S,
    emit: Annotated[
        str | None,
        typer.Option(
            help="Also write launch files for the best plan: megatron | deepspeed | torchtitan."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Directory for --emit.")] = Path("run"),
    as_json: JsonOption = False,
) -> None:
    """Search every layout for the fastest that fit in memory, and explain the best."""
    check_framework(framework)
    if objective not in OBJECTIVES:
        raise SpecError(f"--objective: unknown '{objective}'; known: {', '.join(OBJECTIVES)}")
    fixed = parse_knobs(fix, option="--fix")
    maxima = parse_knobs(maximum, option="--max")
    for name, bound in maxima.items():
        if isinstance(bound, bool) or not isinstance(bound, int):
            raise SpecError(f"--max: {name}={bound} is not a whole-number knob")
    model_spec, cluster_spec, workload = load_inputs(
        model=model, cluster=cluster, nodes=nodes, gpus=gpus, seq_len=seq_len,
        global_batch=global_batch, global_batch_tokens=global_batch_tokens, precision=precision,
    )  # fmt: skip
    result = plan(
        model=model_spec,
        cluster=cluster_spec,
        workload=workload,
        framework=framework,  # type: ignore[arg-type]
        objective=objective,
        fixed=fixed,
        maxima=maxima,
        headroom_gib=headroom_gib,
        top_k=top_k,
        time_limit_s=time_limit,
    )
    if emit is not None:
        write_emitted(result.model_dump(mode="json"), format=emit, out=out, quiet=as_json)
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    render_plan(result)


def render_plan(result: PlanResult) -> None:
    """The ranked table, the best plan's explanation and how the search went."""
    first = result.plans[0].config
    table = Table(
        title=(
            f"{first['model']} on {first['num_gpus']} x {first['gpu']}, seq {first['seq_len']}, "
            f"batch {first['global_batch']} ({first['framework']})"
        )
    )
    for column in ("#", "layout", "step s", "tokens/s", "MFU", "peak GiB", "headroom GiB"):
        table.add_column(column, justify="left" if column == "layout" else "right")
    table.add_column("dominant cost")
    for rank, entry in enumerate(result.plans, start=1):
        timing, memory = entry.time, entry.memory
        name, seconds = max(timing.breakdown_s.items(), key=lambda item: item[1])
        table.add_row(
            str(rank),
            layout_label(entry.config),
            f"{timing.step_time_s:.3f}",
            f"{timing.tokens_per_s:,.0f}",
            f"{timing.mfu:.1%}",
            f"{memory.peak_gib:.2f}",
            f"{memory.headroom_gib:.2f}",
            f"{name.replace('_', ' ')} {seconds:.3f} s",
        )
    out = console()
    out.print(table)
    out.print(result.plans[0].explanation)
    info = result.search
    verdict = "optimal" if info.optimal else "NOT proven optimal (time limit)"
    out.print(
        f"Search: {info.layouts_considered} layouts considered, {info.layouts_legal} legal, "
        f"{info.layouts_feasible} fit; {info.solver} {verdict} in {info.wall_s:.2f} s."
    )
