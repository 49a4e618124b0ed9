"""How far a prediction may be off: error bands from autopar's validation benchmarks.

A prediction is a point; what a user can act on is the point and the band around it. The
bands below are the worst errors the validation benchmarks measured, not guesses:

- Step time, 10%: ``python benchmarks/time_published.py`` (Narayanan et al. 2021, Table 1,
  and Korthikanti et al. 2022, Table 5: 18 published Megatron-LM runs on 32 to 3,072
  A100s) gave a mean error of 3.44% and a worst of 9.37% (2026-12-03); the device-bound
  single-GPU validation sweep (``python benchmarks/accuracy_measured.py``, 7B-13B shapes
  at 8K-32K tokens on H100 and H200) is within 10% on every run (worst 9.08%).
- Peak memory, 3%: ``python benchmarks/memory_published.py`` (Korthikanti et al. 2022,
  Tables 2 and 4, 22B to 1T) gave a worst error of 2.40%; ``accuracy_measured.py`` a worst
  of 1.12% over 145 measured runs on our own harness.

Outside the validated ground the band is wider and the report says so: small steps whose
pace is the host's Python dispatch moved by up to 19.9% between two measurements of the
same configuration on the same machine (``accuracy_measured.py``, run-to-run spread), and
rates borrowed from another GPU's profile are unvalidated on the GPU they are used for.
"""

from __future__ import annotations

from dataclasses import dataclass

TIME_BAND = 0.10
"""Relative step-time band where the rates are this GPU's own (module docstring)."""

MEMORY_BAND = 0.03
"""Relative peak-memory band (module docstring)."""

HOST_BOUND_TIME_BAND = 0.20
"""Relative step-time band of steps paced by the host: the measured run-to-run spread."""


@dataclass(frozen=True)
class Band:
    """A prediction's relative error band and the words that say where it comes from."""

    time: float
    memory: float
    basis: str

    def step_range_s(self, step_s: float) -> tuple[float, float]:
        """The step time interval the band allows around ``step_s``."""
        return step_s * (1 - self.time), step_s * (1 + self.time)

    def overlaps(self, step_a_s: float, step_b_s: float) -> bool:
        """Whether two predicted step times are inside each other's band (not told apart)."""
        low_a, high_a = self.step_range_s(step_a_s)
        low_b, high_b = self.step_range_s(step_b_s)
        return low_a <= high_b and low_b <= high_a


def rates_are_borrowed(rates_source: str) -> bool:
    """Whether the time model ran on another GPU's profile scaled to this GPU's peaks."""
    return "no profile of this GPU" in rates_source


def prediction_band(*, rates_source: str) -> Band:
    """The band of a prediction made with the rates ``rates_source`` describes."""
    if rates_are_borrowed(rates_source):
        return Band(
            time=HOST_BOUND_TIME_BAND,
            memory=MEMORY_BAND,
            basis=(
                "rates borrowed from another GPU's profile, unvalidated on this GPU: step "
                f"time +/-{HOST_BOUND_TIME_BAND:.0%}, peak memory +/-{MEMORY_BAND:.0%}"
            ),
        )
    return Band(
        time=TIME_BAND,
        memory=MEMORY_BAND,
        basis=(
            f"step time +/-{TIME_BAND:.0%} (worst error over 18 published Megatron-LM runs "
            "and the device-bound measured steps), peak memory "
            f"+/-{MEMORY_BAND:.0%} (worst over published and measured runs); steps paced "
            f"by the host vary by up to {HOST_BOUND_TIME_BAND:.0%}"
        ),
    )
