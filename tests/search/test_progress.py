"""plan(progress=...): the search reports its phases and counts as it goes."""

from __future__ import annotations

import itertools

import pytest

from planner.catalog import load_cluster, load_model
from planner.plan import PlanRequest, Progress, plan
from planner.search import progress as progress_module
from planner.search.candidates import enumerate_space
from planner.specs import WorkloadSpec

WORKLOAD = WorkloadSpec(seq_len=4096, global_batch=64)


def _plan(reports: list[Progress], **kwargs: object):
    return plan(
        PlanRequest(
            model=load_model("llama-3.1-8b"),
            cluster=load_cluster("dgx-h100", gpus=kwargs.pop("gpus", 8)),
            workload=WORKLOAD,
            **kwargs,
        ),
        progress=reports.append,
    )


def test_progress_counts_every_candidate_and_ends_done() -> None:
    reports: list[Progress] = []
    result = _plan(reports)
    legal = len(
        enumerate_space(
            load_model("llama-3.1-8b"), load_cluster("dgx-h100", gpus=8), WORKLOAD
        ).layouts
    )
    assert reports[0].phase == "tabulate" and reports[0].total == legal
    assert reports[-1] == Progress("done", legal, legal, result.search.layouts_timed)
    for before, after in itertools.pairwise(reports):
        assert after.evaluated >= before.evaluated
        assert after.timed >= before.timed
        assert after.total >= before.total
        assert after.evaluated <= after.total
    # every phase, in order, and counts in between (not only the ends)
    phases = [r.phase for r in reports]
    order = [phase for i, phase in enumerate(phases) if i == 0 or phases[i - 1] != phase]
    assert order == ["tabulate", "time", "split", "solve", "done"]
    assert len({r.evaluated for r in reports}) > 3
    assert result.search.layouts_evaluated >= legal


def test_progress_adds_the_sizes_the_cost_objective_searches() -> None:
    reports: list[Progress] = []
    result = _plan(reports, gpus=16, objective="cost", price_per_gpu_hour=2.0, token_budget=1e9)
    totals = sorted({r.total for r in reports})
    assert len(totals) == len(result.search.gpus_searched) > 1
    assert reports[-1].phase == "done" and reports[-1].evaluated == totals[-1]


def test_progress_is_only_a_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """The callback changes nothing in the result, and a tracker without one calls none."""
    reports: list[Progress] = []
    with_progress = _plan(reports).model_dump()
    request = PlanRequest(
        model=load_model("llama-3.1-8b"),
        cluster=load_cluster("dgx-h100", gpus=8),
        workload=WORKLOAD,
    )
    without = plan(request).model_dump()
    for result in (with_progress, without):
        result["search"].pop("wall_s")
        result["search"].pop("solver_wall_s")
    assert with_progress == without
    tracker = progress_module.Tracker(None)
    tracker.candidates(3)
    for _ in range(2 * progress_module.EVERY):
        tracker.costed()
    assert (tracker.evaluated, tracker.total) == (2 * progress_module.EVERY, 3)
