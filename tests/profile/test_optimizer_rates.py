"""The optimizer section of a profile: how the reader turns AdamW steps into rates."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from synthetic_profiles import timing

from planner.catalog import load_gpu
from planner.cost.compute import OptimizerShape, Rates
from planner.cost.frameworks import state_layout
from planner.cost.profile_rates import OptimizerRates, ProfileGapError, ProfileRates
from planner.cost.profile_schema import KernelProfile, OptimizerRow
from planner.cost.rates import ProfiledRates
from planner.cost.stage_work import optimizer_bytes_per_param, optimizer_step_work

Synthetic = Callable[..., KernelProfile]
STREAM_S_PER_PARAM = 2e-11
HOST_S_PER_TENSOR = 9e-6
HOST_S_PER_PARAM = 3e-15


def _row(tensors: int, per_tensor: int, *, impl: str = "foreach", dtype: str = "bf16",
         host_bound: bool = False) -> OptimizerRow:  # fmt: skip
    """A step that streams at STREAM_S_PER_PARAM unless the host's issue time is longer."""
    params = tensors * per_tensor
    host = tensors * HOST_S_PER_TENSOR + params * HOST_S_PER_PARAM
    device = params * STREAM_S_PER_PARAM
    return OptimizerRow(
        implementation=impl, dtype=dtype, tensors=tensors, elements=params,
        time=timing(max(device, host) if host_bound else device + 1e-6), host=timing(host),
    )  # fmt: skip


def _profile(rows: list[OptimizerRow], synthetic: Synthetic) -> ProfileRates:
    return ProfileRates.of(synthetic(optimizer=rows))


SETS = [(1024, 2**12), (128, 2**16), (128, 2**20), (16, 2**26)]


def test_reader_recovers_streaming_rate_and_host_costs() -> None:
    rates = OptimizerRates.of([_row(t, e, host_bound=True) for t, e in SETS])
    # the fastest set streams (the small ones wait on the host)
    assert rates.device_s_per_param == pytest.approx(STREAM_S_PER_PARAM, rel=1e-3)
    # per tensor from the many-small set; per parameter from the few-large set
    assert rates.host_s_per_tensor == pytest.approx(
        HOST_S_PER_TENSOR + 2**12 * HOST_S_PER_PARAM, rel=1e-9
    )
    expected = (16 * 2**26 * HOST_S_PER_PARAM - 16 * 2**12 * HOST_S_PER_PARAM) / (16 * 2**26)
    assert rates.host_s_per_param == pytest.approx(expected, rel=1e-6)
    assert rates.host_s(100, 1e9) == pytest.approx(
        100 * rates.host_s_per_tensor + 1e9 * rates.host_s_per_param
    )


def test_host_cost_per_parameter_is_never_negative() -> None:
    rows = [_row(t, e) for t, e in SETS]
    cheap = rows[-1].model_copy(update={"host": timing(1e-6)})  # less than its tensors cost
    assert OptimizerRates.of([*rows[:-1], cheap]).host_s_per_param == 0.0


def test_profile_lookup_by_implementation_and_dtype(
    synthetic: Callable[..., KernelProfile],
) -> None:
    profile = _profile([_row(t, e) for t, e in SETS], synthetic)
    assert profile.has_optimizer("foreach", "bf16")
    assert not profile.has_optimizer("fused", "bf16")
    with pytest.raises(ProfileGapError, match="no fused bf16 optimizer step"):
        profile.optimizer("fused", "bf16")


def test_step_time_scales_with_traffic_and_bandwidth(
    synthetic: Callable[..., KernelProfile],
) -> None:
    profile = _profile([_row(t, e) for t, e in SETS], synthetic)
    measured = profile.optimizer("foreach", "bf16")
    shapes = ProfiledRates(profile, gemm_dtype="bf16", optimizer_scale=2.0)
    shape = OptimizerShape("foreach", "bf16", tensors=300, params=2e9, traffic_ratio=1.5)
    device, host = shapes.optimizer_time(shape)  # type: ignore[misc]
    assert device == pytest.approx(measured.device_s(2e9) * 1.5 / 2.0)
    assert host == pytest.approx(measured.host_s(300, 2e9))  # the host's, not the GPU's
    assert shapes.optimizer_time(OptimizerShape("fused", "bf16", 1, 1.0)) is None


def test_rates_use_the_profiled_step_for_the_optimizer(
    synthetic: Callable[..., KernelProfile],
) -> None:
    profile = _profile([_row(t, e) for t, e in SETS], synthetic)
    rates = Rates(
        gemm_flops=1e15, attention_flops=1e15, memory_bytes_per_s=1e12, kernel_overhead_s=1e-3,
        by_shape=ProfiledRates(profile, gemm_dtype="bf16"),
    )  # fmt: skip
    step = optimizer_step_work(
        local_params=1e9, param_tensors=100, states=state_layout("bf16"), optimizer_kind="foreach"
    )
    measured = profile.optimizer("foreach", "bf16")
    assert rates.device_time(step) == pytest.approx(measured.device_s(1e9))
    assert rates.launch_time(step) == pytest.approx(measured.host_s(100, 1e9))
    # an implementation the profile never ran falls back to bytes and launches
    fused = optimizer_step_work(
        local_params=1e9, param_tensors=100, states=state_layout("bf16"), optimizer_kind="fused"
    )
    assert rates.launch_time(fused) == pytest.approx(fused.kernels * 1e-3)


def test_mixed_state_layouts_scale_the_fp32_measurement_by_their_bytes() -> None:
    megatron = optimizer_step_work(
        local_params=1e9, param_tensors=10, states=state_layout("megatron"), optimizer_kind="fused"
    )
    shape = megatron.shape
    assert isinstance(shape, OptimizerShape) and shape.dtype == "fp32"
    # fp32 master and moments, fp32 gradients, plus the bf16 weight copy written back
    assert shape.traffic_ratio == pytest.approx(
        optimizer_bytes_per_param(state_layout("megatron"), "fused")
        / optimizer_bytes_per_param(state_layout("autocast"), "fused")
    )
    assert shape.traffic_ratio > 1.0


def test_committed_profiles_time_the_optimizer() -> None:
    from planner.cost.rates import rates_for

    for gpu in ("h100-sxm", "h200-sxm"):
        rates = rates_for(load_gpu(gpu), "bf16", "pytorch")
        step = optimizer_step_work(
            local_params=1e9, param_tensors=200, states=state_layout("bf16"),
            optimizer_kind="per_tensor",
        )  # fmt: skip
        assert rates.measured_optimizer(step) is not None
        assert "the optimizer step as profiled" in rates.source
        assert "optimizer from profiles/" in rates.source
