"""``autopar scatter``: place batches of variable-length sequences on sequence-parallel
groups of different sizes, and compare with the static and greedy alternatives."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from planner import catalog
from planner.cli.inputs import (
    ClusterOption,
    GlobalBatchTokensOption,
    JsonOption,
    ModelOption,
    PrecisionOption,
    parse_tokens,
)
from planner.cli.output import console, print_json
from planner.errors import SpecError
from planner.scattering import ScatterResult, read_lengths_file, sample_batches, scatter
from planner.scattering.lengths import DEFAULT_GLOBAL_BATCH_TOKENS, load_distribution
from planner.scattering.run import DEFAULT_TIME_LIMIT_S

CP_ALGOS = ("ulysses", "ring", "auto")
SHOWN_GROUPS = 12
"""Groups listed per micro-batch in the table (``--json`` has them all)."""


def scatter_command(
    model: ModelOption,
    cluster: ClusterOption,
    gpus: Annotated[int, typer.Option(min=1, help="Total GPUs (a power of two).")],
    seq_lengths: Annotated[
        str | None,
        typer.Option(
            "--seq-lengths",
            help="File: one length per line, or JSON (a list of lengths or of batches).",
        ),
    ] = None,
    length_dist: Annotated[
        str | None,
        typer.Option(
            "--length-dist",
            help="Shipped distribution (wikipedia-flexsp, code-files, uniform, fixed).",
        ),
    ] = None,
    max_seq_len: Annotated[
        int | None,
        typer.Option(
            "--max-seq-len",
            min=1,
            help="Cut longer documents into pieces of this many tokens [sampled: 32768].",
        ),
    ] = None,
    global_batch_tokens: GlobalBatchTokensOption = None,
    batches: Annotated[
        int, typer.Option("--batches", min=1, max=64, help="Batches to sample.")
    ] = 1,
    cp_algo: Annotated[str, typer.Option("--cp-algo", help="ulysses | ring | auto.")] = "auto",
    time_limit: Annotated[
        float, typer.Option("--time-limit", min=0.01, help="Solver seconds per batch.")
    ] = DEFAULT_TIME_LIMIT_S,
    seed: Annotated[int, typer.Option(min=0, help="Seed for sampling lengths.")] = 0,
    precision: PrecisionOption = "bf16",
    as_json: JsonOption = False,
) -> None:
    """Scatter sequences over SP groups; print micro-batches, groups, time, memory, speed-ups."""
    if (seq_lengths is None) == (length_dist is None):
        raise SpecError("give exactly one of --seq-lengths FILE and --length-dist NAME")
    if cp_algo not in CP_ALGOS:
        raise SpecError(f"--cp-algo: unknown '{cp_algo}'; known: {', '.join(CP_ALGOS)}")
    model_spec = catalog.load_model(model)
    cluster_spec = catalog.load_cluster(cluster, gpus=gpus)
    if seq_lengths is not None:
        lengths = read_lengths_file(seq_lengths)
        source = f"file {seq_lengths}"
    else:
        assert length_dist is not None
        dist = load_distribution(length_dist)
        tokens = (
            DEFAULT_GLOBAL_BATCH_TOKENS
            if global_batch_tokens is None
            else parse_tokens(global_batch_tokens, option="--global-batch-tokens", whole=True)
        )
        lengths = sample_batches(
            length_dist, batches=batches, global_batch_tokens=tokens, max_seq_len=max_seq_len,
            seed=seed,
        )  # fmt: skip
        source = f"{dist.name} ({dist.source}), {batches} batch(es) of {tokens} tokens, seed {seed}"
    result = scatter(
        model=model_spec, cluster=cluster_spec, batches=lengths, max_seq_len=max_seq_len,
        cp_algo=cp_algo,  # type: ignore[arg-type]
        precision=precision, time_limit_s=time_limit, lengths_source=source,
    )  # fmt: skip
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    render(result)


def render(result: ScatterResult) -> None:
    out = console()
    cost = result.cost
    out.print(
        f"{result.model} on {result.gpus} x {result.gpu} ({result.gpus_per_node} per node), "
        f"lengths: {result.lengths_source}"
    )
    out.print(
        f"Per GPU: {cost.capacity_gib:.1f} GiB, {cost.fixed_gib:.1f} GiB of model states, "
        f"{cost.bytes_per_token / 2**20:.2f} MiB per token: {cost.tokens_per_gpu:,} tokens. "
        f"Time: {cost.time_source}."
    )
    for batch in result.batches:
        table = Table(
            title=(
                f"Batch {batch.index}: {batch.sequences} sequences, {batch.tokens:,} tokens "
                f"(longest {batch.longest:,}); {batch.method}, solver {batch.status} in "
                f"{batch.solve_s:.2f} s"
            )
        )
        for column in ("micro", "SP", "where", "exchange", "seqs", "tokens", "time s", "GiB/GPU"):
            table.add_column(column, justify="right")
        table.add_column("sequences (index:length)")
        for m, micro in enumerate(batch.micro_batches):
            for g, group in enumerate(micro.groups[:SHOWN_GROUPS]):
                members = ", ".join(
                    f"{i}:{n}"
                    for i, n in list(zip(group.sequences, group.lengths, strict=True))[:6]
                )
                more = len(group.sequences) - 6
                table.add_row(
                    f"{m}" if g == 0 else "",
                    str(group.size),
                    group.placement,
                    group.exchange,
                    str(len(group.sequences)),
                    f"{group.tokens:,}",
                    f"{group.time_s:.3f}",
                    f"{group.memory_per_gpu_gib:.1f}",
                    members + (f" (+{more})" if more > 0 else ""),
                )
            hidden = len(micro.groups) - SHOWN_GROUPS
            if hidden > 0:
                table.add_row("", "", "", "", "", "", "", "", f"... {hidden} more groups (--json)")
        out.print(table)
        parts = "; ".join(
            f"{b.name} {b.step_time_s:.3f} s ({b.speedup:.2f}x)" for b in batch.baselines
        )
        out.print(
            f"Predicted {batch.step_time_s:.3f} s in {len(batch.micro_batches)} micro-batches. "
            f"Others (speed-up of this plan over them): {parts}."
        )
    summary = result.summary
    speedups = ", ".join(f"{name} {x:.2f}x" for name, x in summary.speedups.items())
    out.print(
        f"All batches: {summary.step_time_s:.3f} s predicted; speed-up over {speedups}; "
        f"solve {summary.solve_s:.2f} s; {summary.fallback_batches} batch(es) kept a baseline."
    )
