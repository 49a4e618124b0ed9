"""``autopar place-experts`` and ``autopar routing-stats`` end to end: output, files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from planner.experts import read_eplb, read_sglang, read_table

PLACE = ("place-experts", "--model", "mixtral-8x7b", "--cluster", "dgx-h100", "--ep", "4")


def test_json_output_and_files_round_trip(run_cli, tmp_path: Path) -> None:
    result = run_cli(
        *PLACE, "--synthetic", "zipf:1.2,seed:4", "--replicas", "4", "--time-limit", "1",
        "--json", "--out", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ep"] == 4 and data["replicas"] == 4 and len(data["layers"]) == 32
    assert {b["name"] for b in data["baselines"]} == {"ours", "contiguous", "greedy_global"}
    ours, *others = sorted(data["baselines"], key=lambda b: b["name"] != "ours")
    assert all(ours["straggler_tokens"] <= b["straggler_tokens"] + 1e-9 for b in others)
    phy2log = data["phy2log"]
    assert len(phy2log[0]) == 12
    assert read_eplb(tmp_path / "eplb.json") == phy2log
    assert read_sglang(tmp_path / "sglang_expert_location.json", 8) == phy2log
    assert read_table(tmp_path / "placement.txt") == phy2log


def test_routing_stats_then_place_with_traffic(run_cli, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    trace = rng.integers(0, 8, size=(32, 300, 2))
    trace[1:] = np.where(rng.random((31, 300, 2)) < 0.7, (trace[:-1] + 3) % 8, trace[1:])
    np.save(tmp_path / "trace.npy", trace)
    stats = tmp_path / "stats.json"
    made = run_cli("routing-stats", str(tmp_path / "trace.npy"), "--out", str(stats))
    assert made.exit_code == 0, made.stderr
    assert "32 layers x 8 experts" in made.stdout
    placed = run_cli(
        *PLACE[:-1], "8", "--routing", str(stats), "--objective", "both", "--time-limit", "2"
    )
    assert placed.exit_code == 0, placed.stderr
    assert "objective both" in placed.stdout and "vs greedy global" in placed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--synthetic", "zipf:1", "--objective", "fast"), "--objective: unknown 'fast'"),
        (("--synthetic", "zipf:1", "--routing", "x.json"), "exactly one of --routing"),
        ((), "exactly one of --routing"),
        (("--routing", "missing.json"), "routing: file not found"),
        (("--synthetic", "zipf:-1"), "synthetic: zipf must be at least 0"),
        (("--synthetic", "zipf:1", "--replicas", "1"), "do not divide over ep 4"),
        (("--synthetic", "zipf:1", "--objective", "traffic"), "no affinity"),
    ],
)
def test_bad_inputs_are_one_line_errors(run_cli, args: tuple[str, ...], message: str) -> None:
    result = run_cli(*PLACE, *args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("autopar: error:")


def test_dense_model_and_bad_trace_are_refused(run_cli, tmp_path: Path) -> None:
    dense = run_cli(
        "place-experts", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--ep", "4",
        "--synthetic", "zipf:1",
    )  # fmt: skip
    assert dense.exit_code == 2 and "has no MoE layers" in dense.stderr
    np.save(tmp_path / "flat.npy", np.arange(5))
    bad = run_cli("routing-stats", str(tmp_path / "flat.npy"), "--out", str(tmp_path / "s.json"))
    assert bad.exit_code == 2 and "expected [tokens, layers] or [layers, tokens, k]" in bad.stderr
