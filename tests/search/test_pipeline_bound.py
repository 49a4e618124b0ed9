"""The pipeline bound (``planner.search.bounds``): never above the simulated step, never
below the compute bound, exact on uniform stages; and deferring by it changes no plan."""

from __future__ import annotations

import random

import pytest

from planner.catalog import load_cluster, load_model
from planner.cost.memory import virtual_stages
from planner.cost.stage_work import stage_times
from planner.plan import PlanRequest, plan
from planner.predict import prepare, step_lower_bound, time_rates, time_report
from planner.search import bounds, tabulate
from planner.search.candidates import enumerate_layouts
from planner.specs import WorkloadSpec

CASES = [
    ("llama-3.1-8b", 16, 4096, 64),
    ("llama-3.1-70b", 64, 8192, 512),
    ("llama-3.1-405b", 1024, 8192, 256),
    ("mixtral-8x22b", 64, 4096, 128),
]


@pytest.mark.parametrize(("name", "gpus", "seq_len", "batch"), CASES)
def test_the_bound_holds_on_pipelined_layouts(
    name: str, gpus: int, seq_len: int, batch: int
) -> None:
    model, cluster = load_model(name), load_cluster("dgx-h100", gpus=gpus)
    workload = WorkloadSpec(seq_len=seq_len, global_batch=batch)
    piped = [lay for lay in enumerate_layouts(model, cluster, workload) if lay.pp > 1]
    sample = random.Random(gpus).sample(piped, min(25, len(piped)))
    assert any(layout.vpp for layout in sample)
    for layout in sample:
        prepared = prepare(
            model=model, cluster=cluster, workload=workload, layout=layout, check=False
        )
        tight = bounds.pipeline_lower_bound(prepared)
        assert tight >= step_lower_bound(prepared)
        step = time_report(prepared).step_time_s
        assert tight * (1 - tabulate.BOUND_MARGIN) - tabulate.STEP_ROUNDING_S <= step


def test_the_bound_counts_the_1f1b_bubble() -> None:
    """Equal layer counts per stage, the end stages also holding the embedding and the
    output layer: the bound is at least (m + pp - 1)(F + B) of a middle stage, the 1F1B
    step with free transfers (Narayanan et al. 2021, section 2.2.1: bubble (p - 1)/m),
    and above the compute bound, which leaves the fill and drain out."""
    model, cluster = load_model("llama-3.1-8b"), load_cluster("dgx-h100", gpus=8)
    workload = WorkloadSpec(seq_len=4096, global_batch=32)
    layout = next(
        lay
        for lay in enumerate_layouts(model, cluster, workload)
        if lay.pp == 4
        and lay.vpp is None
        and lay.tp == 2
        and lay.first_stage_layers is None
        and lay.last_stage_layers is None
    )
    prepared = prepare(model=model, cluster=cluster, workload=workload, layout=layout)
    rates = time_rates(cluster=cluster, workload=workload, framework="megatron")
    chunks = virtual_stages(model, prepared.layout)
    middle = stage_times(
        model, chunks[1], first=False, last=False, layout=prepared.layout,
        seq_len=4096, impl=prepared.impl, rates=rates,
    )  # fmt: skip
    per_microbatch = middle.forward_s + middle.backward_s
    m = prepared.ctx.microbatches
    bound = bounds.pipeline_lower_bound(prepared)
    assert bound >= (m + 4 - 1) * per_microbatch * (1 - 1e-12)
    assert bound > step_lower_bound(prepared)  # the busiest (last) stage waits for the fill


@pytest.mark.parametrize(
    ("name", "gpus", "seq_len", "batch"),
    [("llama-3.1-70b", 64, 8192, 512), ("llama-3.1-405b", 2048, 8192, 1024)],
)
def test_deferring_changes_no_plan(
    monkeypatch: pytest.MonkeyPatch, name: str, gpus: int, seq_len: int, batch: int
) -> None:
    request = PlanRequest(
        model=load_model(name),
        cluster=load_cluster("dgx-h100", gpus=gpus),
        workload=WorkloadSpec(seq_len=seq_len, global_batch=batch),
        top_k=5,
    )
    deferring = plan(request)
    monkeypatch.setattr(tabulate, "pipeline_lower_bound", lambda prepared: 0.0)
    timing_all = plan(request)
    assert [p.model_dump() for p in deferring.plans] == [p.model_dump() for p in timing_all.plans]
    assert deferring.search.layouts_timed <= timing_all.search.layouts_timed
