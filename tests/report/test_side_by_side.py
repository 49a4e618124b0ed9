"""Two plans side by side (``planner.report.side_by_side``): what differs, and whether the
difference is inside the model's error bands."""

from __future__ import annotations

from typing import Any

import pytest
from report_estimates import estimate_json

from planner.accuracy import HOST_BOUND_TIME_BAND, MEMORY_BAND, TIME_BAND
from planner.report.inputs import PlanView
from planner.report.side_by_side import side_by_side

JOB = {"gpus": 8, "seq_len": 4096, "global_batch": 64}


@pytest.fixture(scope="module")
def tp2() -> PlanView:
    return PlanView.model_validate(estimate_json("llama-3.1-8b", **JOB, tp=2))


@pytest.fixture(scope="module")
def tp2_pp4() -> PlanView:
    return PlanView.model_validate(
        estimate_json("llama-3.1-8b", **JOB, tp=2, pp=4, vpp=2, sequence_parallel=True)
    )


def _with_step(plan: PlanView, step_s: float, *, rates_source: str | None = None) -> PlanView:
    changes: dict[str, Any] = {"step_time_s": step_s}
    if rates_source is not None:
        changes["rates_source"] = rates_source
    return plan.model_copy(update={"time": plan.time.model_copy(update=changes)})


def _with_stage_total(plan: PlanView, total_gib: float) -> PlanView:
    stages = [plan.memory.stages[0].model_copy(update={"total_gib": total_gib})]
    return plan.model_copy(update={"memory": plan.memory.model_copy(update={"stages": stages})})


def test_a_plan_against_itself_differs_in_nothing(tp2: PlanView) -> None:
    result = side_by_side(tp2, tp2)
    assert result.same_job and not result.job_differences
    assert not any(knob.differs for knob in result.knobs)
    for pair in [*result.headline, *result.stages, *result.breakdown]:
        assert pair.a == pair.b
        assert pair.inside_error in (True, None)
    assert result.verdict.startswith("the same predicted step time")


def test_the_knobs_that_differ_are_named(tp2: PlanView, tp2_pp4: PlanView) -> None:
    result = side_by_side(tp2, tp2_pp4)
    differing = {knob.name: (knob.a, knob.b) for knob in result.knobs if knob.differs}
    assert differing["pp"] == (1, 4)
    assert differing["vpp"] == (None, 2)
    assert differing["sequence_parallel"] == (False, True)
    assert "tp" not in differing and "mbs" not in differing
    assert result.a_layout.startswith("tp 2 pp 1") and result.b_layout.startswith("tp 2 pp 4")


def test_stages_only_one_plan_has_have_nothing_to_compare(tp2: PlanView, tp2_pp4: PlanView) -> None:
    stages = side_by_side(tp2, tp2_pp4).stages
    assert [pair.name for pair in stages] == ["stage 0", "stage 1", "stage 2", "stage 3"]
    assert stages[0].a == tp2.memory.stages[0].total_gib
    assert stages[0].b == tp2_pp4.memory.stages[0].total_gib
    for pair in stages[1:]:
        assert pair.a is None and pair.b is not None
        assert pair.inside_error is None and pair.delta_pct is None


def test_step_times_inside_and_outside_the_ten_percent_band(tp2: PlanView) -> None:
    # +/-10%: [1.0, 1.1] meets [1.035, 1.265] (1.15 s); [1.17, 1.43] does not (1.3 s)
    assert TIME_BAND == 0.10
    inside = side_by_side(_with_step(tp2, 1.0), _with_step(tp2, 1.15))
    outside = side_by_side(_with_step(tp2, 1.0), _with_step(tp2, 1.3))
    assert inside.headline[0].name == "step time"
    assert inside.headline[0].inside_error is True
    assert inside.headline[0].delta_pct == pytest.approx(15.0)
    assert outside.headline[0].inside_error is False
    assert "inside the model's error" in inside.verdict
    assert inside.verdict.startswith("B's predicted step time is 15.0% longer than A's")
    assert "outside the model's error" in outside.verdict


def test_borrowed_rates_widen_the_band_for_both(tp2: PlanView) -> None:
    borrowed = (
        "kernel profile of h100-sxm scaled to b200's datasheet peaks (no profile of this GPU)"
    )
    a = _with_step(tp2, 1.0, rates_source=borrowed)
    result = side_by_side(a, _with_step(tp2, 1.3))
    assert result.time_band == HOST_BOUND_TIME_BAND
    assert result.headline[0].inside_error is True  # [0.8, 1.2] meets [1.04, 1.56]
    assert "borrowed" in result.band_basis


def test_stage_memory_against_the_three_percent_band(tp2: PlanView) -> None:
    # +/-3%: 70 GiB reaches 72.1, 75 GiB down to 72.75 (outside); 72 GiB down to 69.84
    assert MEMORY_BAND == 0.03
    far = side_by_side(_with_stage_total(tp2, 70.0), _with_stage_total(tp2, 75.0))
    near = side_by_side(_with_stage_total(tp2, 70.0), _with_stage_total(tp2, 72.0))
    assert far.stages[0].inside_error is False
    assert near.stages[0].inside_error is True


def test_different_jobs_compare_throughput_per_gpu_not_step_time(tp2: PlanView) -> None:
    longer = PlanView.model_validate(
        estimate_json("llama-3.1-8b", gpus=8, seq_len=8192, global_batch=64, tp=2)
    )
    result = side_by_side(tp2, longer)
    assert not result.same_job
    assert result.job_differences["seq_len"] == (4096, 8192)
    assert result.headline[0].inside_error is None  # step times of different work
    assert result.headline[1].name == "tokens/s per GPU"
    assert result.headline[1].inside_error is not None
    assert "throughput per GPU" in result.verdict


def test_the_breakdown_lists_every_part_of_both(tp2: PlanView, tp2_pp4: PlanView) -> None:
    result = side_by_side(tp2, tp2_pp4)
    names = [pair.name for pair in result.breakdown]
    assert names == list(tp2.time.breakdown_s)
    bubble = next(pair for pair in result.breakdown if pair.name == "pipeline_bubble")
    assert bubble.a == 0.0 and bubble.b is not None and bubble.b > 0.0
    assert bubble.inside_error is False
