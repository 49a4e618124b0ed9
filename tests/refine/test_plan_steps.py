"""plan() runs refinement and hardware ranking as steps of one PlanRequest."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from planner.catalog import load_cluster
from planner.errors import SpecError
from planner.plan import HardwareRankOptions, PlanOutcome, PlanRequest, RefineOptions, plan
from planner.specs import ModelSpec, WorkloadSpec

WORKLOAD = WorkloadSpec(seq_len=256, global_batch=16)


def _request(model: ModelSpec, **options: object) -> PlanRequest:
    return PlanRequest(
        model=model, cluster=load_cluster("dgx-h100", gpus=4), workload=WORKLOAD, top_k=2,
        **options,
    )  # fmt: skip


def test_refinement_is_a_step_of_plan(tiny_model: ModelSpec, tmp_path: Path) -> None:
    seen: list[int] = []
    request = _request(
        tiny_model,
        refine=RefineOptions(trials=3, storage=f"sqlite:///{tmp_path / 'studies.db'}"),
    )
    result = plan(request, refine_callbacks=[lambda study, trial: seen.append(trial.number)])
    assert isinstance(result, PlanOutcome) and result.refinement is not None
    assert seen == [0, 1, 2]
    assert result.refinement.counts.total == 3
    data = result.model_dump(mode="json")
    assert set(data) == {"plans", "search", "refinement"}
    fastest = min(result.refinement.best, key=lambda p: p.time.step_time_s)
    assert result.best_entry() == fastest.model_dump(mode="json")


def test_without_steps_the_json_is_the_search_result(tiny_model: ModelSpec) -> None:
    assert set(plan(_request(tiny_model)).model_dump(mode="json")) == {"plans", "search"}


def test_bad_step_options_fail_before_the_search(
    tiny_model: ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_search(*args: object, **kwargs: object) -> None:
        raise AssertionError("the search ran")

    monkeypatch.setattr(sys.modules["planner.plan"], "search", no_search)
    with pytest.raises(SpecError, match="framework pytorch"):
        plan(_request(tiny_model, hardware=HardwareRankOptions(top=2)))
    with pytest.raises(SpecError, match="refine-objectives: unknown"):
        plan(_request(tiny_model, refine=RefineOptions(trials=1, objectives="speed")))
