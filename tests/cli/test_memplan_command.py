"""End-to-end tests of ``autopar memplan``: a layout, a snapshot, the budget, the errors."""

from __future__ import annotations

import json
import shlex
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


def test_budget_emit_writes_the_megatron_setting_it_reports(run_cli, tmp_path: Path) -> None:
    """--emit megatron: the arguments file carries exactly the setting --json reports,
    checked by the Megatron flag table's reader."""
    from planner.emit.megatron import megatron_flag_values

    out = tmp_path / "run"
    result = run_cli(
        *EIGHT_B, "--budget-gib", "38", "--json", "--emit", "megatron", "--out", str(out)
    )
    assert result.exit_code == 0, result.stderr
    setting = json.loads(result.stdout)["framework_settings"]["megatron"]
    assert setting["fits"] and setting["peak_gib"] <= 38 and setting["offload_layers"] == 0
    lines = (out / "megatron_args.txt").read_text().splitlines()
    tokens = [token for line in lines for token in shlex.split(line)]
    given = megatron_flag_values(tokens)
    assert given["--recompute-granularity"] == ("full",)
    assert given["--recompute-method"] == ("block",)
    assert given["--recompute-num-layers"] == (str(setting["recompute_num_layers"]),)
    script = (out / "launch_megatron.sh").read_text()
    assert (
        "# autopar memplan --budget-gib 38: this recompute/offload setting plans a peak" in script
    )
    assert ("# Mapped: chosen per layer" in script) == (setting["mapped"] is not None)


def test_budget_emit_deepspeed_checkpoints_every_layer_when_it_must(
    run_cli, tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    args = (
        *EIGHT_B[:-6],
        "--pp",
        "2",
        "--zero",
        "1",
        "--framework",
        "deepspeed",
        "--time-limit",
        "2",
    )
    result = run_cli(
        *args, "--budget-gib", "44", "--json", "--emit", "deepspeed", "--out", str(out)
    )
    assert result.exit_code == 0, result.stderr
    setting = json.loads(result.stdout)["framework_settings"]["deepspeed"]
    assert setting["recompute"] == "full" and setting["fits"]  # 48 GiB without: must recompute
    config = json.loads((out / "ds_config.json").read_text())
    assert config["pipeline"]["activation_checkpoint_interval"] == 1
    assert "activation_checkpointing" in config


def test_emit_errors_come_before_any_solving(run_cli, tmp_path: Path) -> None:
    out = str(tmp_path / "x")
    cases = [
        ((*EIGHT_B, "--emit", "megatron"), "--emit: needs --budget-gib"),
        ((*EIGHT_B, "--budget-gib", "38", "--emit", "megatron", "--recompute", "selective"),
         "drop --recompute selective"),
        ((*EIGHT_B, "--budget-gib", "38", "--emit", "megatron", "--stage", "0"), "drop --stage"),
        ((*EIGHT_B, "--out", out), "--out: only with --emit"),
        ((*EIGHT_B, "--budget-gib", "38", "--emit", "nemo"), "--emit: unknown format 'nemo'"),
        (("memplan", "--snapshot", SNAPSHOT, "--emit", "megatron"), "drop --emit"),
        ((*EIGHT_B, "--attention-backend", "nope"), "--attention-backend: unknown 'nope'"),
        ((*EIGHT_B, "--budget-gib", "38", "--emit", "torchtitan-toml"),
         "plan with --framework torchtitan"),
    ]  # fmt: skip
    for args, message in cases:
        result = run_cli(*args)
        assert result.exit_code == 2, (args, result.stdout)
        assert result.stderr.startswith("autopar: error: ") and message in result.stderr, args
        assert len(result.stderr.strip().splitlines()) == 1


def test_memplan_takes_estimates_layout_flags(run_cli) -> None:
    """Uneven stages and the schedule, spelled as for estimate (and Megatron)."""
    result = run_cli(
        *EIGHT_B, "--stage", "1", "--decoder-first-pipeline-num-layers", "12",
        "--last-stage-layers", "20", "--pipeline-schedule", "gpipe",
        "--attention-backend", "cudnn", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    config = json.loads(result.stdout)["config"]
    assert (config["first_stage_layers"], config["last_stage_layers"]) == (12, 20)
    assert config["pipeline_schedule"] == "gpipe"
    even = json.loads(run_cli(*EIGHT_B, "--stage", "1", "--json").stdout)
    uneven_peak = json.loads(result.stdout)["stages"][0]["peaks"]["live_gib"]
    assert uneven_peak > even["stages"][0]["peaks"]["live_gib"]  # 20 layers, not 16


def test_emit_refuses_a_budget_some_stage_cannot_fit(run_cli, tmp_path: Path) -> None:
    # 30 GiB: even with every layer recomputed or offloaded both stages need about 35
    result = run_cli(*EIGHT_B, "--budget-gib", "30", "--emit", "megatron", "--out", str(tmp_path))
    assert result.exit_code == 2, result.stdout
    assert "not every stage fits 30 GiB with any choice" in result.stderr
    assert not list(tmp_path.iterdir())
