"""``autopar plan`` and ``estimate`` say the margin kept, borrowed rates, a defaulted GPU
count and the search's counts truthfully."""

from __future__ import annotations

import json
import re

EIGHT_B = (
    "plan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
    "--seq-len", "4096", "--global-batch", "64", "--top-k", "2",
)  # fmt: skip


def test_every_plan_shows_the_headroom_kept_and_why(run_cli) -> None:
    table = run_cli(*EIGHT_B)
    assert table.exit_code == 0, table.stderr
    text = " ".join(table.stdout.split())
    assert "headroom kept: 2.71 GiB (default: 3.41% of 79.18 GiB" in text
    data = json.loads(run_cli(*EIGHT_B, "--json").stdout)
    assert data["search"]["headroom_gib"] == 2.71
    assert data["search"]["headroom_basis"].startswith("default: 3.41% of 79.18 GiB")
    none = json.loads(run_cli(*EIGHT_B, "--json", "--headroom-gib", "0").stdout)
    assert none["search"]["headroom_gib"] == 0.0
    assert none["search"]["headroom_basis"] == "none, as asked (--headroom-gib 0)"


def test_risk_neutral_is_pure_throughput_and_averse_says_why(run_cli) -> None:
    neutral = json.loads(run_cli(*EIGHT_B, "--json", "--risk", "neutral").stdout)
    averse = json.loads(run_cli(*EIGHT_B, "--json").stdout)
    assert neutral["search"]["risk"] == "neutral" and averse["search"]["risk"] == "averse"
    assert neutral["plans"][0]["config"]["cp"] == 2  # 2,048 tokens per rank
    assert averse["plans"][0]["config"]["cp"] == 1
    assert "Chosen for robustness" in averse["plans"][0]["explanation"]
    bad = run_cli(*EIGHT_B, "--risk", "reckless")
    assert bad.exit_code == 2 and "--risk: unknown 'reckless'" in bad.stderr


def test_borrowed_rates_are_flagged_in_the_table(run_cli) -> None:
    result = run_cli(
        "plan", "--model", "llama-3.1-8b", "--cluster", "dgx-b200", "--gpus", "8",
        "--seq-len", "4096", "--global-batch", "64", "--top-k", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "rates scaled from h100-sxm, unvalidated on b200" in " ".join(result.stdout.split())


def test_a_missing_gpu_count_is_said(run_cli) -> None:
    result = run_cli(
        "plan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--seq-len", "4096",
        "--global-batch", "64", "--top-k", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "neither --nodes nor --gpus given: planning for one node (8 GPUs)" in result.stdout
    quiet = run_cli(
        "plan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--seq-len", "4096",
        "--global-batch", "64", "--top-k", "1", "--json",
    )  # fmt: skip
    json.loads(quiet.stdout)  # the note goes to stderr with --json
    assert "planning for one node" in quiet.stderr


def test_search_line_counts_split_layouts_as_legal(run_cli) -> None:
    result = run_cli(*EIGHT_B, "--fix", "pp=2")  # pipelines: the split solver has work
    line = next(line for line in result.stdout.splitlines() if line.startswith("Search:"))
    assert "from the split solver)" in line
    words = line.replace(",", "").split()
    legal = int(words[words.index("legal") - 1])
    fit = int(words[words.index("fit;") - 1])
    assert legal >= fit


def test_estimate_says_whether_the_default_margin_is_kept(run_cli) -> None:
    layout = (
        "--tp", "2", "--pp", "8", "--cp", "4", "--vpp", "2", "--mbs", "1", "--recompute", "none",
        "--sequence-parallel", "--distributed-optimizer",
    )  # fmt: skip
    edge = run_cli(
        "estimate", "--model", "llama-3.1-70b", "--cluster", "dgx-h100", "--gpus", "64",
        "--seq-len", "8448", "--global-batch", "512", *layout,
    )  # fmt: skip
    assert edge.exit_code == 0, edge.stderr
    text = " ".join(edge.stdout.split())
    fits = re.search(r"Fits: peak [0-9.]+ GiB of 79\.18 GiB \(([0-9.]+) GiB headroom\)", text)
    assert fits is not None, text
    free = float(fits.group(1))
    assert free < 2.71
    margin = "It does NOT keep the default margin of `autopar plan` (2.71 GiB: 3.41% of capacity"
    assert margin in text
    assert f"{2.71 - free:.2f} GiB short" in text
    roomy = run_cli(
        "estimate", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "4096", "--global-batch", "64", "--tp", "1", "--pp", "1", "--mbs", "1",
        "--recompute", "full", "--distributed-optimizer",
    )  # fmt: skip
    assert "It keeps the default margin of `autopar plan` too (2.71 GiB" in " ".join(
        roomy.stdout.split()
    )
