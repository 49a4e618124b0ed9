"""``autopar plan --routing / --synthetic``: the placement per plan, the balanced-routing
note, and one-line errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

MIXTRAL = (
    "plan", "--model", "mixtral-8x7b", "--cluster", "dgx-h100", "--gpus", "16",
    "--seq-len", "4096", "--global-batch", "32", "--top-k", "2", "--fix", "ep=8,tp=1",
)  # fmt: skip
DENSE = (
    "plan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
    "--seq-len", "4096", "--global-batch", "64",
)  # fmt: skip


def _one_line_error(result, expected: str) -> None:
    assert result.exit_code == 2, result.stdout
    assert result.stdout == ""
    assert result.stderr.startswith("autopar: error: ") and result.stderr.count("\n") == 1
    assert expected in result.stderr


def test_routing_file_prices_the_placement_and_json_carries_it(run_cli, tmp_path: Path) -> None:
    stats = tmp_path / "loads.json"
    loads = [[800, 400, 200, 100, 100, 100, 100, 100]] * 32  # Mixtral: 32 MoE layers
    stats.write_text(json.dumps(loads))
    skewed = json.loads(run_cli(*MIXTRAL, "--json", "--routing", str(stats)).stdout)
    balanced = json.loads(run_cli(*MIXTRAL, "--json").stdout)
    assert "routing_note" not in skewed and "assumed balanced" in balanced["routing_note"]
    placement = skewed["plans"][0]["expert_placement"]
    assert placement["ep"] == 8 and placement["max_imbalance"] == pytest.approx(800 / 237.5)
    assert placement["cross_node_fraction"] == 0.0  # ep 8 inside one node
    assert skewed["plans"][0]["time"]["step_time_s"] > balanced["plans"][0]["time"]["step_time_s"]


def test_table_prints_the_placement_or_the_balanced_note(run_cli) -> None:
    result = run_cli(*MIXTRAL, "--synthetic", "zipf:1.0,seed:1")
    assert result.exit_code == 0, result.stderr
    assert "experts placed on ep 8 by the solver" in result.stdout
    assert "assumed balanced" in run_cli(*MIXTRAL).stdout


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--synthetic", "pareto:2"), "synthetic"),
        (("--routing", "missing.json"), "missing.json"),
        (("--routing", "a.json", "--synthetic", "zipf:1"), "--routing: give at most one"),
    ],
)
def test_bad_routing_flags_are_one_line_errors(run_cli, flags, expected) -> None:
    _one_line_error(run_cli(*MIXTRAL, *flags), expected)


def test_wrong_shape_routing_is_refused(run_cli, tmp_path: Path) -> None:
    stats = tmp_path / "loads.json"
    stats.write_text(json.dumps([[1, 2, 3, 4]] * 32))
    _one_line_error(run_cli(*MIXTRAL, "--routing", str(stats)), "routing: 4 experts per layer")


def test_dense_model_with_routing_is_refused_naming_the_flag(run_cli, tmp_path: Path) -> None:
    stats = tmp_path / "loads.json"
    stats.write_text(json.dumps([[1, 2]]))
    _one_line_error(run_cli(*DENSE, "--routing", str(stats)), "--routing: llama-3.1-8b has no MoE")
    _one_line_error(run_cli(*DENSE, "--synthetic", "zipf:1"), "--synthetic: llama-3.1-8b")
