"""Collective times against hand-computed values, and their monotonicity.

Numbers for dgx-h100 (hardware_db): NVLink 4 at 450 GB/s per direction x 0.80 achieved
= 360e9 B/s, 0.6 us per hop; InfiniBand NDR at 50 GB/s per port, 8 ports for 8 GPUs,
x 0.96 achieved = 48e9 B/s per GPU, 2.7 us per hop; NCCL base latency 6.6 us once per
collective. S = 360e6 bytes keeps the arithmetic round.
"""

from __future__ import annotations

import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.catalog import load_cluster
from planner.cost.comm import LINK_EFFICIENCY, Collective, collective_time, p2p_time
from planner.cost.placement import GroupPlacement, place_group, place_groups
from planner.specs.hardware import ClusterSpec, LinkKind
from planner.specs.layout import ParallelConfig

S = 360e6
NVLINK_BW = 450e9 * 0.80
IB_BW = 50e9 * 0.96
NVLINK_LAT = 0.6e-6
IB_LAT = 2.7e-6
BASE = 6.6e-6
OPS: tuple[Collective, ...] = typing.get_args(Collective)


def intra(size: int) -> GroupPlacement:
    return GroupPlacement("tp", size=size, ranks_per_node=size, nodes=1)


@pytest.fixture(scope="module")
def dgx() -> ClusterSpec:
    return load_cluster("dgx-h100", nodes=4)


def test_efficiencies_as_documented() -> None:
    assert set(LINK_EFFICIENCY) == set(typing.get_args(LinkKind))
    assert all(0 < value <= 1 for value in LINK_EFFICIENCY.values())
    assert LINK_EFFICIENCY["nvlink"] == 0.80 and LINK_EFFICIENCY["infiniband"] == 0.96


def test_ring_all_reduce_inside_a_node(dgx: ClusterSpec) -> None:
    # 2(n-1)/n·S/bw + 2(n-1)·latency + base, n = 8:
    # 1.75 x 360e6 / 360e9 = 1.75 ms; 14 x 0.6 us = 8.4 us; + 6.6 us -> 1.765 ms
    expected = 2 * 7 / 8 * S / NVLINK_BW + 2 * 7 * NVLINK_LAT + BASE
    assert expected == pytest.approx(1.765e-3, rel=1e-12)
    assert collective_time("all_reduce", S, intra(8), dgx) == pytest.approx(expected, rel=1e-12)


def test_all_gather_and_reduce_scatter_inside_a_node(dgx: ClusterSpec) -> None:
    # (n-1)/n·S/bw + (n-1)·latency + base, n = 4: 0.75 ms + 1.8 us + 6.6 us
    expected = 0.75e-3 + 3 * NVLINK_LAT + BASE
    for op in ("all_gather", "reduce_scatter", "all_to_all"):
        assert collective_time(op, S, intra(4), dgx) == pytest.approx(expected, rel=1e-12), op


def test_hierarchical_all_reduce_across_two_nodes(dgx: ClusterSpec) -> None:
    # dp 16 = 8 ranks on each of 2 nodes.
    # reduce-scatter in node: 7/8 x 360e6 / 360e9 = 0.875 ms + 7 x 0.6 us
    # all-reduce of S/8 = 45e6 over 2 nodes: 2(2-1)/2 x 45e6 / 48e9 = 0.9375 ms + 2 x 2.7 us
    # all-gather in node: as the reduce-scatter;  + base 6.6 us
    group = place_groups(ParallelConfig(), load_cluster("dgx-h100", nodes=2))["dp"]
    assert (group.ranks_per_node, group.nodes) == (8, 2)
    expected = 2 * (0.875e-3 + 7 * NVLINK_LAT) + (0.9375e-3 + 2 * IB_LAT) + BASE
    assert expected == pytest.approx(2.7079e-3, rel=1e-12)
    assert collective_time("all_reduce", S, group, dgx) == pytest.approx(expected, rel=1e-12)


def test_hierarchical_all_gather_across_two_nodes(dgx: ClusterSpec) -> None:
    # all-gather of S/8 over 2 nodes: 1/2 x 45e6 / 48e9 = 0.46875 ms + 2.7 us;
    # then in node: 0.875 ms + 4.2 us; + 6.6 us
    group = GroupPlacement("dp", size=16, ranks_per_node=8, nodes=2)
    expected = 0.46875e-3 + IB_LAT + 0.875e-3 + 7 * NVLINK_LAT + BASE
    assert collective_time("all_gather", S, group, dgx) == pytest.approx(expected, rel=1e-12)
    assert collective_time("reduce_scatter", S, group, dgx) == pytest.approx(expected, rel=1e-12)


def test_all_reduce_one_rank_per_node_uses_each_gpus_nic_share() -> None:
    # tp 8, dp 4: dp = one rank on each of 4 nodes; ring of S over 4 on the NIC:
    # 2 x 3/4 x 360e6 / bw + 6 x 2.7 us + 6.6 us.
    layout = ParallelConfig(tp=8, dp=4)
    dgx = load_cluster("dgx-h100", nodes=4)
    group = place_groups(layout, dgx)["dp"]
    assert (group.ranks_per_node, group.nodes) == (1, 4)
    tail = 6 * IB_LAT + BASE
    assert collective_time("all_reduce", S, group, dgx) == pytest.approx(11.25e-3 + tail)
    # 4 NDR ports for 8 GPUs: 25 GB/s x 0.96 = 24e9 per GPU, twice the time on the wire.
    pcie_box = load_cluster("h100-pcie-8", nodes=4)
    assert collective_time("all_reduce", S, group, pcie_box) == pytest.approx(22.5e-3 + tail)


def test_all_to_all_across_two_nodes(dgx: ClusterSpec) -> None:
    # ep 16 on 2 nodes: S/16 = 22.5e6 to each peer; 7 peers on NVLink:
    # 7 x 22.5e6 / 360e9 = 0.4375 ms; 8 remote peers: 8 x 22.5e6 / 48e9 = 3.75 ms.
    # Concurrent -> 3.75 ms, + 7 x 0.6 us + 8 x 2.7 us + 6.6 us.
    group = GroupPlacement("ep", size=16, ranks_per_node=8, nodes=2)
    expected = 3.75e-3 + 7 * NVLINK_LAT + 8 * IB_LAT + BASE
    assert collective_time("all_to_all", S, group, dgx) == pytest.approx(expected, rel=1e-12)


def test_p2p(dgx: ClusterSpec) -> None:
    # same node: 360e6 / 360e9 = 1 ms + 0.6 us + 6.6 us; across: 7.5 ms + 2.7 us + 6.6 us
    assert p2p_time(S, True, dgx) == pytest.approx(1e-3 + NVLINK_LAT + BASE, rel=1e-12)
    assert p2p_time(S, False, dgx) == pytest.approx(7.5e-3 + IB_LAT + BASE, rel=1e-12)
    pp = GroupPlacement("pp", size=2, ranks_per_node=1, nodes=2)
    assert collective_time("send_recv", S, pp, dgx) == p2p_time(S, False, dgx)
    assert collective_time("send_recv", S, intra(2), dgx) == p2p_time(S, True, dgx)


def test_nothing_to_do_costs_nothing(dgx: ClusterSpec) -> None:
    for op in OPS:
        assert collective_time(op, S, intra(1), dgx) == 0.0
        assert collective_time(op, 0, intra(8), dgx) == 0.0
    assert p2p_time(0, False, dgx) == 0.0


def test_bad_arguments(dgx: ClusterSpec) -> None:
    with pytest.raises(ValueError, match="unknown collective"):
        collective_time("broadcast", S, intra(1), dgx)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        collective_time("all_reduce", -1, intra(8), dgx)


# --- properties -------------------------------------------------------------------------

CLUSTERS = [
    load_cluster(name, nodes=nodes)
    for name in ("dgx-h100", "dgx-a100", "h100-pcie-8", "mi300x-8")
    for nodes in (1, 2, 8)
] + [load_cluster("dgx-h100", gpus=4)]


@st.composite
def cases(draw: st.DrawFn) -> tuple[Collective, float, GroupPlacement, ClusterSpec]:
    cluster = draw(st.sampled_from(CLUSTERS))
    stride = draw(st.sampled_from([1, 2, 4, 8, 16]))
    size = draw(st.integers(min_value=1, max_value=64))
    group = place_group("g", size=size, stride=stride, gpus_in_node=cluster.gpus_in_node)
    op = draw(st.sampled_from(OPS))
    size_bytes = draw(st.floats(min_value=0, max_value=1e11, allow_nan=False))
    return op, size_bytes, group, cluster


def faster(cluster: ClusterSpec, which: str) -> ClusterSpec:
    """``cluster`` with one bandwidth doubled: a link's, or the NIC count."""
    if which == "nics":
        return cluster.model_copy(update={"nics_per_node": 2 * cluster.nics_per_node})
    link = getattr(cluster, which)
    doubled = link.model_copy(update={"bandwidth_gbps": 2 * link.bandwidth_gbps})
    return cluster.model_copy(update={which: doubled})


@settings(max_examples=300, deadline=None)
@given(cases(), st.sampled_from(["intra_node", "inter_node", "nics"]))
def test_more_bandwidth_never_slower(case, which: str) -> None:
    op, size_bytes, group, cluster = case
    before = collective_time(op, size_bytes, group, cluster)
    after = collective_time(op, size_bytes, group, faster(cluster, which))
    assert after <= before * (1 + 1e-12)
    for same_node in (True, False):
        assert p2p_time(size_bytes, same_node, faster(cluster, which)) <= p2p_time(
            size_bytes, same_node, cluster
        ) * (1 + 1e-12)


@settings(max_examples=300, deadline=None)
@given(cases(), st.floats(min_value=0, max_value=1e11, allow_nan=False))
def test_time_is_monotone_in_size(case, other_bytes: float) -> None:
    op, size_bytes, group, cluster = case
    small, large = sorted((size_bytes, other_bytes))
    assert collective_time(op, small, group, cluster) <= collective_time(op, large, group, cluster)
    assert p2p_time(small, False, cluster) <= p2p_time(large, False, cluster)
