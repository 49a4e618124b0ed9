"""The step-time model through ``estimate``: breakdown, MFU/HFU, monotonicity."""

from __future__ import annotations

import pytest

from planner import (
    ParallelConfig,
    WorkloadSpec,
    count_params,
    estimate,
    load_cluster,
    load_gpu,
    load_model,
)
from planner.cost.compute import Rates, Work, work_time
from planner.cost.frameworks import state_layout
from planner.cost.rates import rates_for
from planner.cost.stage_work import optimizer_step_work
from planner.cost.time import TENSORS_PER_LAYER
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


def test_context_parallel_algorithms_are_priced_apart() -> None:
    # 8 GPUs of one node, cp 8: the ring overlaps attention, all-gather and Ulysses do not
    ring = _time(gpus=8, batch=8, cp=8, cp_comm_type="p2p")
    gather = _time(gpus=8, batch=8, cp=8, cp_comm_type="all_gather")
    ulysses = _time(gpus=8, batch=8, cp=8, cp_comm_type="a2a")
    assert ring.breakdown_s["cp_comm"] <= gather.breakdown_s["cp_comm"]
    assert gather.breakdown_s["cp_comm"] > 0 and ulysses.breakdown_s["cp_comm"] > 0
    assert ulysses.breakdown_s["cp_comm"] != gather.breakdown_s["cp_comm"]
    # ring and all-gather run the same kernels on each rank's chunks; Ulysses the same
    # FLOPs in other kernels (whole sequences, 1/cp of the heads: compute.py)
    assert ring.breakdown_s["compute"] == pytest.approx(gather.breakdown_s["compute"])
    assert ring.hfu * ring.step_time_s == pytest.approx(ulysses.hfu * ulysses.step_time_s, 1e-3)


def test_eager_optimizer_launches_hide_behind_the_backward() -> None:
    # plain PyTorch issues the optimizer's kernels while the GPU still runs the backward;
    # Megatron reads the gradient norm back first, so its optimizer launches are exposed
    # a narrow, deep model (32 layers of width 1024) at 4 x 8192 tokens with full
    # recomputation: a long device-bound backward, then ~290 parameter tensors whose
    # per-tensor AdamW costs the host (as profiled) longer than its memory traffic
    model = load_model("llama-3.1-8b").model_copy(
        update={"num_layers": 32, "hidden_size": 1024, "num_attention_heads": 8,
                "num_kv_heads": 8, "ffn_hidden_size": 4096, "vocab_size": 32000}
    )  # fmt: skip
    eager = estimate(
        model=model,
        cluster=load_cluster("dgx-h100", gpus=1),
        workload=WorkloadSpec(seq_len=8192, global_batch=4),
        layout=ParallelConfig(mbs=4, recompute="full"),
        framework="pytorch",
        state_layout_name="bf16",
        optimizer_impl="per_tensor",
    ).time
    rates = rates_for(load_gpu("h100-sxm"), "bf16", "pytorch")
    step = optimizer_step_work(
        local_params=count_params(model).total,
        param_tensors=TENSORS_PER_LAYER * model.num_layers + 3,
        states=state_layout("bf16"),
        optimizer_kind="per_tensor",
    )
    exposed = max(rates.device_time(step), rates.launch_time(step))
    assert rates.launch_time(step) > rates.device_time(step)  # launch-bound on its own
    assert eager.breakdown_s["optimizer"] < 0.5 * exposed
    assert eager.breakdown_s["optimizer"] >= rates.device_time(step) - 1e-6
