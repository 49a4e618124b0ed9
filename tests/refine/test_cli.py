"""``autopar plan --refine`` end to end: the JSON refinement block and the table."""

from __future__ import annotations

import json

PLAN = (
    "plan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
    "--seq-len", "4096", "--global-batch", "64", "--fix", "tp=2,pp=2", "--top-k", "2",
)  # fmt: skip


def test_json_has_a_refinement_block(run_cli, storage: str) -> None:
    result = run_cli(*PLAN, "--refine", "6", "--storage", storage, "--study-name", "cli", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"plans", "search", "refinement"}
    block = data["refinement"]
    assert block["study_name"] == "cli" and block["counts"]["total"] == 6
    assert block["counts"]["seeds"] == 2
    assert block["solver_best"]["step_time_s"] == data["plans"][0]["time"]["step_time_s"]
    assert block["best"] and block["gain_pct"] >= 0
    assert {"config", "memory", "time", "changes"} <= set(block["best"][0])


def test_table_and_pareto_front(run_cli, storage: str) -> None:
    result = run_cli(
        *PLAN, "--refine", "5", "--refine-objectives", "throughput,headroom", "--storage", storage
    )
    assert result.exit_code == 0, result.stderr
    assert "Pareto front (throughput, headroom)" in result.stdout
    assert "autopar refine-worker --study" in result.stdout


def test_unknown_objective_fails_before_planning(run_cli) -> None:
    result = run_cli(*PLAN, "--refine", "5", "--refine-objectives", "cost")
    assert result.exit_code == 2
    assert result.stderr == (
        "autopar: error: --refine-objectives: unknown 'cost'; known: throughput, headroom\n"
    )
