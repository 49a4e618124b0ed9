"""``planner.scattering.for_plan`` through ``plan(PlanRequest(lengths=...))``: the best plan
carries the summary, which agrees with ``scatter()`` on the same lengths, with the search's
verdict on its layout; bad options are one-line errors naming them before any search."""

from __future__ import annotations

import re

import pytest

from planner.catalog import load_cluster, load_model
from planner.errors import AutoparError
from planner.plan import LengthsOption, PlanRequest, plan
from planner.scattering import scatter
from planner.scattering.for_plan import check_lengths_option, summarize
from planner.specs.workload import WorkloadSpec

LENGTHS = [[8192, 8192] + [1024] * 24, [4096] * 4 + [512] * 40]


def request(lengths: LengthsOption | None) -> PlanRequest:
    return PlanRequest(
        model=load_model("llama-3.1-8b"),
        cluster=load_cluster("hgx-h200", gpus=8),
        workload=WorkloadSpec(seq_len=8192, global_batch=8),
        top_k=2,
        lengths=lengths,
    )


def test_the_best_plan_carries_what_scatter_says() -> None:
    option = LengthsOption(batches=LENGTHS, source="test", time_limit_s=0.3)
    outcome = plan(request(option))
    best, runner_up = outcome.plans
    assert runner_up.scattering is None
    got = best.scattering
    assert got is not None
    direct = scatter(
        model=load_model("llama-3.1-8b"), cluster=load_cluster("hgx-h200", gpus=8),
        batches=LENGTHS, max_seq_len=8192, time_limit_s=0.3, lengths_source="test",
    )  # fmt: skip
    expected = summarize(direct, max_seq_len=8192)
    assert got.static_step_time_s == pytest.approx(expected.static_step_time_s)
    assert got.megatron_hybrid_cp_step_time_s == pytest.approx(
        expected.megatron_hybrid_cp_step_time_s
    )
    assert got.static_degrees == expected.static_degrees
    assert got.batches == 2 and got.gpus == 8 and got.lengths_source == "test"
    assert got.step_time_s <= got.static_step_time_s
    # the search priced the layouts over these lengths, and its verdict on the best
    # plan's layout decides whether the launch runs hybrid context parallel
    pricing = best.length_pricing
    assert pricing is not None and runner_up.length_pricing is not None
    assert got.decided_by == "search"
    assert got.wins == (pricing.method == "hybrid_cp")
    assert got.search_static_step_time_s == pricing.static_step_time_s
    assert best.time.step_time_s == min(
        pricing.static_step_time_s, pricing.hybrid_step_time_s or float("inf")
    )
    assert pricing.reason in got.reason and "per-batch scattering solver" in got.reason
    without = plan(request(None)).plans[0]
    assert without.length_pricing is None and without.scattering is None
    assert (
        pricing.fixed_length_step_time_s == pytest.approx(without.time.step_time_s)
        or without.config != best.config
    )


def test_summary_of_one_degree_everywhere_does_not_win() -> None:
    result = scatter(
        model=load_model("llama-3.1-8b"), cluster=load_cluster("hgx-h200", gpus=8),
        batches=[[8192] * 8], max_seq_len=8192, time_limit_s=0.3,
    )  # fmt: skip
    got = summarize(result, max_seq_len=8192)
    assert got.speedup_over_static == pytest.approx(1.0)
    assert not got.wins and "no faster than the best static degree" in got.reason


@pytest.mark.parametrize(
    ("option", "gpus", "message"),
    [
        (LengthsOption(), 8, "give exactly one of --seq-lengths FILE and --length-dist NAME"),
        (
            LengthsOption(distribution="uniform", batches=[[1]]),
            8,
            "give exactly one of --seq-lengths FILE and --length-dist NAME",
        ),
        (LengthsOption(distribution="code"), 8, "length-dist: unknown 'code'"),
        (LengthsOption(distribution="../data/uniform"), 8, "length-dist: unknown"),
        (LengthsOption(batches=[[5, 0]]), 8, "batch 0 item 1 must be a positive"),
        (LengthsOption(distribution="uniform"), 24, "GPU count must be one too (got 24)"),
    ],
)
def test_bad_options(option: LengthsOption, gpus: int, message: str) -> None:
    with pytest.raises(AutoparError, match=re.escape(message)):
        check_lengths_option(option, gpus=gpus)
