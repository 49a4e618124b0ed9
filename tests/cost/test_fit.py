"""The rate fit recovers known efficiencies from synthetic steps, and reports held-out error."""

from __future__ import annotations

import random

import pytest

from planner.cost.compute import Work, total_time
from planner.cost.fit import Sample, _rates, fit_efficiencies
from planner.cost.rates import fitted_efficiencies

PEAK, BANDWIDTH = 1e15, 3e12


def _synthetic(truth: dict[str, float], count: int, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    rates = _rates(truth, peak_flops=PEAK, bandwidth=BANDWIDTH)
    samples = []
    for _ in range(count):
        works = (
            Work("gemm", flops=rng.uniform(1e12, 1e14), bytes=rng.uniform(1e8, 1e10)),
            Work("attention", flops=rng.uniform(1e11, 3e13), bytes=1e8),
            Work("memory", bytes=rng.uniform(1e9, 5e10), kernels=rng.randint(100, 3000)),
            Work("memory", bytes=1e6, kernels=rng.randint(100, 2000)),
        )
        samples.append(Sample(works=works, measured_s=total_time(list(works), rates)))
    return samples


def test_fit_recovers_the_efficiencies_it_was_generated_with() -> None:
    truth = {"gemm": 0.71, "attention": 0.35, "memory": 0.83, "overhead_us": 9.0}
    fitted = fit_efficiencies(
        _synthetic(truth, 24, seed=1), peak_flops=PEAK, bandwidth=BANDWIDTH, source="synthetic"
    )
    assert fitted.gemm == pytest.approx(0.71, abs=0.02)
    assert fitted.attention == pytest.approx(0.35, abs=0.03)
    assert fitted.memory == pytest.approx(0.83, abs=0.03)
    assert fitted.kernel_overhead_s == pytest.approx(9e-6, abs=1.5e-6)
    assert fitted.holdout_mape_pct < 1.0
    assert fitted.runs_fit == 12 and fitted.runs_holdout == 12


def test_h100_fit_reports_its_held_out_error() -> None:
    fitted = fitted_efficiencies("h100-sxm")
    assert fitted is not None
    assert fitted.runs_fit + fitted.runs_holdout >= 30
    assert 0 < fitted.gemm <= 1 and 0 < fitted.memory <= 1
    # the fit is checked on runs it never saw; the benchmark prints the full table
    assert fitted.holdout_mape_pct < 10.0
