"""Calibrate the time model's host and in-step terms to measured training steps.

A kernel profile (``autopar profile``) times every GEMM, attention and element-wise kernel
alone. What it cannot give is fitted here, in one place, to our own measured single-GPU
steps (``benchmarks/measure``, stored under
``hardware_db/profiles/<gpu>/<profile>/train_steps.jsonl``):

* the host's time per kernel launch by the Python forward (ops recorded on the autograd
  tape), by the autograd engine in the backward, and outside autograd (an optimizer step
  the profile did not measure; one it measured keeps its measured host and device time);
* the ratio of a kernel's device time inside a training step to its profiled time.

The records are split by position: even-numbered runs fit, odd-numbered runs are held out,
and both errors are reported. The objective is the mean squared log ratio of predicted to
measured median step time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from planner.cost.compute import Rates, Work


@dataclass(frozen=True)
class Phase:
    """Ops issued as one stream (a layer's forward, its backward, the optimizer step),
    ``repeats`` times in the step (``compute.total_time`` times each stream).

    ``after_lead``: the phase follows the earlier ones with no host synchronisation in
    between, so the host's lead over the device at their end hides this phase's launches
    (``planner.cost.time``: the optimizer step of eager PyTorch)."""

    works: tuple[Work, ...]
    repeats: float = 1.0
    after_lead: bool = False


@dataclass(frozen=True)
class Sample:
    """One measured run: its step as phases, and its median step time."""

    phases: tuple[Phase, ...]
    measured_s: float


@dataclass(frozen=True)
class StepCalibration:
    """What a kernel profile cannot give, fitted to measured training steps.

    * ``kernel_overhead_s``: the host's time per eager kernel launch of the Python forward
      (ops recorded on the autograd tape, recomputed forwards included);
    * ``backward_kernel_overhead_s``: the same for the autograd engine's launches in the
      backward (a C++ loop, no Python per op);
    * ``plain_kernel_overhead_s``: the same for plain tensor ops outside autograd (an
      optimizer step the profile has no measurement of), which skip the tape; None when
      no measured step had such ops (the profile timed every optimizer step);
    * ``device_scale``: the ratio of a kernel's device time inside the measured training
      step to its time in the profile, alone and repeated (the step's kernels run on cold
      caches under sustained load, and eager PyTorch runs small ops the work model does
      not list one by one: views made contiguous, dtype round trips of the eager norms).
    """

    kernel_overhead_s: float
    backward_kernel_overhead_s: float
    plain_kernel_overhead_s: float | None
    device_scale: float
    fit_mape_pct: float
    holdout_mape_pct: float
    runs_fit: int
    runs_holdout: int
    source: str


CALIBRATION_GRIDS: dict[str, np.ndarray] = {
    "device_scale": np.linspace(0.8, 1.4, 241),
    "overhead_us": np.linspace(0.0, 100.0, 1001),
    "backward_overhead_us": np.linspace(0.0, 100.0, 1001),
    "plain_overhead_us": np.linspace(0.0, 100.0, 1001),
}
"""Candidate values: device-time ratio 0.8-1.4 in 0.0025 steps, overheads 0-100 us in 0.1."""
CALIBRATION_ROUNDS = 12
CALIBRATION_START = {
    "device_scale": 1.0,
    "overhead_us": 20.0,
    "backward_overhead_us": 20.0,
    "plain_overhead_us": 20.0,
}


@dataclass(frozen=True)
class _Ops:
    """A sample's phases as arrays: device time (profiled kernels, and optimizer steps
    measured whole, which the device-time ratio does not scale), launches by the forward,
    the backward and outside autograd, host seconds of measured optimizer steps, repeats."""

    device: np.ndarray
    measured_device_s: np.ndarray
    autograd_kernels: np.ndarray
    backward_kernels: np.ndarray
    plain_kernels: np.ndarray
    measured_launch_s: np.ndarray
    counts: np.ndarray
    after_lead: np.ndarray
    measured_s: float

    @classmethod
    def of(cls, sample: Sample, rates: Rates) -> _Ops:
        def measured(work: Work) -> bool:
            return rates.measured_optimizer(work) is not None

        def device(phase: Phase, whole: bool) -> float:
            return sum(
                rates.device_time(w)
                for w in phase.works
                if (w.bytes > 0 or w.flops > 0) and measured(w) == whole
            )

        def kernels(phase: Phase, host: str) -> float:
            return float(sum(w.kernels for w in phase.works if w.host == host and not measured(w)))

        def measured_launch(phase: Phase) -> float:
            return sum(rates.launch_time(w) for w in phase.works if measured(w))

        phases = sample.phases
        return cls(
            device=np.array([device(p, whole=False) for p in phases]),
            measured_device_s=np.array([device(p, whole=True) for p in phases]),
            autograd_kernels=np.array([kernels(p, "autograd") for p in phases]),
            backward_kernels=np.array([kernels(p, "backward") for p in phases]),
            plain_kernels=np.array([kernels(p, "plain") for p in phases]),
            measured_launch_s=np.array([measured_launch(p) for p in phases]),
            counts=np.array([p.repeats for p in phases]),
            after_lead=np.array([p.after_lead for p in phases]),
            measured_s=sample.measured_s,
        )

    def step_s(self, values: dict[str, np.ndarray | float]) -> np.ndarray | float:
        """Predicted step time; any one value may be an array (one result per entry)."""
        column = {k: np.asarray(v, dtype=float).reshape(-1, 1) for k, v in values.items()}
        launches = (
            column["overhead_us"] * self.autograd_kernels
            + column["backward_overhead_us"] * self.backward_kernels
            + column["plain_overhead_us"] * self.plain_kernels
        ) * 1e-6 + self.measured_launch_s
        device = column["device_scale"] * self.device + self.measured_device_s
        before, after = ~self.after_lead, self.after_lead
        times = np.maximum(device, launches)
        streamed = (times[:, before] * self.counts[before]).sum(axis=1)
        lead = streamed - (launches[:, before] * self.counts[before]).sum(axis=1)
        hidden = np.maximum(device[:, after], launches[:, after] - lead[:, None])
        return streamed + (hidden * self.counts[after]).sum(axis=1)


def calibrate_steps(samples: Sequence[Sample], rates: Rates, *, source: str) -> StepCalibration:
    """Fit the launch overheads and the device-time ratio on top of a kernel profile.

    Each phase costs max(device_scale x its device time, its launches x overhead)
    (``compute.total_time``), the device times from ``rates`` (its own overheads ignored);
    a phase ``after_lead`` has its launches shortened by the host's lead at its start.
    The values minimising the mean squared log ratio of predicted to measured step time
    over the even-numbered samples are found by coordinate descent: each round sets one
    parameter to the best of its whole grid (``CALIBRATION_GRIDS``, evaluated at once)
    with the others fixed, for ``CALIBRATION_ROUNDS`` rounds over the four (three where
    no training sample has plain launches left to price: the profile timed every
    optimizer step). The odd-numbered samples are held out.
    """
    train, holdout = list(samples[0::2]), list(samples[1::2])
    if not train:
        raise ValueError("no measured runs to fit")
    ops = [_Ops.of(sample, rates) for sample in train]
    plain_launches = any(o.plain_kernels.any() for o in ops)
    fitted = {
        name: grid
        for name, grid in CALIBRATION_GRIDS.items()
        if plain_launches or name != "plain_overhead_us"
    }
    values: dict[str, float] = dict(CALIBRATION_START)
    for _ in range(CALIBRATION_ROUNDS):
        for name, grid in fitted.items():
            trial = {**values, name: grid}
            loss = sum(np.log(o.step_s(trial) / o.measured_s) ** 2 for o in ops)
            values[name] = float(grid[int(np.argmin(loss))])

    def error_pct(group: list[Sample]) -> float:
        errors = [abs(float(_Ops.of(s, rates).step_s(values)[0]) / s.measured_s - 1)
                  for s in group]  # fmt: skip
        return 100 * sum(errors) / len(errors)

    return StepCalibration(
        kernel_overhead_s=values["overhead_us"] * 1e-6,
        backward_kernel_overhead_s=values["backward_overhead_us"] * 1e-6,
        plain_kernel_overhead_s=values["plain_overhead_us"] * 1e-6 if plain_launches else None,
        device_scale=values["device_scale"],
        fit_mape_pct=error_pct(train),
        holdout_mape_pct=error_pct(holdout) if holdout else float("nan"),
        runs_fit=len(train),
        runs_holdout=len(holdout),
        source=source,
    )


def step_time_s(sample: Sample, rates: Rates) -> float:
    """A sample's predicted step with ``rates`` as they are (their own launch overheads)."""
    plain, backward = rates.plain_kernel_overhead_s, rates.backward_kernel_overhead_s
    values = {
        "device_scale": 1.0,
        "overhead_us": rates.kernel_overhead_s * 1e6,
        "backward_overhead_us": (rates.kernel_overhead_s if backward is None else backward) * 1e6,
        "plain_overhead_us": (rates.kernel_overhead_s if plain is None else plain) * 1e6,
    }
    return float(_Ops.of(sample, rates).step_s(values)[0])
