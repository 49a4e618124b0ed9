"""The cost and min-gpus objectives against brute force over cluster sizes, and their errors.

The reference estimates every candidate of every cluster size with ``estimate()`` and
applies the objective's definition by hand: the price of the token budget is steps x step
time x GPUs x price per GPU-hour (steps = ceil(budget / tokens per step)); min-gpus is the
smallest size with a layout that fits and trains the budget within the deadline.
"""

from __future__ import annotations

import math

import pytest

from planner.catalog import load_cluster
from planner.errors import Infeasible, SpecError
from planner.plan import PlanRequest, plan
from planner.predict import estimate
from planner.search.candidates import enumerate_layouts
from planner.search.driver import search
from planner.search.objectives import cluster_sizes, resized
from planner.specs import ModelSpec, WorkloadSpec

WORKLOAD = WorkloadSpec(seq_len=128, global_batch=16)
PRICE, BUDGET = 2.5, 5e8


def _every_layout(model: ModelSpec, gpus: int) -> list[tuple[int, float]]:
    """(GPUs, step time) of every layout that fits, every cluster size up to ``gpus``."""
    cluster = load_cluster("dgx-h100", gpus=gpus)
    found = []
    for size in cluster_sizes(cluster):
        sized = resized(cluster, size)
        for layout in enumerate_layouts(model, sized, WORKLOAD, max_mbs=2):
            result = estimate(model=model, cluster=sized, workload=WORKLOAD, layout=layout)
            if result.memory.fits:
                found.append((size, result.time.step_time_s))
    return found


def _hours(step_s: float) -> float:
    return math.ceil(BUDGET / WORKLOAD.tokens_per_step) * step_s / 3600


def test_cluster_sizes_within_a_node_and_beyond() -> None:
    cluster = load_cluster("dgx-h100", gpus=4)
    assert cluster_sizes(cluster) == [1, 2, 4]
    assert cluster_sizes(load_cluster("dgx-h100", gpus=24)) == [1, 2, 4, 8, 16, 24]
    grid = cluster_sizes(load_cluster("dgx-h100", gpus=8 * 100))
    assert grid[:4] == [1, 2, 4, 8] and grid[-1] == 800 and 8 * 96 in grid and 8 * 5 not in grid


def test_cost_is_the_cheapest_budget_over_sizes(tiny_model: ModelSpec) -> None:
    found = _every_layout(tiny_model, 16)
    cheapest = min(_hours(step) * gpus * PRICE for gpus, step in found)
    result = search(
        tiny_model, load_cluster("dgx-h100", gpus=16), WORKLOAD, objective="cost",
        price_per_gpu_hour=PRICE, token_budget=BUDGET, max_mbs=2, split_solver=False, top_k=3,
        risk="neutral",  # the objective's own order (averse reorders inside the band)
    )  # fmt: skip
    assert result.search.optimal and result.search.objective == "cost"
    assert result.search.gpus_searched == [1, 2, 4, 8, 16]
    best = result.plans[0]
    assert best.training is not None
    assert best.training["cost"] == round(cheapest, 2)
    costs = [p.training["cost"] for p in result.plans if p.training]
    assert costs == sorted(costs)
    assert "Cheapest" in best.explanation


def test_min_gpus_is_the_smallest_size_meeting_the_deadline(tiny_model: ModelSpec) -> None:
    found = _every_layout(tiny_model, 16)
    fastest = {gpus: min(step for g, step in found if g == gpus) for gpus, _ in found}
    sizes = sorted(fastest)
    # a deadline that the smallest sizes miss: between the two fastest per-size times
    # of the sizes that differ most
    slow, quick = max(fastest.values()), min(fastest.values())
    deadline = (_hours(slow) + _hours(quick)) / 2
    expected = min(g for g in sizes if _hours(fastest[g]) <= deadline)
    result = search(
        tiny_model, load_cluster("dgx-h100", gpus=16), WORKLOAD, objective="min-gpus",
        token_budget=BUDGET, deadline_hours=deadline, top_k=2, max_mbs=2, split_solver=False,
    )  # fmt: skip
    best = result.plans[0]
    assert best.estimate.config.num_gpus == expected
    assert best.training is not None and best.training["hours"] <= deadline + 1e-3
    assert result.search.gpus_searched[-1] == expected  # stopped at the first that can


def test_min_gpus_infeasible_deadline_says_how_long(tiny_model: ModelSpec) -> None:
    with pytest.raises(Infeasible, match=r"no layout trains .* within .* needs"):
        plan(
            PlanRequest(
                model=tiny_model, cluster=load_cluster("dgx-h100", gpus=4), workload=WORKLOAD,
                objective="min-gpus", token_budget=BUDGET, deadline_hours=1e-6,
            )
        )  # fmt: skip


@pytest.mark.parametrize(
    ("objective", "extra", "message"),
    [
        ("cost", {"token_budget": BUDGET}, "objective cost needs price_per_gpu_hour"),
        ("cost", {"price_per_gpu_hour": PRICE}, "objective cost needs token_budget"),
        ("min-gpus", {"token_budget": BUDGET}, "objective min-gpus needs deadline_hours"),
        ("min-gpus", {"deadline_hours": 5.0}, "objective min-gpus needs token_budget"),
        ("throughput", {"deadline_hours": 5.0}, "deadline_hours needs token_budget"),
        ("cost", {"price_per_gpu_hour": -1.0, "token_budget": BUDGET}, "price_per_gpu_hour: -1"),
        ("fastest", {}, "objective: unknown 'fastest'"),
    ],
)
def test_missing_inputs_name_the_option(
    tiny_model: ModelSpec, objective: str, extra: dict, message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        plan(
            PlanRequest(
                model=tiny_model, cluster=load_cluster("dgx-h100", gpus=2), workload=WORKLOAD,
                objective=objective, **extra,
            )
        )  # fmt: skip
