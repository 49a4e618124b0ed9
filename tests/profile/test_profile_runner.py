"""The run loop (failures, retries, the time limit) and the JSON writer; no torch needed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

from rich.progress import Progress

from planner.cost.profile_rates import load_profile
from planner.profile import write_profile
from planner.profile.grid import MemoryPoint
from planner.profile.runner import _Run


def _run(deadline: float) -> _Run:
    timer = SimpleNamespace(cuda=False)
    return _Run(None, timer, deadline, Progress(disable=True))


POINTS = [MemoryPoint("copy", "bf16", n) for n in (1024, 2048, 4096)]


def test_out_of_memory_is_retried_once_then_recorded() -> None:
    calls: list[int] = []

    def flaky(point: MemoryPoint) -> str:
        calls.append(point.elements)
        if point.elements == 2048 and calls.count(2048) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if point.elements == 4096:
            raise RuntimeError("CUDA out of memory. Tried to allocate 4.00 GiB\nmore")
        return f"row {point.elements}"

    run = _run(deadline=time.monotonic() + 60)
    run.section("memory", POINTS, flaky)
    assert run.rows["memory"] == ["row 1024", "row 2048"]  # 2048 succeeded on its retry
    assert calls == [1024, 2048, 2048, 4096, 4096]
    [skip] = run.skipped
    assert skip.what == "memory copy bf16 8 KiB per tensor"
    assert skip.reason == "RuntimeError: CUDA out of memory. Tried to allocate 4.00 GiB"


def test_other_failures_are_recorded_not_retried() -> None:
    calls: list[int] = []

    def refuses(point: MemoryPoint) -> None:
        calls.append(point.elements)
        raise ValueError("fp8 dimensions must be multiples of 16")

    run = _run(deadline=time.monotonic() + 60)
    run.section("memory", POINTS[:1], refuses)
    assert calls == [1024]
    assert run.skipped[0].reason == "ValueError: fp8 dimensions must be multiples of 16"


def test_time_limit_skips_the_rest_in_one_entry() -> None:
    run = _run(deadline=time.monotonic() - 1)
    run.section("memory", POINTS, lambda point: "never")
    assert run.rows["memory"] == []
    [skip] = run.skipped
    assert skip.what == "3 points, from memory copy bf16 2 KiB per tensor"
    assert "time limit" in skip.reason


def test_agreed_stop_follows_the_other_processes() -> None:
    # a process inside its own time limit still stops when another process is past its own
    run = _run(deadline=time.monotonic() + 60)
    run.section("collectives", POINTS, lambda point: "row", agree=lambda late: True)
    assert run.rows["collectives"] == [] and "time limit" in run.skipped[0].reason


def test_written_file_reads_back_identically(tmp_path: Path, synthetic) -> None:
    profile = synthetic()
    path = tmp_path / "out" / "profile.json"
    write_profile(profile, path)
    assert load_profile(path) == profile
    lines = path.read_text().splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    first_gemm = lines[lines.index('  "gemm": [') + 1]
    assert json.loads(first_gemm.strip().rstrip(","))["role"] == "grid"  # one row per line
