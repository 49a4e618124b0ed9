"""The snapshot reader: real H200 snapshots, and refusals of files that are not snapshots."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import pytest

from planner.errors import SpecError
from planner.memplan.snapshot import read_snapshot
from planner.memplan.trace import lifetimes, live_curve

PROFILES = Path(__file__).resolve().parents[2] / "hardware_db/profiles/h200-sxm"
SNAPSHOTS = PROFILES / "2026-12-03-h200-allocator-snapshots"
MEGATRON_SNAPSHOTS = PROFILES / "2026-12-03-h200-megatron-allocator-snapshots"


def test_reads_committed_snapshots() -> None:
    # all eight are read by the allocator tests; the lifetimes are checked on two kinds
    assert len(sorted(SNAPSHOTS.glob("*.pickle.gz"))) == 8
    for path in (
        SNAPSHOTS / "dense-ac-default.pickle.gz",
        SNAPSHOTS / "moe-noac-expandable.pickle.gz",
    ):
        snapshot = read_snapshot(path)
        assert snapshot.actions["alloc"] > 1000
        assert snapshot.untracked_frees == 0
        allocs = sum(e.op == "alloc" for e in snapshot.events)
        assert allocs == snapshot.actions["alloc"]
        spans = lifetimes(snapshot.events)
        assert len(spans) == allocs and all(t.start < t.end for t in spans)
        assert live_curve(snapshot.events).min() >= 0


def test_reads_committed_megatron_snapshots() -> None:
    # fourteen Megatron-Core runs, every one recorded from before the model was built
    paths = sorted(MEGATRON_SNAPSHOTS.glob("*.pickle.gz"))
    assert len(paths) == 14
    assert sum(p.stat().st_size for p in paths) < 4 * 2**20  # a few MiB in all
    for path in paths:
        snapshot = read_snapshot(path)
        assert snapshot.untracked_frees == 0
        assert snapshot.expandable_segments == ("expandable" in path.name)
        assert snapshot.actions["alloc"] == sum(e.op == "alloc" for e in snapshot.events)
        assert live_curve(snapshot.events).min() >= 0
    # the MoE runs ask for more, smaller blocks (per-expert token gathers) than the dense ones
    dense = read_snapshot(MEGATRON_SNAPSHOTS / "megatron-dense-none-default.pickle.gz")
    moe = read_snapshot(MEGATRON_SNAPSHOTS / "megatron-moe-none-default.pickle.gz")
    assert moe.actions["alloc"] > 2 * dense.actions["alloc"]


def test_plain_and_gzip_pickles_are_read(tmp_path: Path) -> None:
    data = {
        "segments": [],
        "device_traces": [
            [
                {"action": "segment_alloc", "addr": 0, "size": 2 << 20, "stream": 0},
                {"action": "alloc", "addr": 0, "size": 512, "stream": 0},
                {"action": "free_requested", "addr": 0, "size": 512, "stream": 0},
                {"action": "free_completed", "addr": 0, "size": 512, "stream": 0},
                {"action": "free_completed", "addr": 99, "size": 512, "stream": 0},
            ]
        ],
    }
    plain = tmp_path / "s.pickle"
    plain.write_bytes(pickle.dumps(data))
    packed = tmp_path / "s.pickle.gz"
    packed.write_bytes(gzip.compress(pickle.dumps(data)))
    for path in (plain, packed):
        snapshot = read_snapshot(path)
        assert [e.op for e in snapshot.events] == ["alloc", "free"]
        assert (snapshot.untracked_frees, snapshot.trace_reserved_peak) == (1, 2 << 20)


def test_refuses_pickles_that_name_code(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(SpecError, match=r"refers to os\.system"):
        read_snapshot(evil)


def test_refuses_other_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.pickle"
    text.write_text("hello")
    with pytest.raises(SpecError, match="not a memory snapshot"):
        read_snapshot(text)
    other = tmp_path / "other.pickle"
    other.write_bytes(pickle.dumps({"segments": []}))
    with pytest.raises(SpecError, match="no 'device_traces'"):
        read_snapshot(other)
    with pytest.raises(SpecError, match="cannot read"):
        read_snapshot(tmp_path / "missing.pickle")
