"""Stage lifetimes against the memory model, and memplan() end to end on small layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from planner import ParallelConfig, WorkloadSpec, load_cluster, load_model
from planner.cost.frameworks import Runtime
from planner.errors import SpecError
from planner.memplan import memplan, memplan_snapshot
from planner.memplan.lifetimes import stage_trace
from planner.memplan.trace import lifetimes, live_curve
from planner.predict import memory_stages, prepare
from solvers import PlacementProblem

SNAPSHOT = (
    Path(__file__).resolve().parents[2]
    / "hardware_db/profiles/h200-sxm/2026-12-03-h200-allocator-snapshots/dense-ac-default.pickle.gz"
)
LAYOUTS = [
    ("llama-3.1-8b", 1, {"tp": 2, "pp": 2}, 64),
    ("llama-3.1-8b", 1, {"tp": 2, "pp": 4, "vpp": 2}, 64),
    ("llama-3.1-8b", 1, {"tp": 8, "recompute": "full"}, 8),
    ("llama-3.1-8b", 1, {"tp": 1, "zero_stage": 3}, 8),
    ("mixtral-8x7b", 2, {"tp": 2, "pp": 2, "ep": 4, "sequence_parallel": True}, 64),
]


RUNTIMES = [  # logits held past the loss; Megatron's local spec with its score buffer
    ("llama-3.1-8b", {"tp": 2, "pp": 2}, 64, {"runtime": Runtime(loop_keeps_logits=True)}),
    ("llama-3.1-8b", {"tp": 2, "pp": 2}, 64, {"runtime": Runtime(pipeline_keeps_outputs=True)}),
    ("llama-3.1-8b", {"tp": 8}, 1, {"runtime": Runtime(loop_keeps_logits=True)}),
    ("llama-3.1-8b", {"tp": 2, "pp": 2}, 64, {"framework": "megatron", "layer_spec": "local",
                                                "flash_attention": False}),
]  # fmt: skip


def _prepared(name: str, nodes: int, layout: dict, batch: int, **options: Any):
    return prepare(
        model=load_model(name),
        cluster=load_cluster("dgx-h100", nodes=nodes),
        workload=WorkloadSpec(seq_len=4096, global_batch=batch),
        layout=ParallelConfig(**layout),
        **options,
    )


@pytest.mark.parametrize(
    ("name", "nodes", "layout", "batch", "options"),
    [(*case, {}) for case in LAYOUTS] + [(n, 1, lay, b, opt) for n, lay, b, opt in RUNTIMES],
)
def test_live_peak_equals_the_memory_models_allocated_peak(
    name: str, nodes: int, layout: dict, batch: int, options: dict[str, Any]
) -> None:
    prepared = _prepared(name, nodes, layout, batch, **options)
    stages = memory_stages(prepared)
    for rank in range(prepared.layout.pp):
        trace = stage_trace(prepared, stage=rank)
        live = live_curve(trace.events).max()
        assert live == pytest.approx(stages[rank].allocated, rel=1e-6)
        spans = lifetimes(trace.events)
        freed = [s for s in spans if s.end < len(trace.events)]
        assert len(spans) - len(freed) <= 4  # only the whole-step states stay
        index = {s.key: i for i, s in enumerate(spans)}
        PlacementProblem(  # chains and ties are consistent rigid groups
            tuple(_tensor(s) for s in spans),
            chains=tuple(tuple(index[k] for k in c) for c in trace.chains),
            ties=tuple((index[a], index[b]) for a, b in trace.ties),
        )


def _tensor(span):
    from solvers import Tensor

    return Tensor(max(1, span.size // 512), span.start, span.end)


def test_memplan_reports_four_peaks_in_order() -> None:
    plan = memplan(
        model=load_model("llama-3.1-8b"),
        cluster=load_cluster("dgx-h100", nodes=1),
        workload=WorkloadSpec(seq_len=4096, global_batch=64),
        layout=ParallelConfig(tp=2, pp=2),
        time_limit_s=2.0,
    )
    assert [s.stage for s in plan.stages] == [0, 1]
    for stage in plan.stages:
        peaks = stage.peaks
        assert peaks.live_gib <= peaks.planned_gib <= peaks.allocator_gib
        assert peaks.analytical_allocated_gib == pytest.approx(peaks.live_gib, abs=0.002)
        assert peaks.plan_lower_bound_gib <= peaks.planned_gib


def test_budget_choice_fits_and_recomputes_only_layers() -> None:
    kwargs = {
        "model": load_model("llama-3.1-8b"),
        "cluster": load_cluster("dgx-h100", nodes=1),
        "workload": WorkloadSpec(seq_len=8192, global_batch=8),
        "layout": ParallelConfig(tp=4, pp=2),
        "stage": 0,
        "time_limit_s": 3.0,
    }
    free = memplan(**kwargs).stages[0].peaks.live_gib
    plan = memplan(**kwargs, budget_gib=free - 4.0).stages[0].budget
    assert plan is not None and plan.status in ("optimal", "feasible_at_time_limit")
    assert plan.peak_gib is not None and plan.peak_gib <= free - 4.0
    assert plan.added_time_s is not None and plan.added_time_s >= 0  # offload may hide
    assert set(plan.recompute_layers) | set(plan.offload_layers) <= set(range(32))
    assert plan.recompute_layers or plan.offload_layers
    tight = memplan(**kwargs, budget_gib=1.0).stages[0].budget
    assert tight is not None and tight.status == "infeasible"
    assert tight.binding is not None and "budget" in tight.binding


def test_bad_stage_and_budget_are_spec_errors() -> None:
    kwargs = {
        "model": load_model("llama-3.1-8b"),
        "cluster": load_cluster("dgx-h100", nodes=1),
        "workload": WorkloadSpec(seq_len=4096, global_batch=8),
        "layout": ParallelConfig(tp=8),
    }
    with pytest.raises(SpecError, match="--stage: 3"):
        memplan(**kwargs, stage=3)
    with pytest.raises(SpecError, match="--budget-gib"):
        memplan(**kwargs, budget_gib=0)


def test_snapshot_plan_reaches_the_live_bound_below_the_allocator() -> None:
    plan = memplan_snapshot(SNAPSHOT, time_limit_s=5.0)
    peaks = plan.stages[0].peaks
    assert peaks.measured_reserved_gib == pytest.approx(4228 / 1024, abs=0.001)
    assert peaks.allocator_gib == pytest.approx(peaks.measured_reserved_gib, rel=0.03)
    assert peaks.live_gib <= peaks.planned_gib < peaks.allocator_gib
    assert peaks.fragmentation > 0.1
