"""Reports of the specialist results (scatter, expert placement, memory plan): every bar
drawn is a number of the result's JSON, and a malformed result names its field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from html_elements import elements

from planner.errors import SpecError
from planner.report import report_html


def _json(run_cli, *args: str) -> dict[str, Any]:
    result = run_cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _bars(page: str) -> dict[tuple[str, str], float]:
    return {
        (bar["data-row"], bar["data-series"]): float(bar["data-value"])
        for bar in elements(page, "rect", **{"class": "bar"})
    }


def test_scatter_report_draws_each_batch_against_its_baselines(run_cli) -> None:
    data = _json(
        run_cli, "scatter", "--model", "llama-3.1-8b", "--cluster", "hgx-h200", "--gpus", "8",
        "--length-dist", "uniform", "--global-batch-tokens", "64Ki", "--max-seq-len",
        "16384", "--seed", "1", "--time-limit", "2",
    )  # fmt: skip
    bars = _bars(report_html(data))
    for batch in data["batches"]:
        row = f"batch {batch['index']}"
        assert bars[(row, "scatter")] == batch["step_time_s"]
        for baseline in batch["baselines"]:
            assert bars[(row, baseline["name"])] == baseline["step_time_s"]


def test_placement_report_draws_each_layers_loads(run_cli) -> None:
    data = _json(
        run_cli, "place-experts", "--model", "mixtral-8x7b", "--cluster", "dgx-h100",
        "--ep", "8", "--synthetic", "zipf:1.0,seed:1", "--time-limit", "2",
    )  # fmt: skip
    bars = _bars(report_html(data))
    for layer in data["layers"][:16]:
        assert bars[(f"layer {layer['layer']}", "busiest GPU")] == layer["max_load"]
        assert bars[(f"layer {layer['layer']}", "mean GPU")] == layer["mean_load"]


def test_memory_plan_report_draws_each_stages_peaks(run_cli) -> None:
    data = _json(
        run_cli, "memplan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "4096", "--global-batch", "64", "--tp", "2", "--pp", "2",
    )  # fmt: skip
    page = report_html(data)
    bars = _bars(page)
    for stage in data["stages"]:
        peaks = stage["peaks"]
        assert bars[(f"stage {stage['stage']}", "live (bound)")] == peaks["live_gib"]
        assert bars[(f"stage {stage['stage']}", "planned")] == peaks["planned_gib"]
    assert all(f.get("role") == "img" and f.get("aria-label") for f in elements(page, "svg"))
    assert elements(page, "table")


def test_a_malformed_specialist_result_names_its_field() -> None:
    with pytest.raises(SpecError, match="result file: "):
        report_html({"batches": [{"index": "x"}], "summary": {}})
