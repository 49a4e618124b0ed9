"""Fit the achievable rates of a GPU to its measured training steps, with held-out error.

The time model needs four numbers per GPU that no datasheet gives: the fraction of the
dense matrix peak that GEMMs reach, the fraction fused attention kernels reach, the
fraction of HBM bandwidth element-wise kernels reach, and the host overhead per kernel
launch (eager PyTorch launches one kernel per op). They are fitted here, in one place,
to our own measured steps (``benchmarks/measure``, stored under
``hardware_db/profiles/<gpu>/<profile>/train_steps.jsonl``):

* the records are split by position: even-numbered runs fit, odd-numbered runs are held
  out, and both errors are reported;
* the objective is the mean squared log ratio of predicted to measured median step time;
* it is minimised by coordinate descent over bounded grids that narrow around the best
  value, started from the best points of a seeded random scan (no gradient: the
  roofline's ``max`` is not smooth).

A measured GEMM/attention profile (``autopar profile``, a later issue) will replace the
fitted efficiencies where it exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from planner.cost.compute import Rates, Work, total_time
from planner.specs.hardware import GPUSpec

RANDOM_SEED = 0
SCAN_POINTS = 1500
BOUNDS: dict[str, tuple[float, float]] = {
    "gemm": (0.2, 1.0),
    "attention": (0.1, 1.0),
    "memory": (0.2, 1.0),
    "overhead_us": (0.0, 100.0),
}


@dataclass(frozen=True)
class Efficiencies:
    """Fractions of the datasheet peaks and the per-kernel overhead, with fit quality."""

    gemm: float
    attention: float
    memory: float
    kernel_overhead_s: float
    fit_mape_pct: float
    holdout_mape_pct: float
    runs_fit: int
    runs_holdout: int
    source: str

    def rates(self, gpu: GPUSpec, dtype: str) -> Rates:
        peak = gpu.peak_flops(dtype)  # type: ignore[arg-type]
        return Rates(
            gemm_flops=peak * self.gemm,
            attention_flops=peak * self.attention,
            memory_bytes_per_s=gpu.hbm_bandwidth_gbps * 1e9 * self.memory,
            kernel_overhead_s=self.kernel_overhead_s,
            source=self.source,
        )


@dataclass(frozen=True)
class Sample:
    """One measured run: its work list (for the whole step) and its median step time."""

    works: tuple[Work, ...]
    measured_s: float


@dataclass(frozen=True)
class _Arrays:
    """A sample's work as arrays, so a candidate's step time is one vectorised roofline."""

    gemm_flops: np.ndarray
    attention_flops: np.ndarray
    bytes: np.ndarray
    kernels: np.ndarray
    measured_s: float

    @classmethod
    def of(cls, sample: Sample) -> _Arrays:
        works = sample.works
        return cls(
            gemm_flops=np.array([w.flops if w.kind == "gemm" else 0.0 for w in works]),
            attention_flops=np.array([w.flops if w.kind == "attention" else 0.0 for w in works]),
            bytes=np.array([w.bytes for w in works]),
            kernels=np.array([float(w.kernels) for w in works]),
            measured_s=sample.measured_s,
        )

    def step_s(self, rates: Rates) -> float:
        """Same as ``compute.total_time`` over the sample's works."""
        times = np.maximum.reduce(
            [
                self.gemm_flops / rates.gemm_flops + self.attention_flops / rates.attention_flops,
                self.bytes / rates.memory_bytes_per_s,
                self.kernels * rates.kernel_overhead_s,
            ]
        )
        return float(times.sum())


def _rates(values: dict[str, float], *, peak_flops: float, bandwidth: float) -> Rates:
    return Rates(
        gemm_flops=peak_flops * values["gemm"],
        attention_flops=peak_flops * values["attention"],
        memory_bytes_per_s=bandwidth * values["memory"],
        kernel_overhead_s=values["overhead_us"] * 1e-6,
    )


def _loss(samples: Sequence[_Arrays], rates: Rates) -> float:
    return sum(math.log(s.step_s(rates) / s.measured_s) ** 2 for s in samples) / len(samples)


def mape_pct(samples: Sequence[Sample], rates: Rates) -> float:
    errors = [abs(total_time(list(s.works), rates) / s.measured_s - 1) for s in samples]
    return 100 * sum(errors) / len(errors)


def fit_efficiencies(
    samples: Sequence[Sample],
    *,
    peak_flops: float,
    bandwidth: float,
    source: str,
    rounds: int = 24,
    points: int = 11,
    shrink: float = 0.7,
) -> Efficiencies:
    """Random scan, then coordinate descent; even samples fit, odd samples hold out.

    A seeded scan of ``SCAN_POINTS`` points in the bounds picks the three best starts; each
    round of the descent tries ``points`` values of one parameter at a time across a
    window around the current best and narrows the window by ``shrink``. The roofline's
    ``max`` makes the loss non-smooth and its parameters coupled, which is why a single
    descent from a fixed start is not enough.
    """
    train, holdout = list(samples[0::2]), list(samples[1::2])
    if not train:
        raise ValueError("no measured runs to fit")
    arrays = [_Arrays.of(sample) for sample in train]

    def loss_of(values: dict[str, float]) -> float:
        return _loss(arrays, _rates(values, peak_flops=peak_flops, bandwidth=bandwidth))

    # a seeded random scan of the box finds the basins; descent refines the best three
    rng = np.random.default_rng(RANDOM_SEED)
    scan = [
        {name: float(rng.uniform(low, high)) for name, (low, high) in BOUNDS.items()}
        for _ in range(SCAN_POINTS)
    ]
    starts = sorted(scan, key=loss_of)[:3]
    refined = [
        _descend(
            arrays,
            values=start,
            peak_flops=peak_flops,
            bandwidth=bandwidth,
            rounds=rounds,
            points=points,
            shrink=shrink,
        )
        for start in starts
    ]
    values = min(refined, key=loss_of)
    rates = _rates(values, peak_flops=peak_flops, bandwidth=bandwidth)
    return Efficiencies(
        gemm=values["gemm"],
        attention=values["attention"],
        memory=values["memory"],
        kernel_overhead_s=values["overhead_us"] * 1e-6,
        fit_mape_pct=mape_pct(train, rates),
        holdout_mape_pct=mape_pct(holdout, rates) if holdout else float("nan"),
        runs_fit=len(train),
        runs_holdout=len(holdout),
        source=source,
    )


def _descend(
    arrays: Sequence[_Arrays],
    *,
    values: dict[str, float],
    peak_flops: float,
    bandwidth: float,
    rounds: int,
    points: int,
    shrink: float,
) -> dict[str, float]:
    values = dict(values)
    spans = {name: (high - low) / 4 for name, (low, high) in BOUNDS.items()}

    def loss_with(name: str) -> Callable[[float], float]:
        def loss(value: float) -> float:
            trial = {**values, name: value}
            return _loss(arrays, _rates(trial, peak_flops=peak_flops, bandwidth=bandwidth))

        return loss

    for _ in range(rounds):
        for name, (low, high) in BOUNDS.items():
            center, span = values[name], spans[name]
            grid_low, grid_high = max(low, center - span / 2), min(high, center + span / 2)
            grid = [grid_low + (grid_high - grid_low) * i / (points - 1) for i in range(points)]
            values[name] = min(grid, key=loss_with(name))
            spans[name] = span * shrink
    return values
