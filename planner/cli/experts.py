"""``autopar place-experts`` and ``autopar routing-stats``: MoE expert placement.

``place-experts`` places every MoE layer's experts on the EP GPUs from routing statistics
(or a synthetic routing), prints per layer what each GPU hosts, the balancedness, the
all-to-all bytes and the gain against contiguous placement and the EPLB greedy, and writes
the EPLB triple, SGLang's ``--init-expert-location`` JSON and a table into ``--out``.
``routing-stats`` turns recorded router decisions into the statistics file it reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, get_args

import typer
from rich.table import Table

from planner import catalog
from planner.cli.inputs import ClusterOption, JsonOption, ModelOption, NodesOption
from planner.cli.output import console, human_count, print_json
from planner.errors import SpecError
from planner.experts import (
    ExpertPlacementResult,
    RoutingStats,
    place_experts,
    placement_table,
    read_routing,
    read_trace,
    stats_from_traces,
    synthetic_stats,
    write_eplb,
    write_sglang,
)
from planner.experts.place import Objective

OUTPUT_FILES = ("eplb.json", "sglang_expert_location.json", "placement.txt")
MAX_TABLE_ROWS = 512
"""Print every layer's GPU -> experts rows up to this many; beyond, the first layer's."""


def _routing(routing: Path | None, synthetic: str | None, model_ref: str) -> RoutingStats:
    if (routing is None) == (synthetic is None):
        raise SpecError("routing: give exactly one of --routing STATS and --synthetic SPEC")
    if routing is not None:
        return read_routing(routing)
    assert synthetic is not None
    model = catalog.load_model(model_ref)
    if model.moe is None:
        raise SpecError(f"model: {model.name} has no MoE layers (moe is not set)")
    return synthetic_stats(
        synthetic, layers=model.num_moe_layers, experts=model.moe.num_experts, top_k=model.moe.top_k
    )


def _write(result: ExpertPlacementResult, out: Path, experts: int) -> list[Path]:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SpecError(f"--out: cannot create {out}: {error.strerror}") from None
    paths = [out / name for name in OUTPUT_FILES]
    write_eplb(paths[0], result.phy2log, experts)
    write_sglang(paths[1], result.phy2log)
    paths[2].write_text(placement_table(result.phy2log, result.ep))
    return paths


def _gain(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}x"


def _print(result: ExpertPlacementResult) -> None:
    out = console()
    out.print(
        f"[bold]{result.model}[/] on {result.ep} GPUs of {result.cluster} ({result.nodes} "
        f"node(s)), {result.replicas} redundant experts, objective {result.objective_kind}: "
        f"{result.status}, gap {result.gap:.3%} (objective {result.objective:,.1f}, bound "
        f"{result.bound:,.1f}) in {result.solve_s:.1f} s"
    )
    table = Table(title="Per MoE layer (loads in routed tokens)")
    for column in (
        "layer", "max load", "mean", "balanced", "bound", "a2a in-node", "a2a cross-node",
        "vs contiguous", "vs greedy hier.", "vs greedy global",
    ):  # fmt: skip
        table.add_column(column, justify="right")
    for layer in result.layers:
        inside = layer.affinity_bytes_in_node
        across = layer.affinity_bytes_across_nodes
        if inside is None:
            inside, across = layer.uniform_bytes_in_node, layer.uniform_bytes_across_nodes
        table.add_row(
            str(layer.layer),
            f"{layer.max_load:,.1f}",
            f"{layer.mean_load:,.1f}",
            f"{layer.balancedness:.3f}",
            f"{layer.bound:,.1f}",
            human_count(inside) + "B",
            human_count(across or 0.0) + "B",
            _gain(layer.gain_vs_contiguous),
            _gain(layer.gain_vs_greedy_hierarchical),
            _gain(layer.gain_vs_greedy_global),
        )
    out.print(table)
    summary = Table(title="Placements compared (summed over layers)")
    for column in ("placement", "straggler tokens", "balancedness", "cross-node bytes"):
        summary.add_column(column, justify="right")
    for base in result.baselines:
        cross = base.affinity_bytes_across_nodes
        summary.add_row(
            base.name,
            f"{base.straggler_tokens:,.1f}",
            f"{base.balancedness:.3f}",
            "-" if cross is None else human_count(cross) + "B",
        )
    out.print(summary)
    shown = result.layers if len(result.layers) * result.ep <= MAX_TABLE_ROWS else result.layers[:1]
    rest = (
        ""
        if len(shown) == len(result.layers)
        else " (first layer; --out placement.txt and --json have all)"
    )
    gpus = Table(title=f"GPU -> experts{rest}")
    gpus.add_column("layer", justify="right")
    gpus.add_column("gpu", justify="right")
    gpus.add_column("experts (a repeated id is a second replica)")
    for layer in shown:
        for g, hosted in enumerate(layer.gpu_experts):
            gpus.add_row(str(layer.layer), str(g), " ".join(map(str, hosted)))
    out.print(gpus)
    for note in result.notes:
        out.print(f"note: {note}")


def place_experts_command(
    model: ModelOption,
    cluster: ClusterOption,
    ep: Annotated[
        int, typer.Option(min=1, help="Expert parallel size (GPUs sharing the experts).")
    ],
    nodes: NodesOption = None,
    routing: Annotated[
        Path | None,
        typer.Option(
            help="Routing statistics: [layers, experts] loads (.json/.npy/.pt) or "
            "an autopar routing-stats file."
        ),
    ] = None,
    synthetic: Annotated[
        str | None, typer.Option(help="Synthetic routing: zipf:S[,affinity:A][,seed:K][,tokens:T].")
    ] = None,
    replicas: Annotated[
        int, typer.Option(min=0, help="Redundant experts per layer (SGLang's count).")
    ] = 0,
    objective: Annotated[str, typer.Option(help="balance | traffic | both.")] = "balance",
    time_limit: Annotated[
        float, typer.Option("--time-limit", min=0.1, help="Solver time limit, seconds.")
    ] = 10.0,
    gap: Annotated[
        float,
        typer.Option(
            min=0.0, max=0.5, help="Stop once proven within this relative gap (0: optimal)."
        ),
    ] = 1e-3,
    groups: Annotated[
        int | None,
        typer.Option(min=1, help="Expert groups for hierarchical EPLB [default: nodes]."),
    ] = None,
    json_output: JsonOption = False,
    out: Annotated[Path | None, typer.Option(help="Write the placement files here.")] = None,
) -> None:
    """Place MoE experts (and replicas) on GPUs: an OR-Tools program from routing stats."""
    if objective not in get_args(Objective):
        raise SpecError(f"--objective: unknown '{objective}'; known: balance, traffic, both")
    model_spec = catalog.load_model(model)
    cluster_spec = catalog.load_cluster(cluster, nodes=nodes)
    stats = _routing(routing, synthetic, model)
    result = place_experts(
        model=model_spec, cluster=cluster_spec, ep=ep, routing=stats, replicas=replicas,
        objective=objective, time_limit_s=time_limit, groups=groups, relative_gap=gap,
    )  # fmt: skip
    written = _write(result, out, stats.experts) if out is not None else []
    if json_output:
        print_json({**result.model_dump(mode="json"), "files": [str(p) for p in written]})
        return
    _print(result)
    for path in written:
        console().print(f"wrote {path}")


def routing_stats_command(
    traces: Annotated[
        list[Path],
        typer.Argument(
            help="Traces: [tokens, layers] expert ids or top-k [layers, tokens, k] (.npy or .json)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Statistics file to write (JSON).")],
    experts: Annotated[
        int | None, typer.Option(min=1, help="Experts per layer [default: largest id + 1].")
    ] = None,
) -> None:
    """Turn recorded router decisions into routing statistics (loads and affinity)."""
    stats = stats_from_traces(
        [read_trace(path) for path in traces],
        experts=experts,
        source=", ".join(path.name for path in traces),
    )
    try:
        stats.save(out)
    except OSError as error:
        raise SpecError(f"--out: cannot write {out}: {error.strerror}") from None
    console().print(
        f"wrote {out}: {stats.layers} layers x {stats.experts} experts, "
        f"{sum(map(sum, stats.loads)):,} token-expert assignments, "
        f"{len(stats.affinity)} affinity pairs"
    )
