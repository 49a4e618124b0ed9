"""``autopar models ...`` and ``autopar hardware ...``: the catalogue commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from models_db import hf_import
from planner import catalog
from planner.cli.files import write_text
from planner.cli.output import console, human_count, print_json
from planner.errors import SpecError, UnknownNameError
from planner.graph.params import count_params, training_flops_per_token
from planner.specs import limits as L
from planner.specs.hardware import ClusterSpec, GPUSpec, LinkSpec
from planner.specs.model import ModelSpec

DEFAULT_FLOPS_SEQ_LEN = 4096
ALWAYS_SHOWN = frozenset(
    {"mlp_activation", "normalization", "position_embedding", "tie_embeddings"}
)

models_app = typer.Typer(
    help="The model catalogue and the HuggingFace importer.", no_args_is_help=True
)
hardware_app = typer.Typer(help="GPUs, interconnects and cluster presets.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON and nothing else.")]
SeqLenOption = Annotated[
    int | None,
    typer.Option(
        "--seq-len",
        min=1,
        help="Sequence length for FLOPs per token [default: 4096 or the model context].",
    ),
]


def model_summary(spec: ModelSpec, *, seq_len: int | None = None) -> dict[str, Any]:
    """The JSON form of a model: its spec plus parameter counts and training FLOPs per token."""
    seq = seq_len or min(DEFAULT_FLOPS_SEQ_LEN, spec.max_position_embeddings)
    counts = count_params(spec)
    return {
        "spec": spec.model_dump(mode="json"),
        "params_total": counts.total,
        "params_active": counts.active,
        "flops_per_token": training_flops_per_token(spec, seq),
        "flops_seq_len": seq,
    }


@models_app.command("list")
def list_models(as_json: JsonOption = False) -> None:
    """A table of every catalogue model."""
    entries = catalog.list_catalog_models()
    if as_json:
        print_json(
            [
                {"name": e.spec.name, "display_name": e.display_name, **model_summary(e.spec)}
                for e in entries
            ]
        )
        return
    table = Table(title=f"autopar model catalogue ({len(entries)} models)")
    for column in ("name", "family", "layers", "hidden", "heads q/kv", "ffn", "vocab"):
        table.add_column(column, justify="left" if column in ("name", "family") else "right")
    table.add_column("params", justify="right")
    table.add_column("active", justify="right")
    for entry in entries:
        spec = entry.spec
        counts = count_params(spec)
        ffn = str(spec.ffn_hidden_size)
        if spec.moe is not None:
            ffn = f"{spec.moe.num_experts}x{spec.moe.expert_ffn_hidden_size}"
        table.add_row(
            spec.name,
            spec.family,
            str(spec.num_layers),
            str(spec.hidden_size),
            f"{spec.num_attention_heads}/{spec.kv_heads}" if spec.mla is None else "MLA",
            ffn,
            str(spec.vocab_size),
            human_count(counts.total),
            human_count(counts.active) if spec.moe is not None else "",
        )
    console().print(table)


@models_app.command("show")
def show_model(
    model: Annotated[str, typer.Argument(help="Catalogue name, model file or HF config.json.")],
    seq_len: SeqLenOption = None,
    as_json: JsonOption = False,
) -> None:
    """One model's shape, parameter count and training FLOPs per token."""
    spec = catalog.load_model(model)
    summary = model_summary(spec, seq_len=seq_len)
    if as_json:
        print_json(summary)
        return
    _print_model(spec, summary)


@models_app.command("import")
def import_model(
    path: Annotated[Path, typer.Argument(help="A HuggingFace config.json.")],
    name: Annotated[
        str | None,
        typer.Option(help=f"Name for the model: {L.NAME_RULE}. [default: from the config]"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the spec as JSON (usable as --model FILE).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Import a HuggingFace config.json into a model spec."""
    if name is not None:
        L.check_name(name, field="--name")
    if not path.is_file():
        raise SpecError(f"models import: file not found: {path}")
    spec = catalog.import_hf_config(path, name=name)
    for item in hf_import.unmodelled(hf_import.read_hf_config(path)):
        print(
            f"autopar: warning: {item} is not modelled (no parameter count, memory or step "
            "time depends on it here); the spec leaves it out",
            file=sys.stderr,
        )
    summary = model_summary(spec)
    if out is not None:
        write_text(out, json.dumps(summary["spec"], indent=2) + "\n", option="--out")
    if as_json:
        print_json(summary)
        return
    _print_model(spec, summary)
    if out is not None:
        console().print(f"spec written to {out}")


def _print_model(spec: ModelSpec, summary: dict[str, Any]) -> None:
    table = Table(title=f"{spec.name} (other fields at their defaults)")
    table.add_column("field")
    table.add_column("value")
    for key, value in spec.model_dump(exclude={"moe", "mla", "name", "source"}).items():
        field = ModelSpec.model_fields[key]
        shown = field.is_required() or value != field.default or key in ALWAYS_SHOWN
        if value is not None and shown:
            table.add_row(key, str(value))
    for block in ("moe", "mla"):
        value = getattr(spec, block)
        if value is not None:
            for key, item in value.model_dump().items():
                if item is not None:
                    table.add_row(f"{block}.{key}", str(item))
    table.add_row(
        "parameters (total)",
        f"{summary['params_total']:,} ({human_count(summary['params_total'])})",
    )
    if spec.moe is not None:
        table.add_row(
            "parameters (active)",
            f"{summary['params_active']:,} ({human_count(summary['params_active'])})",
        )
    table.add_row(
        f"training FLOPs/token (seq {summary['flops_seq_len']})",
        f"{summary['flops_per_token']:.4g}",
    )
    table.add_row("source", spec.source or "")
    console().print(table)


@hardware_app.command("list")
def list_hardware(as_json: JsonOption = False) -> None:
    """GPUs, interconnects and cluster presets."""
    gpus, links = catalog.list_gpus(), catalog.list_links()
    clusters = [catalog.load_cluster(preset) for preset in catalog.list_cluster_presets()]
    if as_json:
        print_json(
            {
                "gpus": [gpu.model_dump(mode="json") for gpu in gpus],
                "interconnects": [link.model_dump(mode="json") for link in links],
                "clusters": [_cluster_json(cluster) for cluster in clusters],
            }
        )
        return
    console().print(_gpu_table(gpus))
    console().print(_link_table(links))
    console().print(_cluster_table(clusters))


@hardware_app.command("show")
def show_hardware(
    ident: Annotated[str, typer.Argument(help="A GPU, interconnect or cluster-preset id.")],
    as_json: JsonOption = False,
) -> None:
    """One GPU, interconnect or cluster preset."""
    item: GPUSpec | LinkSpec | ClusterSpec
    if ident in {gpu.id for gpu in catalog.list_gpus()}:
        item = catalog.load_gpu(ident)
    elif ident in {link.id for link in catalog.list_links()}:
        item = catalog.load_link(ident)
    elif ident in catalog.list_cluster_presets():
        item = catalog.load_cluster(ident)
    else:
        known = [gpu.id for gpu in catalog.list_gpus()] + catalog.list_cluster_presets()
        raise UnknownNameError(
            f"unknown hardware '{ident}'; known GPUs and presets: {', '.join(known)} "
            "(autopar hardware list shows interconnects too)"
        )
    if as_json:
        print_json(
            _cluster_json(item) if isinstance(item, ClusterSpec) else item.model_dump(mode="json")
        )
        return
    if isinstance(item, GPUSpec):
        console().print(_gpu_table([item]))
    elif isinstance(item, LinkSpec):
        console().print(_link_table([item]))
    else:
        console().print(_cluster_table([item]))
        console().print(_gpu_table([item.gpu]))
        console().print(_link_table([item.intra_node, item.inter_node]))


def _cluster_json(cluster: ClusterSpec) -> dict[str, Any]:
    return {
        **cluster.model_dump(mode="json"),
        "nodes": cluster.nodes,
        "inter_node_bandwidth_per_gpu_gbps": cluster.inter_node_bandwidth_per_gpu_gbps,
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _gpu_table(gpus: list[GPUSpec]) -> Table:
    table = Table(title="GPUs (dense peaks, TFLOP/s)")
    for column in ("id", "name", "memory GiB", "HBM GB/s", "fp32", "tf32", "bf16", "fp8"):
        table.add_column(column, justify="left" if column in ("id", "name") else "right")
    for gpu in gpus:
        peaks = gpu.peak_tflops
        table.add_row(
            gpu.id,
            gpu.name,
            _fmt(gpu.memory_gib),
            _fmt(gpu.hbm_bandwidth_gbps),
            _fmt(peaks.fp32),
            _fmt(peaks.tf32),
            _fmt(peaks.bf16),
            _fmt(peaks.fp8),
        )
    return table


def _link_table(links: list[LinkSpec]) -> Table:
    table = Table(title="Interconnects (per GPU or port, per direction)")
    for column in ("id", "name", "kind", "scope", "GB/s", "latency us"):
        table.add_column(column, justify="right" if column in ("GB/s", "latency us") else "left")
    for link in links:
        table.add_row(
            link.id,
            link.name,
            link.kind,
            link.scope,
            _fmt(link.bandwidth_gbps),
            _fmt(link.latency_us),
        )
    return table


def _cluster_table(clusters: list[ClusterSpec]) -> Table:
    table = Table(title="Cluster presets (per node)")
    for column in ("id", "gpu", "gpus/node", "intra-node", "inter-node", "NICs", "inter GB/s/GPU"):
        table.add_column(column)
    for cluster in clusters:
        table.add_row(
            cluster.name,
            cluster.gpu.id,
            str(cluster.gpus_per_node),
            cluster.intra_node.id,
            cluster.inter_node.id,
            str(cluster.nics_per_node),
            _fmt(cluster.inter_node_bandwidth_per_gpu_gbps),
        )
    return table
