"""The report and the plan explorer in a real headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from live_server import running_server

from planner import ParallelConfig, WorkloadSpec, estimate, load_cluster, load_model
from planner.report import report_html

pytestmark = pytest.mark.browser


def _interleaved_plan() -> dict[str, Any]:
    result = estimate(
        model=load_model("llama-3.1-8b"),
        cluster=load_cluster("dgx-h100", gpus=8),
        workload=WorkloadSpec(seq_len=4096, global_batch=8),
        layout=ParallelConfig(tp=2, pp=4, vpp=2, sequence_parallel=True),
    )
    return result.model_dump(mode="json")


def test_report_renders_its_figures_without_errors(page: Any, tmp_path: Path) -> None:
    plan = _interleaved_plan()
    report = tmp_path / "report.html"
    report.write_text(report_html(plan))
    page.goto(report.as_uri())
    assert page.locator("svg.memory-chart rect.mem-part").count() == 4 * 6
    assert page.locator("svg.timeline-chart rect.op").count() == 2 * 4 * 2 * 8
    assert page.locator("table.memory-table tr").count() == 1 + 4
    assert page.locator("svg.waterfall-chart rect.waterfall-part").count() == len(
        [v for v in plan["time"]["breakdown_s"].values() if v > 0]
    )
    # the bars are drawn with a height: the page really laid them out
    box = page.locator("svg.memory-chart rect.mem-part").first.bounding_box()
    assert box is not None and box["height"] > 0
    assert page.errors == []


def test_explorer_runs_a_plan_and_downloads_its_launch_files(page: Any, tmp_path: Path) -> None:
    with running_server(f"sqlite:///{tmp_path / 'autopar.db'}", tmp_path) as server:
        base = str(server.base_url).rstrip("/")
        page.goto(base + "/")
        page.wait_for_function("document.querySelectorAll('#model option').length > 10")
        page.select_option("#model", "llama-3.1-8b")
        page.select_option("#cluster", "dgx-h100")
        page.fill("#gpus", "8")
        page.fill("#seq_len", "4096")
        page.fill("#global_batch", "64")
        page.click("#plan-button")
        page.wait_for_selector("#result:not([hidden])", timeout=90_000)
        assert page.locator("#result-table tr").count() >= 2
        with page.expect_download() as download:
            page.click("button.download[data-format=megatron]")
        names = {download.value.suggested_filename}
        assert names & {"launch_megatron.sh", "megatron_args.txt"}
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)
        assert saved.read_text().strip()
        page.click("#open-report")
        frame = page.frame_locator("#report-frame")
        frame.locator("svg.memory-chart").wait_for()
        assert frame.locator("svg.memory-chart rect.mem-part").count() > 0
        page.click("#refresh")
        page.wait_for_function("document.querySelectorAll('#stored-table tbody tr').length >= 1")
        stored = server.get("/v1/plans").json()
        assert stored and stored[0]["status"] == "done"
        assert json.dumps(stored[0]["request"])  # the listing carries the request
        assert page.errors == []
