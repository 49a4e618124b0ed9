"""``rates_for`` = ``rates_from(load_rate_data(...))``: the loader reads the catalogue,
profiles and measured steps; ``rates_from`` computes from what it is given and nothing
else, so hand-built data gives the rates of a GPU no file describes."""

from __future__ import annotations

import dataclasses

import pytest

from planner import load_gpu
from planner.cost.compute import GemmShape
from planner.cost.rates import RateData, load_rate_data, rates_for, rates_from
from planner.errors import SpecError


def test_rates_for_is_rates_from_the_loaded_data() -> None:
    gpu = load_gpu("h100-sxm")
    data = load_rate_data(gpu, "bf16")
    assert data.profiled_gpu == gpu and data.calibration is not None
    assert rates_for(gpu, "bf16", "pytorch") is rates_from(data, "pytorch")
    assert rates_for(gpu, "bf16") is rates_for(gpu, "bf16", framework="megatron")


def test_rates_from_reads_only_its_data() -> None:
    """A GPU that is in no catalogue file: twice the H100's dense bf16 peak, its kernel
    profile borrowed and a launch overhead set by hand."""
    h100 = load_gpu("h100-sxm")
    loaded = load_rate_data(h100, "bf16")
    assert loaded.calibration is not None
    peaks = h100.peak_tflops.model_copy(update={"bf16": 2 * h100.peak_tflops.bf16})
    twice = h100.model_copy(update={"id": "imaginary-gpu", "peak_tflops": peaks})
    calibration = dataclasses.replace(loaded.calibration, kernel_overhead_s=1e-3)
    rates = rates_from(dataclasses.replace(loaded, gpu=twice, calibration=calibration))
    own = rates_from(loaded)
    shape = GemmShape(4096, 4096, 4096)
    assert rates.by_shape is not None and own.by_shape is not None
    assert rates.by_shape.gemm_flops(shape) == pytest.approx(2 * own.by_shape.gemm_flops(shape))
    assert rates.kernel_overhead_s == 1e-3
    assert "scaled to imaginary-gpu" in rates.source


def test_rates_from_needs_a_calibration() -> None:
    loaded = load_rate_data(load_gpu("h100-sxm"), "bf16")
    with pytest.raises(ValueError, match="calibration"):
        rates_from(dataclasses.replace(loaded, calibration=None))


def test_a_dtype_without_a_profile_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="no kernel profile with int4"):
        load_rate_data(load_gpu("h100-sxm"), "int4")


def test_rate_data_is_a_cache_key() -> None:
    loaded = load_rate_data(load_gpu("h100-sxm"), "bf16")
    assert hash(loaded) == hash(dataclasses.replace(loaded))
    assert isinstance(loaded, RateData)
