"""The step calibration recovers known values from synthetic steps and reports held-out error."""

from __future__ import annotations

import random

import pytest

from planner.catalog import load_gpu
from planner.cost.compute import GemmShape, Rates, Work, total_time
from planner.cost.fit import Phase, Sample, calibrate_steps
from planner.cost.rates import rates_for, step_calibration


class _ConstantShapes:
    """ShapeRates with one rate per kind: enough to test the calibration's arithmetic."""

    def gemm_flops(self, shape: GemmShape) -> float:
        return 6e14

    def attention_flops(self, shape: object) -> float:
        return 3e14

    def memory_bytes_per_s(self, bytes_per_kernel: float) -> float:
        return 3e12

    def optimizer_time(self, shape: object) -> None:
        return None  # no optimizer section: steps are priced by bytes and launches


def _rates(*, scale: float, overhead_us: float, plain_us: float, backward_us: float) -> Rates:
    shapes = _ConstantShapes()
    return Rates(
        gemm_flops=6e14 / scale,
        attention_flops=3e14 / scale,
        memory_bytes_per_s=3e12 / scale,
        kernel_overhead_s=overhead_us * 1e-6,
        plain_kernel_overhead_s=plain_us * 1e-6,
        backward_kernel_overhead_s=backward_us * 1e-6,
        by_shape=_Scaled(shapes, scale),
    )


class _Scaled:
    def __init__(self, inner: _ConstantShapes, scale: float) -> None:
        self.inner, self.scale = inner, scale

    def gemm_flops(self, shape: GemmShape) -> float:
        return self.inner.gemm_flops(shape) / self.scale

    def attention_flops(self, shape: object) -> float:
        return self.inner.attention_flops(shape) / self.scale

    def memory_bytes_per_s(self, bytes_per_kernel: float) -> float:
        return self.inner.memory_bytes_per_s(bytes_per_kernel) / self.scale

    def optimizer_time(self, shape: object) -> None:
        return None


def _synthetic(truth: Rates, count: int, seed: int) -> list[Sample]:
    """Steps whose phases are sometimes device-bound, sometimes launch-bound."""
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        m = rng.choice([512, 2048, 8192])
        layer = (
            Work("gemm", flops=2.0 * m * 4096 * 4096, kernels=1, shape=GemmShape(m, 4096, 4096)),
            Work("memory", bytes=rng.uniform(1e6, 5e8), kernels=rng.randint(5, 40)),
        )
        backward = (
            Work("gemm", flops=4.0 * m * 4096 * 4096, kernels=2, shape=GemmShape(m, 4096, 4096),
                 host="backward"),
            Work("memory", bytes=rng.uniform(1e6, 5e8), kernels=rng.randint(5, 80),
                 host="backward"),
        )  # fmt: skip
        optimizer = Work("memory", bytes=rng.uniform(1e9, 2e10), kernels=rng.randint(200, 3000),
                         host="plain")  # fmt: skip
        layers = float(rng.randint(8, 64))
        phases = (Phase(layer, layers), Phase(backward, layers), Phase((optimizer,)))
        measured = sum(p.repeats * total_time(list(p.works), truth) for p in phases)
        samples.append(Sample(phases=phases, measured_s=measured))
    return samples


def test_calibration_recovers_the_values_it_was_generated_with() -> None:
    truth = _rates(scale=1.1, overhead_us=25.0, plain_us=8.0, backward_us=12.0)
    profile_only = _rates(scale=1.0, overhead_us=0.0, plain_us=0.0, backward_us=0.0)
    fitted = calibrate_steps(_synthetic(truth, 40, seed=1), profile_only, source="synthetic")
    assert fitted.device_scale == pytest.approx(1.1, abs=0.01)
    assert fitted.kernel_overhead_s == pytest.approx(25e-6, abs=1e-6)
    assert fitted.plain_kernel_overhead_s == pytest.approx(8e-6, abs=1e-6)
    assert fitted.backward_kernel_overhead_s == pytest.approx(12e-6, abs=1e-6)
    assert fitted.holdout_mape_pct < 1.0
    assert fitted.runs_fit == 20 and fitted.runs_holdout == 20


def test_a_stream_costs_the_larger_of_device_and_launch_sums() -> None:
    rates = _rates(scale=1.0, overhead_us=10.0, plain_us=10.0, backward_us=10.0)
    long_kernel = Work("gemm", flops=6e14 * 1e-3, shape=GemmShape(8192, 8192, 8192))  # 1 ms
    short = Work("memory", bytes=3e12 * 50e-6, kernels=50)  # 50 us of device, 500 us of launches
    # alone, the short ops are launch-bound; after the long kernel, the host's lead hides them
    assert total_time([short], rates) == pytest.approx(500e-6)
    assert total_time([long_kernel, short], rates) == pytest.approx(1.05e-3)


def test_h100_calibration_reports_its_held_out_error() -> None:
    fitted = step_calibration("h100-sxm")
    assert fitted is not None
    assert fitted.runs_fit + fitted.runs_holdout >= 30
    assert 0.8 < fitted.device_scale < 1.4
    # the calibration is checked on runs it never saw; benchmarks/time_measured.py prints all
    assert fitted.holdout_mape_pct < 10.0
    # every measured step's optimizer is timed by the profile's optimizer section, so no
    # launch outside autograd is left to fit
    assert fitted.plain_kernel_overhead_s is None


def test_rates_say_where_they_come_from() -> None:
    own = rates_for(load_gpu("h100-sxm"), "bf16", "megatron")
    borrowed = rates_for(load_gpu("a100-sxm-80gb"), "bf16", "megatron")
    assert "kernel profile of h100-sxm" in own.source
    assert "scaled to a100-sxm-80gb" in borrowed.source
    # borrowed curves are fractions of the datasheet peak: A100 bf16 312 vs H100 989.4
    shape = GemmShape(4096, 4096, 4096)
    assert own.by_shape is not None and borrowed.by_shape is not None
    ratio = borrowed.by_shape.gemm_flops(shape) / own.by_shape.gemm_flops(shape)
    assert ratio == pytest.approx(312 / 989.4, rel=1e-3)
