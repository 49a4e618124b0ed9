"""``autopar compare``: two plans from plan files side by side, and bad input as one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from planner import ParallelConfig, WorkloadSpec, estimate, load_cluster, load_model


def _estimate(**layout: Any) -> dict[str, Any]:
    result = estimate(
        model=load_model("llama-3.1-8b"),
        cluster=load_cluster("dgx-h100", gpus=8),
        workload=WorkloadSpec(seq_len=4096, global_batch=64),
        layout=ParallelConfig(**layout),
    )
    return result.model_dump(mode="json")


@pytest.fixture(scope="module")
def plans_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plan file as ``autopar plan --json`` writes it: three plans, best first."""
    plans = [_estimate(tp=2), _estimate(tp=4), _estimate(tp=2, pp=2)]
    path = tmp_path_factory.mktemp("plans") / "plans.json"
    path.write_text(json.dumps({"plans": plans, "search": {"solver": "cp-sat"}}))
    return path


@pytest.fixture(scope="module")
def estimate_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("estimate") / "estimate.json"
    path.write_text(json.dumps(_estimate(tp=8)))
    return path


def test_one_file_compares_the_best_with_the_runner_up(run_cli, plans_file: Path) -> None:
    result = run_cli("compare", str(plans_file))
    assert result.exit_code == 0, result.stderr
    assert "A: plans.json #1: tp 2 pp 1" in result.stdout
    assert "B: plans.json #2: tp 4 pp 1" in result.stdout
    assert "Knobs that differ" in result.stdout
    assert "Peak memory per GPU of each pipeline stage" in result.stdout
    assert "Step time breakdown" in result.stdout
    assert "Verdict (A is plans.json #1, B is plans.json #2):" in result.stdout


def test_json_has_the_pairs_and_the_verdict(run_cli, plans_file: Path) -> None:
    result = run_cli("compare", str(plans_file), "--rank-b", "3", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["b_label"] == "plans.json #3"
    assert [pair["name"] for pair in data["stages"]] == ["stage 0", "stage 1"]
    assert data["headline"][0]["name"] == "step time"
    assert isinstance(data["headline"][0]["inside_error"], bool)
    assert {knob["name"] for knob in data["knobs"] if knob["differs"]} == {"pp", "dp"}


def test_two_files_compare_their_best(run_cli, plans_file: Path, estimate_file: Path) -> None:
    result = run_cli("compare", str(plans_file), str(estimate_file), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["a_layout"].startswith("tp 2 ") and data["b_layout"].startswith("tp 8 ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rank-b", "4"], "--rank-b: 4 is past the 3 plan(s) in"),
        (["--rank-a", "0"], "--rank-a: 0 must be at least 1"),
        (["--rank-a", "2", "--rank-b", "2"], "--rank-b: plan 2 of"),
    ],
)
def test_bad_ranks_are_one_line(run_cli, plans_file: Path, args: list[str], message: str) -> None:
    result = run_cli("compare", str(plans_file), *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_same_plan_twice_is_refused(run_cli, plans_file: Path) -> None:
    other_spelling = plans_file.parent / "." / plans_file.name
    result = run_cli("compare", str(plans_file), str(other_spelling))
    assert result.exit_code == 2
    assert "--rank-b: plan 1 of" in result.stderr


def test_an_estimate_file_alone_has_no_runner_up(run_cli, estimate_file: Path) -> None:
    result = run_cli("compare", str(estimate_file))
    assert result.exit_code == 2
    assert "--rank-b: 2 is past the 1 plan(s)" in result.stderr


def test_bad_files_are_one_line(run_cli, tmp_path: Path, plans_file: Path) -> None:
    missing = run_cli("compare", str(tmp_path / "none.json"), str(plans_file))
    assert missing.exit_code == 2 and "compare: plan file not found" in missing.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    bad = run_cli("compare", str(plans_file), str(broken))
    assert bad.exit_code == 2 and "is not valid JSON" in bad.stderr
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"plans": [{"config": {}}]}))
    invalid = run_cli("compare", str(wrong), str(plans_file))
    assert invalid.exit_code == 2 and "plan file: plans[0].config" in invalid.stderr
    for result in (missing, bad, invalid):
        assert len(result.stderr.strip().splitlines()) == 1


PLAN = (
    "plan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
    "--seq-len", "4096", "--global-batch", "64", "--fix", "tp=2,pp=1,cp=1",
)  # fmt: skip


def test_plan_compare_sets_the_best_beside_each_next_plan(run_cli) -> None:
    result = run_cli(*PLAN, "--top-k", "3", "--compare")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    table = out.index("Search:")  # the plan table and its summary come first
    for rank in (2, 3):
        start = out.index(f"Plan 1 beside plan {rank}:")
        assert start > table
        section = out[start:]
        assert "A: plan 1: tp 2 pp 1" in section and f"B: plan {rank}: tp 2 pp 1" in section
        for title in ("Knobs that differ", "Peak memory per GPU of each pipeline stage",
                      "Step time breakdown", "Error bands:"):  # fmt: skip
            assert title in section
        assert f"Verdict (A is plan 1, B is plan {rank}):" in section
    assert "Plan 1 beside plan 4" not in out
    assert "inside error" in out or "outside error" in out


def test_plan_compare_with_two_plans_one_plan_or_json(run_cli) -> None:
    two = run_cli(*PLAN, "--top-k", "2", "--compare")
    assert two.exit_code == 0 and two.stdout.count("Plan 1 beside plan") == 1
    one = run_cli(*PLAN, "--top-k", "1", "--compare")
    assert one.exit_code == 0 and "Compare: only one plan" in one.stdout
    refused = run_cli(*PLAN, "--compare", "--json")
    assert refused.exit_code == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "autopar compare" in refused.stderr
