"""The plan report: every drawn number is the plan JSON's, the timeline is the simulation's,
the page stands alone, and a malformed plan file is a one-line error."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from html_elements import elements

from planner.cost.timeline import PipelineTimes, simulate
from planner.errors import SpecError
from planner.report import read_report_input, report_html
from planner.report.compare import compare_to_best, comparison_sentence
from planner.report.memory_chart import PARTS
from planner.report.timeline_chart import MAX_DRAWN_OPS, plan_timeline


def test_memory_bars_are_the_json_stages(interleaved_plan: dict[str, Any]) -> None:
    page = report_html(interleaved_plan)
    stages = interleaved_plan["memory"]["stages"]
    assert len(stages) == 4
    drawn = elements(page, "rect", **{"class": "mem-part"})
    assert len(drawn) == len(stages) * len(PARTS)
    for stage in stages:
        mine = {
            r["data-part"]: float(r["data-gib"])
            for r in drawn
            if r["data-stage"] == str(stage["stage"])
        }
        assert mine["weights"] == pytest.approx(stage["weights_gib"], abs=1e-3)
        assert mine["gradients"] == pytest.approx(stage["gradients_gib"], abs=1e-3)
        assert mine["optimizer"] == pytest.approx(stage["optimizer_gib"], abs=1e-3)
        assert mine["activations"] == pytest.approx(stage["activations_gib"], abs=1e-3)
        reserve = stage["total_gib"] - stage["allocated_gib"]
        assert mine["reserve"] == pytest.approx(reserve, abs=2e-3)
        assert sum(mine.values()) == pytest.approx(stage["total_gib"], abs=5e-3)
    capacity = elements(page, "line", **{"class": "capacity"})
    assert float(capacity[0]["data-gib"]) == pytest.approx(
        interleaved_plan["memory"]["capacity_gib"]
    )


def test_timeline_is_the_simulation_replayed(interleaved_plan: dict[str, Any]) -> None:
    schedule = interleaved_plan["time"]["pipeline"]
    assert (schedule["pp"], schedule["vpp"], schedule["microbatches"]) == (4, 2, 8)
    expected = simulate(
        PipelineTimes(
            pp=4, vpp=2, microbatches=8, forward_s=tuple(schedule["forward_s"]),
            backward_s=tuple(schedule["backward_s"]), p2p_s=schedule["p2p_s"],
        )
    )  # fmt: skip
    page = report_html(interleaved_plan)
    drawn = elements(page, "rect", **{"class": "op"})
    assert len(drawn) == 2 * 4 * 2 * 8  # forward and backward of 8 micro-batches x 8 stages
    assert len(elements(page, "rect", **{"class": "bubble-row"})) == 4
    by_key = {(r["data-rank"], r["data-phase"], r["data-mb"], r["data-chunk"]): r for r in drawn}
    for op in expected.ops:
        rect = by_key[(str(op.rank), op.phase, str(op.microbatch), str(op.chunk))]
        assert float(rect["data-start"]) == op.start_s
        assert float(rect["data-end"]) == op.end_s


def test_the_replayed_pipeline_and_the_phases_after_it_make_the_step(
    interleaved_plan: dict[str, Any],
) -> None:
    timeline = plan_timeline(read_report_input(interleaved_plan).plans[0])
    assert timeline is not None
    total = timeline.pipeline_s + sum(seconds for _, seconds in timeline.after)
    assert total == pytest.approx(interleaved_plan["time"]["step_time_s"], rel=1e-5)


def test_waterfall_parts_are_the_breakdown(single_stage_plan: dict[str, Any]) -> None:
    page = report_html(single_stage_plan)
    drawn = elements(page, "rect", **{"class": "waterfall-part"})
    breakdown = {k: v for k, v in single_stage_plan["time"]["breakdown_s"].items() if v > 0}
    assert {r["data-part"]: float(r["data-seconds"]) for r in drawn} == breakdown
    total = elements(page, "rect", **{"class": "waterfall-total"})
    assert float(total[0]["data-seconds"]) == single_stage_plan["time"]["step_time_s"]


def test_every_figure_has_a_name_and_its_table(interleaved_plan: dict[str, Any]) -> None:
    page = report_html(interleaved_plan)
    figures = elements(page, "svg")
    assert len(figures) == 3  # memory, timeline, waterfall (one plan: no comparison)
    assert all(f.get("role") == "img" and f.get("aria-label") for f in figures)
    for table in ("memory-table", "timeline-table", "waterfall-table"):
        assert elements(page, "table", **{"class": table}), table


def test_the_page_needs_no_network(interleaved_plan: dict[str, Any]) -> None:
    page = report_html(interleaved_plan)
    assert not elements(page, "script") and not elements(page, "link")
    urls = set(re.findall(r"https?://[^\"' <]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"} | _sources(interleaved_plan)


def _sources(plan: dict[str, Any]) -> set[str]:
    """Source links that are text in the page (the model's source), never fetched."""
    return {plan["config"]["model_spec"]["source"]}


def test_long_schedules_leave_out_the_steady_middle(interleaved_plan: dict[str, Any]) -> None:
    many = json.loads(json.dumps(interleaved_plan))
    many["time"]["pipeline"]["microbatches"] = 1024  # 16,384 ops
    timeline = plan_timeline(read_report_input(many).plans[0])
    assert timeline is not None and timeline.left_out > 0 and timeline.gap_s is not None
    assert len(timeline.ops) <= MAX_DRAWN_OPS
    assert len(timeline.ops) + timeline.left_out == 2 * 8 * 1024
    page = report_html(many)
    assert "steady state" in page


def test_top_plans_side_by_side_say_when_the_difference_is_inside_the_band(
    single_stage_plan: dict[str, Any],
) -> None:
    slower = json.loads(json.dumps(single_stage_plan))
    slower["config"]["tp"] = 4
    slower["time"]["step_time_s"] = single_stage_plan["time"]["step_time_s"] * 1.03
    much_slower = json.loads(json.dumps(slower))
    much_slower["time"]["step_time_s"] = single_stage_plan["time"]["step_time_s"] * 1.5
    report = read_report_input({"plans": [single_stage_plan, slower, much_slower], "search": {}})
    near, far = compare_to_best(report.plans)
    assert near.differing == {"tp": (2, 4)} and near.inside_band
    assert not far.inside_band
    assert "inside the model's error band" in comparison_sentence(near)
    assert "outside the model's error band" in comparison_sentence(far)
    page = report_html({"plans": [single_stage_plan, slower, much_slower], "search": {}})
    assert len(elements(page, "td", **{"class": "differs"})) == 3  # tp of the three plans


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "expected a JSON object"),
        ({"plans": []}, "'plans' must be a non-empty list"),
        ({"config": {}, "memory": {}, "time": {}}, "plan file: config.model: Field required"),
        ({"plans": [{"config": 3}]}, "plan file: plans[0].config"),
    ],
)
def test_malformed_plan_files_name_the_field(data: object, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        report_html(data)


def test_report_command_writes_the_page(run_cli, tmp_path: Path, interleaved_plan) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(interleaved_plan))
    out = tmp_path / "report.html"
    result = run_cli("report", str(plan_file), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert out.read_text() == report_html(interleaved_plan)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "report: plan file not found"),
        ("{not json", "is not valid JSON"),
        ("[1]", "expected a JSON object"),
    ],
)
def test_report_command_bad_files_are_one_line(run_cli, tmp_path: Path, content, message) -> None:
    plan_file = tmp_path / "plan.json"
    if content is not None:
        plan_file.write_text(content)
    result = run_cli("report", str(plan_file), "--out", str(tmp_path / "r.html"))
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_report_command_unwritable_out_is_one_line(
    run_cli, tmp_path: Path, interleaved_plan
) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(interleaved_plan))
    result = run_cli("report", str(plan_file), "--out", "/proc/x/r.html")
    assert result.exit_code == 2
    assert "--report/--out" in result.stderr and len(result.stderr.strip().splitlines()) == 1
