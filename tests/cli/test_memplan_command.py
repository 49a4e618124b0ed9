"""End-to-end tests of ``autopar memplan``: a layout, a snapshot, the budget, the errors."""

from __future__ import annotations

import json
from pathlib import Path

SNAPSHOT = str(
    Path(__file__).resolve().parents[2]
    / "hardware_db/profiles/h200-sxm/2026-12-03-h200-allocator-snapshots/dense-ac-default.pickle.gz"
)
EIGHT_B = (
    "memplan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--seq-len", "4096",
    "--global-batch", "64", "--tp", "2", "--pp", "2", "--time-limit", "2",
)  # fmt: skip


def test_layout_json_has_every_stage_and_the_estimate_peak(run_cli) -> None:
    result = run_cli(*EIGHT_B, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["source"] == "model" and data["config"]["pp"] == 2
    assert [s["stage"] for s in data["stages"]] == [0, 1]
    estimate = run_cli(
        "estimate", *EIGHT_B[1:9], "--tp", "2", "--pp", "2", "--json"
    )  # same flags, defined once
    assert estimate.exit_code == 0, estimate.stderr
    allocated = [s["allocated_gib"] for s in json.loads(estimate.stdout)["memory"]["stages"]]
    for stage, expected in zip(data["stages"], allocated, strict=True):
        assert abs(stage["peaks"]["live_gib"] - expected) < 0.002
        assert stage["peaks"]["live_gib"] <= stage["peaks"]["planned_gib"]


def test_budget_prints_the_choice_and_the_added_time(run_cli) -> None:
    result = run_cli(*EIGHT_B, "--stage", "0", "--budget-gib", "36")
    assert result.exit_code == 0, result.stderr
    assert "to fit 36 GiB" in result.stdout and "per step" in result.stdout
    assert "host profile" in result.stdout


def test_snapshot_table_shows_the_measured_peak(run_cli) -> None:
    result = run_cli("memplan", "--snapshot", SNAPSHOT, "--time-limit", "2")
    assert result.exit_code == 0, result.stderr
    assert "measured" in result.stdout and "4.13" in result.stdout  # 4228 MiB reserved
    data = json.loads(run_cli("memplan", "--snapshot", SNAPSHOT, "--json").stdout)
    peaks = data["stages"][0]["peaks"]
    assert peaks["measured_reserved_gib"] == peaks["allocator_gib"]


def test_bad_inputs_are_one_line_errors(run_cli, tmp_path: Path) -> None:
    cases = [
        (("memplan", "--model", "llama-3.1-8b"), "--cluster, --seq-len: required"),
        (("memplan", "--snapshot", SNAPSHOT, "--model", "x"), "drop --model"),
        (("memplan", "--snapshot", str(tmp_path / "none.pickle")), "cannot read"),
        ((*EIGHT_B, "--stage", "5"), "--stage: 5"),
        ((*EIGHT_B, "--budget-gib", "-1"), "--budget-gib: must be positive"),
        ((*EIGHT_B, "--tp", "3"), "layout"),
    ]
    for args, message in cases:
        result = run_cli(*args)
        assert result.exit_code == 2, (args, result.stdout)
        assert result.stderr.startswith("autopar: error: ") and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


RECIPE = (
    "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8", "--seq-len", "8192",
    "--global-batch", "128", "--cp", "2", "--distributed-optimizer",
)  # fmt: skip


def test_estimate_memplan_adds_the_simulated_peaks_and_the_fits_basis(run_cli) -> None:
    plain = run_cli("estimate", *RECIPE, "--json")
    assert plain.exit_code == 0, plain.stderr
    assert "simulated" not in plain.stdout and "fits_basis" not in plain.stdout
    result = run_cli("estimate", *RECIPE, "--json", "--memplan")
    assert result.exit_code == 0, result.stderr
    memory, before = json.loads(result.stdout)["memory"], json.loads(plain.stdout)["memory"]
    assert {k: v for k, v in memory.items() if k not in ("simulated", "fits_basis")} == before
    assert [peak["stage"] for peak in memory["simulated"]] == [0]
    assert memory["fits_basis"].startswith("Fits decided on the analytical model")
    shown = run_cli("estimate", *RECIPE, "--memplan")
    assert "Allocator simulation" in shown.stdout and "analytical model" in shown.stdout


def test_plan_memplan_simulates_only_the_best_plans(run_cli) -> None:
    result = run_cli(
        "plan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "4096", "--global-batch", "64", "--top-k", "4", "--memplan", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    plans = json.loads(result.stdout)["plans"]
    assert len(plans) == 4
    assert all("simulated" in entry["memory"] for entry in plans[:3])
    assert "simulated" not in plans[3]["memory"] and "fits_basis" not in plans[3]["memory"]
