"""Scattering for ``autopar plan --length-dist NAME | --seq-lengths FILE``.

The search prices layouts on the workload's one fixed sequence length (``--seq-len``,
required: it is also where documents are cut, as a pretraining pipeline cuts them). With
a length distribution the plan then asks, for the best plan's cluster: would scattering
each batch's sequences over SP groups of different sizes (``planner.scattering.scatter``)
beat the best single static degree? Batches are sampled from the distribution with the
plan's tokens per step (global batch x sequence length), or are the user's own.
The answer is a ``ScatterSummary`` on the best plan, which the Megatron emitter reads.
"""

from __future__ import annotations

from planner.errors import SpecError, UnknownNameError
from planner.scattering.lengths import (
    list_distributions,
    load_distribution,
    parse_batches,
    sample_batches,
)
from planner.scattering.result import ScatterResult, ScatterSummary
from planner.scattering.run import scatter
from planner.specs.hardware import ClusterSpec
from planner.specs.model import ModelSpec
from planner.specs.request import LengthsOption


def check_lengths_option(option: LengthsOption, *, gpus: int) -> None:
    """Before any search: exactly one source of lengths, a known distribution, lengths
    that are positive whole numbers, and a power-of-two GPU count (SP group sizes are
    powers of two). One-line ``SpecError``s naming the option."""
    if (option.distribution is None) == (option.batches is None):
        raise SpecError("lengths: give exactly one of --seq-lengths FILE and --length-dist NAME")
    if option.distribution is not None:
        if option.distribution not in list_distributions():  # only names, never a path
            raise UnknownNameError(
                f"length-dist: unknown '{option.distribution}'; known: "
                + ", ".join(list_distributions())
            )
    else:
        parse_batches(option.batches)
    if gpus & (gpus - 1):
        raise SpecError(
            f"--length-dist/--seq-lengths: sequence-parallel groups are powers of two, so the "
            f"GPU count must be one too (got {gpus})"
        )


def scatter_for_plan(
    option: LengthsOption,
    *,
    model: ModelSpec,
    cluster: ClusterSpec,
    seq_len: int,
    global_batch: int,
    precision: str,
) -> ScatterSummary:
    """The best plan's cluster, scattering against the best static degree (module docstring)."""
    if option.distribution is not None:
        dist = load_distribution(option.distribution)
        tokens = seq_len * global_batch
        batches = sample_batches(
            dist.name, batches=option.samples, global_batch_tokens=tokens,
            max_seq_len=seq_len, seed=option.seed,
        )  # fmt: skip
        source = (
            f"{dist.name} ({dist.source}), {option.samples} batch(es) of {tokens} tokens, "
            f"seed {option.seed}"
        )
    else:
        batches = parse_batches(option.batches)
        source = option.source or "given lengths"
    result = scatter(
        model=model, cluster=cluster, batches=batches, max_seq_len=seq_len,
        precision=precision, time_limit_s=option.time_limit_s, lengths_source=source,
    )  # fmt: skip
    return summarize(result, max_seq_len=seq_len)


def _static_degree(detail: str) -> int:
    """The degree of a static baseline's detail, ``degree D, G groups``."""
    return int(detail.split(",")[0].removeprefix("degree "))


def summarize(result: ScatterResult, *, max_seq_len: int) -> ScatterSummary:
    """The plan's view of a ``ScatterResult``: totals against the best static degree."""
    summary = result.summary
    static = summary.baselines["static"]
    speedup = summary.speedups["static"]
    degrees = [
        _static_degree(next(b.detail for b in r.baselines if b.name == "static"))
        for r in result.batches
    ]
    sizes = sorted(
        {
            group.size
            for batch in result.batches
            if batch.method == "scatter"
            for micro in batch.micro_batches
            for group in micro.groups
        }
    )
    wins = summary.step_time_s < static
    if wins:
        reason = (
            f"scattering over SP groups of {', '.join(map(str, sizes))} GPUs is predicted "
            f"{speedup:.2f}x faster than the best static degree "
            f"({', '.join(map(str, sorted(set(degrees))))}) on these lengths"
        )
    else:
        reason = (
            "no faster than the best static degree on these lengths: every batch keeps one "
            "degree (" + ", ".join(map(str, sorted(set(degrees)))) + ")"
        )
    return ScatterSummary(
        lengths_source=result.lengths_source,
        batches=len(result.batches),
        gpus=result.gpus,
        max_seq_len=max_seq_len,
        step_time_s=summary.step_time_s,
        static_step_time_s=static,
        megatron_hybrid_cp_step_time_s=summary.baselines["megatron_hybrid_cp"],
        speedup_over_static=speedup,
        static_degrees=degrees,
        sp_sizes=sizes,
        wins=wins,
        reason=reason,
        solve_s=summary.solve_s,
    )
