"""Measured NCCL curves replace the ring formula for the group sizes measured."""

from __future__ import annotations

import json

import pytest

import hardware_db
from planner import load_cluster
from planner.cost.comm import collective_time, p2p_time
from planner.cost.measured_collectives import measured_collective_time
from planner.cost.placement import GroupPlacement

RECORD = "2026-12-03-h200x2-validation"


def _measured(op: str, size: int) -> float:
    path = hardware_db.profiles_dir() / "h200-sxm" / RECORD / "collectives.json"
    rows = json.loads(path.read_text())["results"]
    return next(r["time_s"] for r in rows if r["op"] == op and r["size_bytes"] == size)


def test_two_rank_group_takes_the_measured_time() -> None:
    cluster = load_cluster("hgx-h200", gpus=8)
    pair = GroupPlacement("tp", size=2, ranks_per_node=2, nodes=1)
    size = 16 * 2**20
    assert collective_time("all_gather", size, pair, cluster) == pytest.approx(
        _measured("all_gather_into_tensor", size), rel=1e-12
    )
    assert p2p_time(size, True, cluster) == pytest.approx(_measured("send_recv", size), rel=1e-12)
    between = collective_time("all_reduce", 24 * 2**20, pair, cluster)
    assert _measured("all_reduce", 16 * 2**20) < between < _measured("all_reduce", 32 * 2**20)
    # past the largest measured size the bandwidth holds: twice the bytes, twice the time
    assert collective_time("all_reduce", 2**31, pair, cluster) == pytest.approx(
        2 * _measured("all_reduce", 2**30), rel=1e-9
    )


def test_unmeasured_group_sizes_and_gpus_use_the_formula() -> None:
    assert measured_collective_time("h200-sxm", "all_reduce", 2**24, 4) is None
    assert measured_collective_time("h100-sxm", "all_reduce", 2**24, 2) is None
    cluster = load_cluster("hgx-h200", gpus=8)
    quad = GroupPlacement("tp", size=4, ranks_per_node=4, nodes=1)
    assert collective_time("all_reduce", 2**24, quad, cluster) > 0
