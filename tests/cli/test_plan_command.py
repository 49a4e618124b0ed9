"""End-to-end tests of ``autopar plan``: JSON shape, the table, one-line errors (exit 2)."""

from __future__ import annotations

import json

import pytest

EIGHT_B = (
    "plan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
    "--seq-len", "4096", "--global-batch", "64",
)  # fmt: skip


def test_json_has_plans_and_search(run_cli) -> None:
    # neutral risk: the prediction's own order (averse reorders inside the error band)
    result = run_cli(*EIGHT_B, "--json", "--top-k", "3", "--risk", "neutral")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"plans", "search"}
    assert len(data["plans"]) == 3
    best = data["plans"][0]
    assert set(best) == {"config", "memory", "time", "explanation", "uncertainty"}
    assert best["config"]["num_gpus"] == 8 and best["memory"]["fits"] is True
    assert data["search"]["solver"] == "cp-sat" and data["search"]["optimal"] is True
    assert data["search"]["risk"] == "neutral"
    assert data["search"]["headroom_gib"] > 0 and "default" in data["search"]["headroom_basis"]
    times = [p["time"]["step_time_s"] for p in data["plans"]]
    assert times == sorted(times)


def test_table_fix_and_max(run_cli) -> None:
    result = run_cli(
        *EIGHT_B, "--fix", "tp=2,recompute=selective", "--max", "pp=2", "--risk", "neutral"
    )
    assert result.exit_code == 0, result.stderr
    assert "tp 2" in result.stdout and "dominant cost" in result.stdout
    assert "Fastest" in result.stdout and "Search:" in result.stdout


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--fix", "tp=3"), "tp=3"),
        (("--fix", "bogus=1"), "unknown knob 'bogus'"),
        (("--fix", "tp8"), "'tp8' is not knob=value"),
        (("--max", "recompute=full"), "--max: recompute=full"),
        (("--objective", "cost"), "objective cost needs price_per_gpu_hour and token_budget"),
        (("--objective", "min-gpus", "--token-budget", "1T"), "needs deadline_hours"),
        (
            ("--objective", "cost", "--price-per-gpu-hour", "2", "--token-budget", "lots"),
            "--token-budget: 'lots' is not a number of tokens",
        ),
        (("--objective", "fastest"), "--objective: unknown 'fastest'"),
    ],
)
def test_bad_flags_are_one_line_errors(run_cli, flags: tuple[str, ...], expected: str) -> None:
    result = run_cli(*EIGHT_B, *flags)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("autopar: error: ")
    assert result.stderr.count("\n") == 1
    assert expected in result.stderr


def test_plan_emits_the_best_plan(run_cli, tmp_path) -> None:
    out = tmp_path / "run"
    result = run_cli(
        "plan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "4096", "--global-batch", "64", "--top-k", "2",
        "--emit", "megatron", "--out", str(out), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    import json

    best = json.loads(result.stdout)["plans"][0]["config"]
    args = (out / "megatron_args.txt").read_text().split()
    assert args[args.index("--tensor-model-parallel-size") + 1] == str(best["tp"])
    assert args[args.index("--context-parallel-size") + 1] == str(best["cp"])
    assert args[args.index("--micro-batch-size") + 1] == str(best["mbs"])


def test_cost_objective_prints_hours_and_cost(run_cli) -> None:
    result = run_cli(
        "plan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "4096", "--global-batch", "64", "--objective", "cost",
        "--price-per-gpu-hour", "2.5", "--token-budget", "2B", "--top-k", "2", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["search"]["objective"] == "cost"
    assert data["search"]["gpus_searched"] == [1, 2, 4, 8]
    best = data["plans"][0]
    training = best["training"]
    assert training["token_budget"] == 2e9 and training["price_per_gpu_hour"] == 2.5
    tokens_per_step = best["config"]["global_batch_tokens"]
    steps = -(-2_000_000_000 // tokens_per_step)
    assert training["steps"] == steps
    hours = steps * best["time"]["step_time_s"] / 3600
    assert training["cost"] == pytest.approx(hours * best["config"]["num_gpus"] * 2.5, abs=0.01)
    table = run_cli(
        "plan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "4096", "--global-batch", "64", "--objective", "cost",
        "--price-per-gpu-hour", "2.5", "--token-budget", "2B", "--top-k", "2",
        "--risk", "neutral",
    )  # fmt: skip
    assert table.exit_code == 0, table.stderr
    assert "Cheapest" in table.stdout and "cost" in table.stdout and "GPUs" in table.stdout


def test_json_plan_has_no_training_block_without_a_budget(run_cli) -> None:
    result = run_cli(*EIGHT_B, "--json", "--top-k", "1")
    assert result.exit_code == 0, result.stderr
    assert set(json.loads(result.stdout)["plans"][0]) == {
        "config",
        "memory",
        "time",
        "explanation",
        "uncertainty",
    }
