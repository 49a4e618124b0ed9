"""Routing statistics readers, traces, the synthetic generator and the placement files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.errors import SpecError
from planner.experts import (
    eplb_triple,
    placement_table,
    read_eplb,
    read_routing,
    read_sglang,
    read_table,
    read_trace,
    stats_from_traces,
    synthetic_stats,
    write_eplb,
    write_sglang,
)

LOADS = [[5, 0, 3, 2], [1, 1, 6, 2]]


def test_loads_read_from_json_npy_steps_and_logical_count(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(LOADS))
    np.save(tmp_path / "b.npy", np.asarray(LOADS))
    steps = np.stack([np.asarray(LOADS), np.asarray(LOADS) * 2])
    np.save(tmp_path / "c.npy", steps)
    (tmp_path / "d.json").write_text(json.dumps({"logical_count": steps.tolist()}))
    assert read_routing(tmp_path / "a.json").loads == LOADS
    assert read_routing(tmp_path / "b.npy").loads == LOADS
    assert read_routing(tmp_path / "c.npy").loads == (np.asarray(LOADS) * 3).tolist()
    assert read_routing(tmp_path / "d.json").loads == (np.asarray(LOADS) * 3).tolist()


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_pt_file_without_torch_says_torch_is_needed(tmp_path: Path) -> None:
    (tmp_path / "counts.pt").write_bytes(b"not read")
    with pytest.raises(SpecError, match="needs torch"):
        read_routing(tmp_path / "counts.pt")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([[1, -2], [3, 4]], "must not be negative"),
        ([[1, 2], [3]], "rectangular array"),
        ([1, 2, 3], r"got shape \[3\]"),
        ([[1.5, 2], [3, 4]], "whole numbers"),
        ({"other": 1}, "neither loads nor logical_count"),
    ],
)
def test_bad_loads_name_the_rule(tmp_path: Path, content: object, message: str) -> None:
    (tmp_path / "bad.json").write_text(json.dumps(content))
    with pytest.raises(SpecError, match=f"routing.*{message}"):
        read_routing(tmp_path / "bad.json")


def test_token_layer_trace_gives_loads_and_affinity(tmp_path: Path) -> None:
    # 3 tokens through 2 layers: (0 -> 1), (0 -> 1), (2 -> 0).
    np.save(tmp_path / "t.npy", np.asarray([[0, 1], [0, 1], [2, 0]]))
    stats = stats_from_traces([read_trace(tmp_path / "t.npy")], experts=3)
    assert stats.loads == [[2, 0, 1], [1, 2, 0]]
    assert {(a.src, a.dst, a.tokens) for a in stats.affinity} == {(0, 1, 2), (2, 0, 1)}


def test_topk_trace_counts_every_pair_and_the_stats_file_round_trips(tmp_path: Path) -> None:
    # One token, top-2: layer 0 picks {0, 1}, layer 1 picks {2, 3}: four pairs.
    trace = np.asarray([[[0, 1]], [[2, 3]]])
    stats = stats_from_traces([trace], experts=4)
    assert stats.loads == [[1, 1, 0, 0], [0, 0, 1, 1]]
    assert {(a.src, a.dst) for a in stats.affinity} == {(0, 2), (0, 3), (1, 2), (1, 3)}
    stats.save(tmp_path / "stats.json")
    assert read_routing(tmp_path / "stats.json") == stats


def test_synthetic_is_seeded_and_skewed() -> None:
    one = synthetic_stats("zipf:1.2,affinity:0.5,seed:3", layers=3, experts=16, top_k=2)
    two = synthetic_stats("zipf:1.2,affinity:0.5,seed:3", layers=3, experts=16, top_k=2)
    assert one == two and one.affinity
    loads = np.asarray(one.loads)
    assert loads.sum() == 3 * 4096 * 2 and loads.max() > 3 * loads.mean()
    assert synthetic_stats("zipf:0", layers=2, experts=8, top_k=1).affinity == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [("affinity:0.3", "zipf:S is required"), ("zipf:x", "zipf must be a number"),
     ("zipf:1,affinity:2", r"affinity must be in \[0, 1\]"), ("zipf:1,foo:2", "is not one of")],
)  # fmt: skip
def test_bad_synthetic_specs(spec: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        synthetic_stats(spec, layers=2, experts=8, top_k=2)


@st.composite
def _placements(draw: st.DrawFn) -> tuple[list[list[int]], int, int]:
    experts, gpus = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    least = -(-experts // gpus)
    slots = draw(st.integers(least, least + 2))
    rows = []
    for _ in range(draw(st.integers(1, 3))):
        extra = draw(st.lists(st.integers(0, experts - 1), min_size=gpus * slots - experts,
                              max_size=gpus * slots - experts))  # fmt: skip
        rows.append(draw(st.permutations(list(range(experts)) + extra)))
    return rows, experts, gpus


@settings(max_examples=30, deadline=None)
@given(_placements())
def test_placement_files_round_trip(case: tuple[list[list[int]], int, int]) -> None:
    phy2log, experts, gpus = case
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_eplb(root / "eplb.json", phy2log, experts)
        write_sglang(root / "sglang.json", phy2log)
        (root / "table.txt").write_text(placement_table(phy2log, gpus))
        assert read_eplb(root / "eplb.json") == phy2log
        assert read_sglang(root / "sglang.json", experts) == phy2log
        assert read_table(root / "table.txt") == phy2log
    triple = eplb_triple(phy2log, experts)
    for layer, row in enumerate(phy2log):
        for e in range(experts):
            slots = [r for r in triple["log2phy"][layer][e] if r >= 0]
            assert len(slots) == triple["logcnt"][layer][e] and all(row[r] == e for r in slots)


def test_inconsistent_eplb_file_is_rejected(tmp_path: Path) -> None:
    triple = eplb_triple([[0, 1, 1, 2]], 3)
    triple["logcnt"] = [[1, 1, 2]]
    (tmp_path / "e.json").write_text(json.dumps(triple))
    with pytest.raises(SpecError, match="logcnt does not match phy2log"):
        read_eplb(tmp_path / "e.json")
    (tmp_path / "s.json").write_text(json.dumps({"physical_to_logical_map": [[0, 0, 2]]}))
    with pytest.raises(SpecError, match=r"physical_to_logical_map\[0\]: expert 1 has no slot"):
        read_sglang(tmp_path / "s.json", 3)
