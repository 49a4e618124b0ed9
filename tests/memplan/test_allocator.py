"""The caching-allocator simulation: hand-computed traces, and the measured H200 snapshots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.memplan.allocator import CachingAllocator, allocation_size, round_size, simulate
from planner.memplan.trace import TraceEvent

MiB = 1 << 20
PROFILES = Path(__file__).resolve().parents[2] / "hardware_db/profiles/h200-sxm"
SNAPSHOTS = PROFILES / "2026-12-03-h200-allocator-snapshots"
MEGATRON_SNAPSHOTS = PROFILES / "2026-12-03-h200-megatron-allocator-snapshots"
"""Plain-PyTorch and Megatron-Core 0.16.1 training steps (one H200 each)."""


def test_rounding_and_segment_sizes() -> None:
    assert (round_size(1), round_size(512), round_size(513)) == (512, 512, 1024)
    assert allocation_size(MiB) == 2 * MiB  # small pool
    assert allocation_size(MiB + 512) == 20 * MiB  # under 10 MiB: one 20 MiB segment
    assert allocation_size(10 * MiB + 1) == 12 * MiB  # rounded up to 2 MiB


def test_small_requests_share_a_segment_and_freed_blocks_merge() -> None:
    allocator = CachingAllocator()
    allocator.alloc(0, 600 * 1024)
    allocator.alloc(1, 600 * 1024)  # the 2 MiB segment's rest (1.4 MiB) is split off
    assert (allocator.reserved, allocator.segments) == (2 * MiB, 1)
    allocator.alloc(2, 900 * 1024)  # 848 KiB left in the segment: a new one
    assert allocator.reserved == 4 * MiB
    allocator.free(0)
    allocator.free(1)  # merges with block 0 and the free rest: 2 MiB free again
    allocator.alloc(3, 900 * 1024)  # fits the merged 2 MiB block
    assert allocator.reserved == 4 * MiB


def test_large_pool_splits_only_rests_over_one_mib() -> None:
    allocator = CachingAllocator()
    allocator.alloc(0, 19 * MiB + 512)  # 20 MiB segment; rest 511.5 KiB <= 1 MiB: unsplit
    assert allocator.allocated == 20 * MiB
    allocator.free(0)
    allocator.alloc(1, 4 * MiB)  # best fit reuses the 20 MiB block, splits 16 MiB off
    allocator.alloc(2, 15 * MiB)  # takes the 16 MiB rest whole: 1 MiB left is not > 1 MiB
    assert (allocator.reserved, allocator.allocated) == (20 * MiB, 20 * MiB)


def test_freed_blocks_do_not_serve_larger_requests_without_expandable_segments() -> None:
    # 3 x 40 MiB, free the middle, ask for 60 MiB: the hole is too small -> a new segment.
    events = [TraceEvent("alloc", k, 40 * MiB) for k in range(3)]
    events += [TraceEvent("free", 1), TraceEvent("alloc", 3, 60 * MiB)]
    assert simulate(tuple(events), expandable_segments=False).peak_reserved == 180 * MiB
    # Expandable: 120 MiB mapped, then the open end grows by 60 MiB (three 20 MiB pages).
    assert simulate(tuple(events), expandable_segments=True).peak_reserved == 180 * MiB
    # Freeing the last block instead lets the end grow by only 20 MiB.
    events[3] = TraceEvent("free", 2)
    assert simulate(tuple(events), expandable_segments=True).peak_reserved == 140 * MiB
    assert simulate(tuple(events), expandable_segments=False).peak_reserved == 180 * MiB


def test_expandable_segments_map_twenty_mib_pages() -> None:
    result = simulate((TraceEvent("alloc", 0, 128 * MiB),), expandable_segments=True)
    assert result.peak_reserved == 140 * MiB  # as the H200 trace's first segment_map shows


def _measured(folder: Path) -> dict[str, dict]:
    runs = json.loads((folder / "results.json").read_text())["runs"]
    return {run["run"]: run for run in runs}


@pytest.mark.parametrize(
    "path",
    sorted(SNAPSHOTS.glob("*.pickle.gz")) + sorted(MEGATRON_SNAPSHOTS.glob("*.pickle.gz")),
    ids=lambda p: p.name,
)
def test_simulation_matches_the_measured_reserved_peak(path: Path) -> None:
    from planner.memplan.snapshot import read_snapshot

    snapshot = read_snapshot(path)
    measured = _measured(path.parent)[path.name.removesuffix(".pickle.gz")]
    assert snapshot.expandable_segments == measured["expandable_segments"]
    assert snapshot.trace_reserved_peak == measured["max_memory_reserved"]
    result = simulate(snapshot.events, expandable_segments=snapshot.expandable_segments)
    assert result.peak_reserved == pytest.approx(measured["max_memory_reserved"], rel=0.03)
    assert result.peak_allocated == pytest.approx(measured["max_memory_allocated"], rel=0.01)


def test_megatron_snapshots_are_reproduced_exactly() -> None:
    # Megatron's buffers are single large requests (exact 2 MiB-rounded segments): the
    # simulation of all fourteen recorded sequences lands on the measured peak to the byte
    from planner.memplan.snapshot import read_snapshot

    measured = _measured(MEGATRON_SNAPSHOTS)
    paths = sorted(MEGATRON_SNAPSHOTS.glob("*.pickle.gz"))
    assert len(paths) == 14
    for path in paths:
        snapshot = read_snapshot(path)
        result = simulate(snapshot.events, expandable_segments=snapshot.expandable_segments)
        assert (
            result.peak_reserved
            == measured[path.name.removesuffix(".pickle.gz")]["max_memory_reserved"]
        )
