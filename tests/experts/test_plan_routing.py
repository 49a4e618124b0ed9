"""Routing statistics in the time model and in ``plan()``: balanced routing gives today's
numbers, skew slows the MoE step, a better placement recovers part of it."""

from __future__ import annotations

import numpy as np
import pytest

from planner import load_cluster, load_model
from planner.cost.expert_load import ExpertLoadFactors
from planner.errors import SpecError
from planner.experts import synthetic_stats
from planner.experts.load import ExpertLoads, factors
from planner.experts.place import build_problem, place_experts
from planner.plan import BALANCED_ROUTING_NOTE, PlanRequest, plan
from planner.predict import prepare, time_report
from planner.specs import ParallelConfig, WorkloadSpec
from solvers.expert_greedy import contiguous
from solvers.expert_problem import gpu_loads

LAYERS, EXPERTS, EP = 4, 16, 16
CLUSTER = load_cluster("dgx-h100", nodes=2)
WORKLOAD = WorkloadSpec(seq_len=4096, global_batch=32)
LAYOUT = ParallelConfig(tp=1, pp=1, ep=EP, mbs=1)


def _model():
    spec = load_model("mixtral-8x7b")
    moe = spec.moe.model_copy(update={"num_experts": EXPERTS})
    return spec.model_copy(update={"num_layers": LAYERS, "moe": moe})


MODEL = _model()


def _time(factors_: ExpertLoadFactors | None, layout: ParallelConfig = LAYOUT):
    prepared = prepare(
        model=MODEL, cluster=CLUSTER, workload=WORKLOAD, layout=layout, expert_load=factors_
    )
    return time_report(prepared)


def _uniform(imbalance: float, cross: float | None = None) -> ExpertLoadFactors:
    return ExpertLoadFactors(imbalance=(imbalance,) * LAYERS, cross_node_fraction=(cross,) * LAYERS)


def test_balanced_factors_give_todays_numbers_exactly() -> None:
    today = _time(None)
    assert _time(_uniform(1.0)) == today
    # the topology's own cross-node share ((n - k) / n) is today's all-to-all
    topology = _time(_uniform(1.0, (EP - 8) / EP))
    assert topology.step_time_s == pytest.approx(today.step_time_s, rel=1e-9)


def test_skew_slows_the_moe_step_and_cross_node_bytes_cost_more() -> None:
    today = _time(None)
    skewed = _time(_uniform(2.0))
    assert skewed.step_time_s > today.step_time_s
    assert skewed.breakdown_s["compute"] > today.breakdown_s["compute"]
    assert skewed.breakdown_s["ep_comm"] == today.breakdown_s["ep_comm"]
    local = _time(_uniform(1.0, 0.0))
    remote = _time(_uniform(1.0, 0.9))
    assert local.breakdown_s["ep_comm"] < today.breakdown_s["ep_comm"]
    assert remote.breakdown_s["ep_comm"] > today.breakdown_s["ep_comm"]


def test_a_solved_placement_recovers_part_of_the_skew() -> None:
    stats = synthetic_stats("zipf:1.0,seed:3", layers=LAYERS, experts=EXPERTS, top_k=2)
    ep = 8  # two experts per GPU: the placement has a choice
    layout = ParallelConfig(tp=1, pp=1, ep=ep, mbs=1)
    problem = build_problem(model=MODEL, cluster=CLUSTER, ep=ep, routing=stats)
    loads = np.asarray(stats.loads)
    per_gpu = gpu_loads(loads, np.asarray(contiguous(problem)), ep)
    naive = ExpertLoadFactors(
        imbalance=tuple(float(x) for x in per_gpu.max(axis=1) / per_gpu.mean(axis=1)),
        cross_node_fraction=(None,) * LAYERS,
    )
    solved = factors(
        MODEL, place_experts(model=MODEL, cluster=CLUSTER, ep=ep, routing=stats, time_limit_s=2)
    )
    balanced, ours, worst = (_time(f, layout).step_time_s for f in (None, solved, naive))
    assert balanced < ours < worst


def test_plan_times_each_ep_with_its_placement() -> None:
    stats = synthetic_stats("zipf:1.2,seed:0", layers=LAYERS, experts=EXPERTS, top_k=2)
    request = PlanRequest(
        model=MODEL, cluster=CLUSTER, workload=WORKLOAD, top_k=3, fixed={"ep": 8, "tp": 1},
        routing=stats, time_limit_s=30,
    )  # fmt: skip
    skewed = plan(request)
    balanced = plan(request.model_copy(update={"routing": None}))
    assert balanced.routing_note == BALANCED_ROUTING_NOTE and skewed.routing_note is None
    assert skewed.plans[0].time.step_time_s > balanced.plans[0].time.step_time_s
    placement = skewed.plans[0].expert_placement
    assert placement is not None and placement.ep == 8 and placement.max_imbalance > 1
    assert 0 < placement.balancedness < 1 and placement.method.startswith("solver")
    data = skewed.model_dump(mode="json")
    assert data["plans"][0]["expert_placement"]["ep"] == 8
    assert "expert_placement" not in balanced.model_dump(mode="json")["plans"][0]


def test_routing_for_a_dense_model_or_the_wrong_shape_is_refused() -> None:
    stats = synthetic_stats("zipf:1.0", layers=LAYERS, experts=EXPERTS, top_k=2)
    with pytest.raises(SpecError, match=r"routing: llama-3\.1-8b has no MoE layers"):
        ExpertLoads(model=load_model("llama-3.1-8b"), cluster=CLUSTER, routing=stats)
    wrong = synthetic_stats("zipf:1.0", layers=LAYERS, experts=8, top_k=2)
    with pytest.raises(SpecError, match="routing: 8 experts per layer"):
        ExpertLoads(model=MODEL, cluster=CLUSTER, routing=wrong)
