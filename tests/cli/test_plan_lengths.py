"""``autopar plan --length-dist | --seq-lengths``: every plan priced over the lengths
(``length_pricing``), the best plan's ``scattering`` block with the search's verdict in the
JSON and the table, the Megatron launch it leads to, one-line errors (exit 2)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

SMALL = (
    "plan", "--model", "llama-3.1-8b", "--cluster", "hgx-h200", "--gpus", "8",
    "--seq-len", "8192", "--global-batch", "16", "--top-k", "2",
)  # fmt: skip
SUMMARY_KEYS = {
    "lengths_source", "batches", "gpus", "max_seq_len", "step_time_s", "static_step_time_s",
    "megatron_hybrid_cp_step_time_s", "speedup_over_static", "static_degrees", "sp_sizes",
    "wins", "reason", "solve_s", "decided_by", "search_static_step_time_s",
    "search_hybrid_step_time_s",
}  # fmt: skip


def _lengths(tmp_path: Path, lengths: list[int]) -> str:
    path = tmp_path / "lengths.json"
    path.write_text(json.dumps(lengths))
    return str(path)


def test_length_dist_prices_every_plan_and_adds_the_block(run_cli: Callable) -> None:
    plain = run_cli(*SMALL, "--json")
    scattered = run_cli(*SMALL, "--json", "--length-dist", "wikipedia-flexsp")
    assert plain.exit_code == 0 and scattered.exit_code == 0, scattered.stderr
    without, with_lengths = json.loads(plain.stdout), json.loads(scattered.stdout)
    best, runner_up = with_lengths["plans"]
    summary = best.pop("scattering")
    assert set(summary) == SUMMARY_KEYS
    assert "scattering" not in runner_up
    assert "scattering" not in without["plans"][0]
    assert "length_pricing" not in without["plans"][0]
    for entry in (best, runner_up):
        pricing = entry["length_pricing"]
        assert pricing["max_seq_len"] == 8192
        assert sum(b["token_share"] for b in pricing["buckets"]) == pytest.approx(1, abs=1e-5)
        # packed documents attend within themselves: cheaper than every sample at 8K
        assert entry["time"]["step_time_s"] < pricing["fixed_length_step_time_s"]
    assert summary["gpus"] == 8 and summary["max_seq_len"] == 8192 and summary["batches"] == 2
    assert summary["lengths_source"].startswith("wikipedia-flexsp")
    assert summary["step_time_s"] <= summary["static_step_time_s"]
    assert summary["decided_by"] == "search"
    assert summary["wins"] == (best["length_pricing"]["method"] == "hybrid_cp")
    assert all(size & (size - 1) == 0 for size in summary["sp_sizes"] + summary["static_degrees"])


def test_table_says_whether_scattering_wins(run_cli: Callable) -> None:
    result = run_cli(*SMALL, "--length-dist", "uniform")
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "Lengths (2 batch(es) on 8 GPUs, documents cut at 8192 tokens" in text
    assert "every layout was priced over them; hybrid context parallel" in text
    assert "for the best static degree" in text


def test_winning_lengths_become_hybrid_context_parallel(run_cli: Callable, tmp_path: Path) -> None:
    """Two 64K documents and sixty-four of 2K on 16 GPUs: the search prices hybrid context
    parallel faster for the best layout (pp = 1, cp > 1), so the launch asks for it."""
    lengths = _lengths(tmp_path, [65536, 65536] + [2048] * 64)
    out = tmp_path / "run"
    result = run_cli(
        "plan", "--model", "llama-3.1-8b", "--cluster", "hgx-h200", "--gpus", "16",
        "--seq-len", "65536", "--global-batch", "16", "--top-k", "1", "--seq-lengths", lengths,
        "--emit", "megatron", "--out", str(out), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    (best,) = json.loads(result.stdout)["plans"]
    assert best["scattering"]["wins"] is True, best["scattering"]
    assert best["length_pricing"]["method"] == "hybrid_cp"
    assert best["config"]["pp"] == 1
    args = (out / "megatron_args.txt").read_text().splitlines()
    cp = best["config"]["cp"]
    assert f"--max-seqlen-per-dp-cp-rank {65536 // cp}" in args
    assert {"--hybrid-context-parallel", "--calculate-per-token-loss"} <= set(args)


def test_a_split_pipeline_keeps_static_cp_and_says_why(run_cli: Callable, tmp_path: Path) -> None:
    lengths = _lengths(tmp_path, [32768, 32768] + [2048] * 40)
    out = tmp_path / "run"
    result = run_cli(
        "plan", "--model", "llama-3.1-8b", "--cluster", "hgx-h200", "--gpus", "16",
        "--seq-len", "32768", "--global-batch", "16", "--top-k", "1", "--seq-lengths", lengths,
        "--fix", "pp=2", "--emit", "megatron", "--out", str(out), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    best = json.loads(result.stdout)["plans"][0]
    assert best["length_pricing"]["method"] == "static"
    assert best["length_pricing"]["hybrid_step_time_s"] is None
    assert best["scattering"]["wins"] is False
    launch = (out / "launch_megatron.sh").read_text()
    assert "--hybrid-context-parallel" not in launch
    assert "  # static cp " in launch
    assert "pp > 1: Megatron-Core's hybrid context parallel needs pp = 1" in launch


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--length-dist", "uniform", "--seq-lengths", "x.txt"), "give one of them, not both"),
        (("--length-dist", "zipf"), "length-dist: unknown 'zipf'"),
        (("--seq-lengths", "/nonexistent/lengths.txt"), "seq-lengths: cannot read"),
        (("--length-dist", "uniform", "--gpus", "6"), "GPU count must be one too (got 6)"),
    ],
)
def test_bad_lengths_are_one_line_errors(run_cli: Callable, flags: tuple, expected: str) -> None:
    result = run_cli(*SMALL, *flags)  # a second --gpus replaces the first
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("autopar: error: ")
    assert result.stderr.count("\n") == 1
    assert expected in result.stderr


def test_bad_lengths_in_a_file(run_cli: Callable, tmp_path: Path) -> None:
    path = tmp_path / "lengths.txt"
    path.write_text("100\n-5\n")
    result = run_cli(*SMALL, "--seq-lengths", str(path))
    assert result.exit_code == 2
    assert "line 2 must be a positive number of tokens" in result.stderr


def test_refinement_with_lengths_is_refused(run_cli: Callable, tmp_path: Path) -> None:
    """Refinement scores trials at the one --seq-len: mixing it with a plan priced over
    the lengths would compare two different prices, so the pair is a one-line error."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    result = run_cli(*SMALL, "--length-dist", "fixed", "--refine", "3", "--storage", storage)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "--refine: refinement scores layouts at the one --seq-len" in result.stderr
