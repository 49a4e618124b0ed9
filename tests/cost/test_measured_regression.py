"""The memory model against the committed H100 training-step measurements.

``benchmarks/memory_measured.py`` prints the full table; this test keeps the model from
drifting away from the measurements it was checked against (no GPU needed: the records
are package data under ``hardware_db/profiles``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from planner.cost.reserve import VALIDATION_FILE, measured_records
from planner.measured_runs import estimate_record

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "memory_measured.py"


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("memory_measured", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_h100_measurements_are_packaged() -> None:
    records = measured_records("h100-sxm")
    assert len(records) >= 30
    assert all(r["provenance"]["gpu_name"].startswith("NVIDIA H100") for r in records)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return _benchmark_module().run("h100-sxm")


def test_every_measured_peak_within_two_percent(rows: list[dict]) -> None:
    measured = [row for row in rows if row["error_pct"] is not None]
    assert len(measured) >= 30
    worst = max(measured, key=lambda row: abs(row["error_pct"]))
    assert abs(worst["error_pct"]) <= 2.0, worst


def test_runs_that_ran_out_of_memory_are_predicted_not_to_fit(rows: list[dict]) -> None:
    oom = [row for row in rows if row["measured_gib"] is None]
    assert oom, "the sweep recorded out-of-memory runs"
    assert all(not row["predicted_fits"] for row in oom)


@pytest.mark.parametrize("gpu_id", ["h100-sxm", "h200-sxm"])
def test_validation_sweep_memory_within_two_percent(gpu_id: str) -> None:
    """The validation sweeps (shapes never used to calibrate anything) stay within 2%, and
    their out-of-memory run is predicted not to fit."""
    records = measured_records(gpu_id, VALIDATION_FILE)
    assert len(records) >= 14
    for record in records:
        result = estimate_record(record, gpu_id=gpu_id)
        if record.get("oom"):
            assert not result.memory.fits, record["config"]["preset"]
            continue
        measured = record["memory"]["timed_peak_allocated"] / 2**30
        error = result.memory.stages[0].allocated_gib / measured - 1
        assert abs(error) <= 0.02, (record["config"]["preset"], error)
