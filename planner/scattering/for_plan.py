"""Scattering for ``autopar plan --length-dist NAME | --seq-lengths FILE``.

``plan_batches`` gives the lengths a plan is priced on: batches sampled from the
distribution with the plan's tokens per step (global batch x ``--seq-len``), or the
user's own, documents cut at ``--seq-len`` (the longest sample a layout holds, as a
pretraining pipeline cuts them). The search prices every layout over them
(``planner.search.length_pricing``). Then, for the best plan's cluster, the per-batch
scattering solver (``planner.scattering.scatter``) places each batch's sequences on SP
groups of different sizes and compares that with the best single static degree; the
answer is a ``ScatterSummary`` on the best plan, with the search's verdict on the plan's
own layout (``with_search_verdict``), which the emitters read.
"""

from __future__ import annotations

import numpy as np

from planner.errors import SpecError, UnknownNameError
from planner.scattering.lengths import (
    cut,
    list_distributions,
    load_distribution,
    parse_batches,
    sample_batches,
    sample_lengths,
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


def plan_batches(
    option: LengthsOption, *, seq_len: int, global_batch: int
) -> tuple[list[list[int]], str]:
    """The batches of lengths a plan is priced and scattered on, and where they came from:
    ``option.samples`` batches of the plan's tokens per step (global batch x sequence
    length) sampled from the distribution with ``option.seed``, or the user's batches.
    Documents longer than ``seq_len`` are cut into pieces of at most that many tokens."""
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
        return batches, source
    batches = [cut(batch, seq_len) for batch in parse_batches(option.batches)]
    return batches, option.source or "given lengths"


PRICING_DOCUMENTS = 1_000_000
"""Documents drawn to price layouts over a named distribution: the expected step depends
on the tail (sum s^2 / sum s), which a couple of batches sample poorly (two batches of
2M tokens from the Wikipedia sample give token-weighted mean lengths 7.8K and 13.5K at a
32K cut); a million documents, the size of FlexSP's own sample, pins it within a few per
cent."""


def pricing_lengths(option: LengthsOption, *, seq_len: int) -> tuple[np.ndarray, str]:
    """The document pieces layouts are priced on (``planner.search.length_pricing``): for
    a distribution, ``PRICING_DOCUMENTS`` documents drawn with ``option.seed``; else the
    user's batches, all of them. Cut at ``seq_len`` (the order does not matter here)."""
    if option.distribution is not None:
        dist = load_distribution(option.distribution)
        rng = np.random.default_rng(option.seed)
        drawn = np.asarray(
            sample_lengths(dist, PRICING_DOCUMENTS, max_seq_len=seq_len, rng=rng), dtype=np.int64
        )
        source = f"{dist.name} ({dist.source}), {PRICING_DOCUMENTS:,} documents, seed {option.seed}"
    else:
        drawn = np.asarray([n for b in parse_batches(option.batches) for n in b], dtype=np.int64)
        source = option.source or "given lengths"
    whole, rest = np.divmod(drawn, seq_len)
    pieces = np.concatenate([np.full(int(whole.sum()), seq_len, dtype=np.int64), rest[rest > 0]])
    return pieces, source


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
    batches, source = plan_batches(option, seq_len=seq_len, global_batch=global_batch)
    result = scatter(
        model=model, cluster=cluster, batches=batches, max_seq_len=seq_len,
        precision=precision, time_limit_s=option.time_limit_s, lengths_source=source,
    )  # fmt: skip
    return summarize(result, max_seq_len=seq_len)


def with_search_verdict(
    summary: ScatterSummary,
    *,
    hybrid: bool,
    static_step_s: float,
    hybrid_step_s: float | None,
    cp_sizes: list[int],
    reason: str,
) -> ScatterSummary:
    """``summary`` with the search's verdict on the plan's own layout (its length pricing,
    on the plan's full cost model) as ``wins``, ``reason``, ``speedup_over_static`` and,
    where hybrid context parallel wins, its CP sizes as ``sp_sizes``: that verdict, not the
    per-batch solver's, decides what the launch files run. The solver's figures stay in
    the other fields and in ``reason``."""
    update: dict[str, object] = {
        "wins": hybrid,
        "reason": f"{reason}; per-batch scattering solver: {summary.reason}",
        "decided_by": "search",
        "search_static_step_time_s": static_step_s,
        "search_hybrid_step_time_s": hybrid_step_s,
    }
    if hybrid and hybrid_step_s:
        update["speedup_over_static"] = static_step_s / hybrid_step_s
        update["sp_sizes"] = cp_sizes
    return summary.model_copy(update=update)


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
