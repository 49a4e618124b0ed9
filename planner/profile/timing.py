"""Timing one operation: warm-up, adaptive repeats, device timers, robust statistics.

Every measurement runs the operation ``warmup`` times (untimed, then synchronised), takes
the last warm-up's wall time as a first guess ``t``, and repeats it
``clamp(ceil(target_point_s / t), min_repeats, max_repeats)`` times, timing each repeat
on its own: with CUDA events recorded on the current stream around it on a GPU (device
time, free of host jitter), with ``time.perf_counter`` around it on a CPU. The record
keeps the median (the value the reader uses), the 10th and 90th percentiles (linear
interpolation between order statistics, numpy's default) and the extremes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner.cost.profile_schema import Timing


@dataclass(frozen=True)
class TimerSettings:
    warmup: int
    min_repeats: int
    max_repeats: int
    target_point_s: float

    @classmethod
    def for_run(cls, *, quick: bool, device: str) -> TimerSettings:
        if quick:
            return cls(warmup=1, min_repeats=3, max_repeats=5, target_point_s=0.002)
        if device == "cpu":
            return cls(warmup=2, min_repeats=5, max_repeats=15, target_point_s=0.05)
        return cls(warmup=2, min_repeats=5, max_repeats=25, target_point_s=0.03)


def summarize(times_s: list[float]) -> Timing:
    """Median, p10, p90 and extremes of the repeats' times."""
    values = np.asarray(times_s, dtype=float)
    p10, median, p90 = np.percentile(values, [10, 50, 90])
    return Timing(
        median_s=float(median),
        p10_s=float(p10),
        p90_s=float(p90),
        min_s=float(values.min()),
        max_s=float(values.max()),
        repeats=len(times_s),
    )


class Timer:
    """Times callables on one torch device (``cuda`` with events, ``cpu`` with the clock)."""

    def __init__(self, torch: Any, device: Any, settings: TimerSettings) -> None:
        self.torch = torch
        self.device = device
        self.settings = settings
        self.cuda = device.type == "cuda"

    def synchronize(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def repeats_for(self, guess_s: float) -> int:
        s = self.settings
        wanted = math.ceil(s.target_point_s / max(guess_s, 1e-7))
        return min(max(wanted, s.min_repeats), s.max_repeats)

    def warm(self, op: Callable[[], Any]) -> float:
        """Run the warm-up; returns the last warm-up's wall time (synchronised)."""
        guess = 0.0
        for _ in range(self.settings.warmup):
            start = time.perf_counter()
            op()
            self.synchronize()
            guess = time.perf_counter() - start
        return guess

    def times(self, op: Callable[[], Any], repeats: int) -> list[float]:
        """Seconds of each of ``repeats`` back-to-back runs of ``op``."""
        if self.cuda:
            return self._cuda_times(op, repeats)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            op()
            times.append(time.perf_counter() - start)
        return times

    def measure(self, op: Callable[[], Any]) -> Timing:
        """Warm up, then time each repeat of ``op``; returns the statistics."""
        guess = self.warm(op)
        return summarize(self.times(op, self.repeats_for(guess)))

    def _cuda_times(self, op: Callable[[], Any], repeats: int) -> list[float]:
        events = [
            (
                self.torch.cuda.Event(enable_timing=True),
                self.torch.cuda.Event(enable_timing=True),
            )
            for _ in range(repeats)
        ]
        for start, end in events:
            start.record()
            op()
            end.record()
        self.synchronize()
        return [start.elapsed_time(end) / 1e3 for start, end in events]
