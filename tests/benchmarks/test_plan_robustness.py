"""benchmarks/plan_robustness.py on its smallest job: the row it reports is the search's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import plan_robustness


def test_one_job_row_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    """Llama 3.1 8B on 8 H100s at 4K tokens: the fastest prediction uses CP 2, the best
    conventional layout is a few percent slower, inside the 10% band, so the top plan is
    conventional; the standalone conventional search agrees."""
    row = plan_robustness.run_job("8b-8", plan_robustness.JOBS["8b-8"], check=True)
    assert row["top_is_conventional"] and "cp" not in row["axes"]
    assert row["gain"] is not None and 0 < row["gain"] <= row["band"] == 0.10
    assert row["gain_exceeds_band"] is False
    assert row["check_agrees"] is True
    assert row["headroom_gib"] >= row["headroom_kept_gib"] > 0
    plan_robustness.print_table([row])
    out = capsys.readouterr().out
    assert "8b-8" in out and "1 jobs: the top plan is conventional in 1" in out
