"""Optimizer offload: the share of the step kept on the host is timed from the profile's
host section (pinned copies each way, CPU AdamW), after the GPU's share."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from synthetic_profiles import timing

from planner.catalog import load_cluster, load_model
from planner.cost.profile_rates import HostRates, ProfileGapError, ProfileRates, find_profile
from planner.cost.profile_schema import HostRow
from planner.cost.rates import ProfiledRates
from planner.predict import Estimate, estimate
from planner.specs.layout import ParallelConfig
from planner.specs.workload import WorkloadSpec


def _estimate(offload: float) -> Estimate:
    return estimate(
        model=load_model("llama-3.1-8b"),
        cluster=load_cluster("dgx-h100", gpus=8),
        workload=WorkloadSpec(seq_len=4096, global_batch=64),
        layout=ParallelConfig(zero_stage=2, offload_optimizer_fraction=offload),
        framework="deepspeed",
    )


def test_offloaded_share_costs_copies_and_the_cpu_step() -> None:
    host = find_profile("h100-sxm").host()  # type: ignore[union-attr]
    none, half, full = (_estimate(f).time.breakdown_s["optimizer"] for f in (0.0, 0.5, 1.0))
    local = 8.03e9 / 8  # ZeRO-2 shards the optimizer over the 8 data-parallel ranks
    per_param = 2 / host.d2h_bytes_per_s + host.cpu_adamw_s_per_param + 2 / host.h2d_bytes_per_s
    # fully offloaded: no GPU optimizer step, bf16 gradients down and bf16 weights up
    assert full == pytest.approx(local * per_param, rel=0.01)
    assert none < half < full
    assert half == pytest.approx(none / 2 + full / 2, rel=0.05)


def test_offload_lowers_memory_and_costs_time() -> None:
    kept, offloaded = _estimate(0.0), _estimate(1.0)
    assert offloaded.memory.peak_gib < kept.memory.peak_gib
    assert offloaded.time.step_time_s > kept.time.step_time_s


def _host_row(op: str, elements: int, seconds: float) -> HostRow:
    size = 16 * elements if op == "cpu_adamw" else 4 * elements
    return HostRow(op=op, elements=elements, bytes=size, threads=16, time=timing(seconds))  # type: ignore[arg-type]


def test_host_rates_come_from_the_largest_measurements() -> None:
    rates = HostRates.of([
        _host_row("d2h", 2**20, 1e-4), _host_row("d2h", 2**28, 0.02),
        _host_row("h2d", 2**28, 0.025), _host_row("cpu_adamw", 2**24, 0.01),
        _host_row("cpu_adamw", 2**28, 0.05),
    ])  # fmt: skip
    assert rates.d2h_bytes_per_s == pytest.approx(4 * 2**28 / 0.02)
    assert rates.h2d_bytes_per_s == pytest.approx(4 * 2**28 / 0.025)
    assert rates.cpu_adamw_s_per_param == pytest.approx(0.05 / 2**28)


def test_a_profile_without_a_host_section_cannot_time_offload(
    synthetic: Callable[..., object],
) -> None:
    profile = ProfileRates.of(synthetic())  # type: ignore[arg-type]
    assert not profile.has_host()
    with pytest.raises(ProfileGapError, match="no host section"):
        profile.host()
    shapes = ProfiledRates(profile, gemm_dtype="bf16")
    assert shapes.offload_time(1e9, grad_bytes=2, weight_bytes=2) is None


def test_cli_takes_the_offloaded_share(run_cli) -> None:  # type: ignore[no-untyped-def]
    args = ["estimate", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
            "--seq-len", "4096", "--global-batch", "64", "--framework", "deepspeed",
            "--zero", "2", "--json"]  # fmt: skip
    kept = json.loads(run_cli(*args).stdout)
    offloaded = json.loads(run_cli(*args, "--offload-optimizer", "1").stdout)
    assert offloaded["time"]["breakdown_s"]["optimizer"] > kept["time"]["breakdown_s"]["optimizer"]
    bad = run_cli(*args, "--offload-optimizer", "1.5")
    assert bad.exit_code == 2
    assert "--offload-optimizer" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
