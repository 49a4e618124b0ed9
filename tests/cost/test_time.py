"""The step-time model through ``estimate``: breakdown, MFU/HFU, monotonicity."""

from __future__ import annotations

import pytest

from planner import ParallelConfig, WorkloadSpec, estimate, load_cluster, load_model
from planner.cost.compute import Rates, Work, work_time
from planner.specs.hardware import ClusterSpec


def _time(
    model: str = "llama-3.1-8b",
    gpus: int = 16,
    cluster: ClusterSpec | None = None,
    batch: int = 64,
    **layout: object,
):
    return estimate(
        model=load_model(model),
        cluster=cluster or load_cluster("dgx-h100", gpus=gpus),
        workload=WorkloadSpec(seq_len=4096, global_batch=batch),
        layout=ParallelConfig(**layout),
    ).time


def test_issue_json_keys_and_the_breakdown_adds_up() -> None:
    timing = _time(tp=4, pp=2, sequence_parallel=True)
    assert set(timing.breakdown_s) >= {
        "compute", "tp_comm", "pipeline_bubble", "pipeline_p2p", "dp_comm", "optimizer",
    }  # fmt: skip
    assert sum(timing.breakdown_s.values()) == pytest.approx(timing.step_time_s, rel=1e-4)
    assert 0 < timing.mfu <= timing.hfu < 1
    assert timing.tokens_per_s == pytest.approx(64 * 4096 / timing.step_time_s, rel=1e-4)
    assert timing.tokens_per_s_per_gpu == pytest.approx(timing.tokens_per_s / 16, rel=1e-4)


def test_no_tensor_or_pipeline_costs_without_those_degrees() -> None:
    timing = _time(gpus=8, batch=32)
    assert timing.breakdown_s["tp_comm"] == 0
    assert timing.breakdown_s["pipeline_bubble"] == 0
    assert timing.breakdown_s["pipeline_p2p"] == 0


def test_recompute_costs_time_but_not_mfu_flops() -> None:
    none = _time(tp=2, gpus=8, batch=32)
    full = _time(tp=2, gpus=8, batch=32, recompute="full")
    assert full.step_time_s > none.step_time_s
    # MFU counts model FLOPs only, so it falls with the longer step; HFU counts the recompute
    assert full.mfu < none.mfu
    assert full.hfu > full.mfu


def test_interleaving_shrinks_the_bubble() -> None:
    plain = _time(pp=4, gpus=8, batch=32)
    interleaved = _time(pp=4, gpus=8, batch=32, vpp=2)
    assert interleaved.breakdown_s["pipeline_bubble"] < plain.breakdown_s["pipeline_bubble"]


def test_faster_network_never_slows_a_step() -> None:
    slow = load_cluster("dgx-h100", nodes=4)
    fast = slow.model_copy(
        update={
            "inter_node": slow.inter_node.model_copy(
                update={"bandwidth_gbps": 2 * slow.inter_node.bandwidth_gbps}
            )
        }
    )
    layout = {"tp": 8, "pp": 2, "sequence_parallel": True}
    assert _time(cluster=fast, **layout).step_time_s <= _time(cluster=slow, **layout).step_time_s


def test_roofline_takes_the_slowest_limit() -> None:
    rates = Rates(
        gemm_flops=1e12, attention_flops=5e11, memory_bytes_per_s=1e9, kernel_overhead_s=1e-5
    )
    assert work_time(Work("gemm", flops=2e12, bytes=1e6), rates) == pytest.approx(2.0)
    assert work_time(Work("gemm", flops=1e9, bytes=5e9), rates) == pytest.approx(5.0)
    assert work_time(Work("attention", flops=1e12, bytes=0), rates) == pytest.approx(2.0)
    assert work_time(Work("memory", bytes=0, kernels=3), rates) == pytest.approx(3e-5)
