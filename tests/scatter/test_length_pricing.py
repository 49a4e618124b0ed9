"""``planner.search.length_pricing``: the search prices layouts over a length distribution.

The mixture keeps the token-weighted mean length exactly; one length everywhere prices as
the fixed length; the search's best equals a brute force of ``estimate()`` over the
grid; a long-tailed distribution chooses a layout that holds its longest documents where
planning at the mean length chooses one that cannot."""

from __future__ import annotations

import random

import pytest

from planner.catalog import load_cluster, load_model
from planner.plan import LengthsOption, PlanRequest, plan
from planner.predict import estimate
from planner.scattering.for_plan import plan_batches
from planner.search.candidates import enumerate_space
from planner.search.driver import search
from planner.search.length_pricing import (
    MIN_BUCKET_TOKENS,
    DistributionTimer,
    grid,
    length_mix,
)
from planner.specs.layout import ParallelConfig
from planner.specs.workload import WorkloadSpec


def test_the_grid_halves_while_exact() -> None:
    assert grid(8192) == (8192, 4096, 2048, 1024, 512, 256)
    assert grid(3000) == (3000, 1500, 750, 375)
    assert grid(200) == (200,)


def test_the_mix_keeps_the_token_weighted_mean_length() -> None:
    rng = random.Random(7)
    pieces = [rng.randint(MIN_BUCKET_TOKENS, 8192) for _ in range(500)]
    mix = length_mix(pieces, max_len=8192, source="test")
    assert sum(mix.shares) == pytest.approx(1.0)
    assert sum(w * g for w, g in zip(mix.shares, mix.lengths, strict=True)) == pytest.approx(
        sum(s * s for s in pieces) / sum(pieces)
    )
    assert mix.token_mean_len > mix.mean_len  # the tail weighs more by tokens
    assert mix.below_grid_share == 0.0
    short = length_mix([10, 8192], max_len=8192, source="test")
    assert short.below_grid_share == pytest.approx(10 / 8202)
    with pytest.raises(ValueError, match=r"outside 1\.\.8192"):
        length_mix([9000], max_len=8192, source="test")


MODEL = load_model("llama-3.1-8b")


def _workload(seq_len: int, sequences: int) -> WorkloadSpec:
    return WorkloadSpec(seq_len=seq_len, global_batch=sequences)


def test_one_length_everywhere_prices_as_the_fixed_length() -> None:
    cluster = load_cluster("hgx-h200", gpus=8)
    workload = _workload(8192, 16)
    timer = DistributionTimer(length_mix([8192] * 64, max_len=8192, source="fixed"))
    fixed = search(MODEL, cluster, workload, top_k=2, time_limit_s=60)
    priced = search(MODEL, cluster, workload, top_k=2, time_limit_s=60, timer=timer)
    assert [p.config for p in priced.plans] == [p.config for p in fixed.plans]
    for entry, plain in zip(priced.plans, fixed.plans, strict=True):
        pricing = entry.length_pricing
        assert pricing is not None
        assert entry.time.step_time_s == pytest.approx(plain.time.step_time_s, rel=1e-6)
        assert pricing.fixed_length_step_time_s == pytest.approx(plain.time.step_time_s)
        assert pricing.token_mean_len == 8192


def _expected_step(layout: ParallelConfig, mix, *, cluster, seq_len, sequences, hybrid) -> float:
    """The mixture of the module docstring, rebuilt from ``estimate()`` alone."""
    total = 0.0
    carry = 0.0
    for k in reversed(range(len(mix.lengths))):
        g, share = mix.lengths[k], mix.shares[k] + carry
        cp = max(1, layout.cp >> k) if hybrid else layout.cp
        if k > 0 and (g % (2 * cp * layout.tp) or share == 0.0):
            carry = share
            continue
        carry = 0.0
        at_g = layout.model_copy(
            update={
                "cp": cp,
                "dp": layout.dp * layout.cp // cp,
                "mbs": layout.mbs * 2**k * cp // layout.cp,
            }
        )
        work = _workload(g, sequences * seq_len // g)
        total += (
            share
            * estimate(model=MODEL, cluster=cluster, workload=work, layout=at_g).time.step_time_s
        )
    return total


def test_the_search_finds_the_brute_force_best_expected_step() -> None:
    cluster = load_cluster("hgx-h200", gpus=4)
    seq_len, sequences = 8192, 8
    workload = _workload(seq_len, sequences)
    option = LengthsOption(distribution="wikipedia-flexsp", samples=1, seed=3)
    batches, source = plan_batches(option, seq_len=seq_len, global_batch=sequences)
    mix = length_mix([n for b in batches for n in b], max_len=seq_len, source=source)
    fixed = {"recompute": "none", "zero_stage": 0, "cp_comm_type": "p2p"}
    maxima = {"mbs": 2}
    timer = DistributionTimer(mix)
    found = search(
        MODEL, cluster, workload, top_k=1, time_limit_s=120, fixed=fixed, maxima=maxima,
        timer=timer, split_solver=False, headroom_gib=0.0, risk="neutral",
    )  # fmt: skip
    space = enumerate_space(MODEL, cluster, workload, fixed=fixed, maxima=maxima)
    assert len(space.layouts) >= 10
    best = None
    for layout in space.layouts:
        full = estimate(model=MODEL, cluster=cluster, workload=workload, layout=layout)
        if not full.memory.fits:
            continue
        resolved = layout.model_copy(update={"dp": full.config.dp})
        kwargs = dict(cluster=cluster, seq_len=seq_len, sequences=sequences)
        step = _expected_step(resolved, mix, hybrid=False, **kwargs)
        if resolved.cp > 1 and resolved.pp == 1 and not resolved.cp & (resolved.cp - 1):
            step = min(step, _expected_step(resolved, mix, hybrid=True, **kwargs))
        best = step if best is None else min(best, step)
    assert best is not None
    assert found.plans[0].time.step_time_s == pytest.approx(best, rel=1e-5)


def test_a_long_tail_chooses_a_layout_that_holds_it_where_the_mean_length_does_not() -> None:
    cluster = load_cluster("hgx-h200", gpus=8)
    tokens = 8 * 32768
    tail = LengthsOption(distribution="wikipedia-flexsp", samples=2)
    on_tail = plan(
        PlanRequest(model=MODEL, cluster=cluster, workload=_workload(32768, 8), top_k=1,
                    lengths=tail)
    )  # fmt: skip
    at_mean = plan(
        PlanRequest(model=MODEL, cluster=cluster, workload=_workload(1024, tokens // 1024),
                    top_k=1)
    )  # fmt: skip
    chosen, naive = on_tail.plans[0], at_mean.plans[0]
    pricing = chosen.length_pricing
    assert pricing is not None
    # the attention scales with the token-weighted mean length, far above the mean
    assert pricing.token_mean_len > 4 * pricing.mean_len
    layout = lambda entry: ParallelConfig(  # noqa: E731
        **{k: getattr(entry.config, k) for k in ("tp", "pp", "cp", "mbs", "recompute")}
    )
    assert layout(chosen) != layout(naive)
    # the mean-length plan cannot hold the distribution's 32K-token documents ...
    long = _workload(32768, 64)  # a whole number of its micro-batches; memory is per micro-batch
    assert not estimate(
        model=MODEL, cluster=cluster, workload=long, layout=layout(naive)
    ).memory.fits
    # ... the distribution's plan does, and its expected step is below the fixed 32K step
    assert chosen.memory.peak_gib <= chosen.memory.capacity_gib
    assert chosen.time.step_time_s < pricing.fixed_length_step_time_s


def test_deepspeed_runs_static_cp_and_says_why() -> None:
    cluster = load_cluster("hgx-h200", gpus=8)
    timer = DistributionTimer(length_mix([32768, 1024, 512] * 8, max_len=32768, source="t"))
    found = search(MODEL, cluster, _workload(32768, 8), framework="deepspeed", top_k=1,
                   timer=timer)  # fmt: skip
    pricing = found.plans[0].length_pricing
    assert pricing is not None and pricing.method == "static"
    assert pricing.hybrid_step_time_s is None
    assert "DeepSpeed has no hybrid context parallel" in pricing.reason


def test_the_tightening_bound_stays_below_the_full_bound_and_ends_equal_to_it() -> None:
    from planner.predict import prepare

    cluster = load_cluster("hgx-h200", gpus=8)
    workload = _workload(8192, 16)
    timer = DistributionTimer(length_mix([8192, 3000, 700, 300] * 8, max_len=8192, source="t"))
    layouts = [
        ParallelConfig(tp=1, cp=4, pp=1, mbs=1, dp=2),  # static and hybrid sums
        ParallelConfig(tp=2, cp=2, pp=2, mbs=1, dp=1),  # static only (pp > 1)
    ]
    for layout in layouts:
        prepared = prepare(model=MODEL, cluster=cluster, workload=workload, layout=layout)
        full = timer.bound(prepared)
        partial = timer.quick_bound(prepared)
        while not partial.exact:
            assert partial.value() <= full
            partial.tighten()
        assert partial.value() == full  # the same float, not approximately


def test_bound_order_is_the_sorted_order_with_partial_bounds() -> None:
    from dataclasses import dataclass

    from planner.search.tabulate import bound_order

    @dataclass
    class Partial:  # a bound reached in steps of its (random) parts
        parts: list[float]
        done: int = 1
        exact: bool = False

        def value(self) -> float:
            return sum(self.parts[: self.done])

        def tighten(self) -> None:
            self.done += 1
            self.exact = self.done >= len(self.parts)

    @dataclass
    class FakeRow:
        bound_refiner: Partial | None
        step_bound_s: float

        def refine_bound(self) -> None:
            assert self.bound_refiner is not None
            self.bound_refiner.tighten()
            self.step_bound_s = self.bound_refiner.value()
            if self.bound_refiner.exact:
                self.bound_refiner = None

    rng = random.Random(7)
    for _ in range(50):
        parts = [[rng.choice([0.0, 1.0, 2.0, 0.5]) for _ in range(3)] for _ in range(12)]
        rows = [FakeRow(Partial(p), p[0]) for p in parts]
        expected = sorted(range(12), key=lambda i: sum(parts[i]))
        index = {id(row): i for i, row in enumerate(rows)}
        got = [index[id(row)] for row in bound_order(rows, lambda row: row.step_bound_s)]
        assert got == expected
