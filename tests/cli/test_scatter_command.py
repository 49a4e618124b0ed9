"""``autopar scatter``: the table, the JSON, and one-line errors (exit 2) for bad lengths."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

ARGS = ("scatter", "--model", "llama-3.1-8b", "--cluster", "hgx-h200", "--time-limit", "0.2")


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "lengths.txt"
    path.write_text(text)
    return str(path)


def test_json_lists_micro_batches_groups_and_speedups(run_cli: Callable, tmp_path: Path) -> None:
    lengths = _file(tmp_path, "\n".join(str(n) for n in (300, 120, 9000, 70, 2100, 800, 64)))
    result = run_cli(*ARGS, "--gpus", "8", "--seq-lengths", lengths, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    (batch,) = data["batches"]
    groups = [g for m in batch["micro_batches"] for g in m["groups"]]
    assert sorted(i for g in groups for i in g["sequences"]) == list(range(7))
    assert {g["placement"] for g in groups} == {"inside node"}
    assert {b["name"] for b in batch["baselines"]} == {
        "static",
        "megatron_hybrid_cp",
        "best_fit_decreasing",
    }
    assert data["summary"]["speedups"]["static"] >= 1 - 1e-9


def test_table_from_a_distribution(run_cli: Callable) -> None:
    result = run_cli(
        *ARGS, "--gpus", "16", "--length-dist", "wikipedia-flexsp",
        "--global-batch-tokens", "128K", "--max-seq-len", "16384", "--seed", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "Batch 0:" in result.stdout and "GiB/GPU" in result.stdout
    assert "speed-up over static" in result.stdout


def test_json_from_the_code_distribution(run_cli: Callable) -> None:
    result = run_cli(
        *ARGS, "--gpus", "8", "--length-dist", "code-files",
        "--global-batch-tokens", "64K", "--max-seq-len", "16384", "--seed", "1", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    (batch,) = json.loads(result.stdout)["batches"]
    placed = [i for m in batch["micro_batches"] for g in m["groups"] for i in g["sequences"]]
    assert sorted(placed) == list(range(len(placed))) and len(placed) > 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "seq-lengths: .* is empty"),
        ("100\n0\n", "seq-lengths: line 2 must be a positive number of tokens, got 0"),
        ("100\n-3\n", "seq-lengths: line 2 must be a positive number of tokens, got -3"),
        ("100\nten\n", "seq-lengths: line 2 is not a number"),
        ("100\n99999999\n", "seq_lengths: batch 0 sequence 1 has 99,999,999 tokens"),
    ],
)
def test_bad_lengths_are_one_line_errors(
    run_cli: Callable, tmp_path: Path, text: str, message: str
) -> None:
    result = run_cli(*ARGS, "--gpus", "8", "--seq-lengths", _file(tmp_path, text))
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("autopar: error: ")
    assert re.search(message, result.stderr), result.stderr


def test_bad_options_name_the_field(run_cli: Callable, tmp_path: Path) -> None:
    lengths = _file(tmp_path, "100\n")
    both = run_cli(*ARGS, "--gpus", "8", "--seq-lengths", lengths, "--length-dist", "uniform")
    assert both.exit_code == 2 and "exactly one of --seq-lengths" in both.stderr
    algo = run_cli(*ARGS, "--gpus", "8", "--seq-lengths", lengths, "--cp-algo", "x")
    assert algo.exit_code == 2 and "--cp-algo: unknown 'x'" in algo.stderr
    dist = run_cli(*ARGS, "--gpus", "8", "--length-dist", "nope")
    assert dist.exit_code == 2 and "length-dist: unknown 'nope'" in dist.stderr
    odd = run_cli(*ARGS, "--gpus", "6", "--seq-lengths", lengths)
    assert odd.exit_code == 2 and "powers of two" in odd.stderr
