"""Group placement in Megatron's rank order tp-cp-ep-dp-pp (expert grid etp-ep-edp-pp).

Each expectation is worked out by listing rank 0's group: ranks ``i·stride`` for
``i < size``, node of a rank = rank // GPUs per node.
"""

from __future__ import annotations

import pytest

from planner.catalog import load_cluster
from planner.cost.placement import GroupPlacement, place_group, place_groups
from planner.errors import SpecError
from planner.specs.layout import ParallelConfig


def summary(groups: dict[str, GroupPlacement]) -> dict[str, tuple[int, int, int]]:
    """name -> (size, ranks_per_node, nodes)."""
    return {name: (g.size, g.ranks_per_node, g.nodes) for name, g in groups.items()}


def test_tp8_dp4_pp2_on_8_gpu_nodes() -> None:
    # 64 GPUs on 8 nodes. tp: ranks 0..7, node 0. dp: 0, 8, 16, 24 -> nodes 0..3, one each.
    # pp: 0, 32 -> nodes 0 and 4. dp_cp = dp (cp 1). Expert grid: etp = tp = 8 (0..7),
    # ep 1, edp = 64 / (8 x 1 x 2) = 4 with stride 8, like dp.
    groups = place_groups(ParallelConfig(tp=8, dp=4, pp=2), load_cluster("dgx-h100", nodes=8))
    assert summary(groups) == {
        "tp": (8, 8, 1),
        "cp": (1, 1, 1),
        "cp_a2a": (1, 1, 1),
        "cp_p2p": (1, 1, 1),
        "dp": (4, 1, 4),
        "pp": (2, 1, 2),
        "dp_cp": (4, 1, 4),
        "etp": (8, 8, 1),
        "ep": (1, 1, 1),
        "edp": (4, 1, 4),
    }
    assert groups["tp"].intra_node and not groups["dp"].intra_node


def test_tp2_cp2_dp2_on_one_node() -> None:
    # 8 GPUs. tp 0,1; cp 0,2; dp 0,4; dp_cp 0,2,4,6: all in node 0. edp = 8 / 2 = 4,
    # stride etp x ep = 2: ranks 0,2,4,6.
    groups = place_groups(ParallelConfig(tp=2, cp=2, dp=2), load_cluster("dgx-h100", nodes=1))
    assert summary(groups) == {
        "tp": (2, 2, 1),
        "cp": (2, 2, 1),
        "cp_a2a": (1, 1, 1),  # p2p: the ring is the whole CP group
        "cp_p2p": (2, 2, 1),
        "dp": (2, 2, 1),
        "pp": (1, 1, 1),
        "dp_cp": (4, 4, 1),
        "etp": (2, 2, 1),
        "ep": (1, 1, 1),
        "edp": (4, 4, 1),
    }


def test_tp4_on_a_partial_node() -> None:
    # A 4-GPU slice of a DGX: one node whatever the strides.
    cluster = load_cluster("dgx-h100", gpus=4)
    groups = place_groups(ParallelConfig(tp=4), cluster)
    assert summary(groups)["tp"] == (4, 4, 1)
    assert summary(groups)["dp"] == (1, 1, 1)
    groups = place_groups(ParallelConfig(tp=2), cluster)
    assert summary(groups)["dp"] == (2, 2, 1)  # ranks 0, 2


def test_dp_partly_inside_a_node() -> None:
    # 16 GPUs, tp 2, dp 8: dp ranks 0,2,...,14 -> 4 in node 0 and 4 in node 1.
    groups = place_groups(ParallelConfig(tp=2), load_cluster("dgx-h100", nodes=2))
    assert summary(groups)["dp"] == (8, 4, 2)


def test_ep_groups_carved_out_of_dp() -> None:
    # 16 GPUs, tp 2, dp 8, ep 4, etp 1: ep = ranks 0..3 (stride etp = 1) inside node 0;
    # edp = 16 / (1 x 4 x 1) = 4 with stride 4: ranks 0, 4, 8, 12 -> 2 per node, 2 nodes.
    cluster = load_cluster("dgx-h100", nodes=2)
    groups = place_groups(ParallelConfig(tp=2, ep=4, etp=1), cluster)
    assert summary(groups)["etp"] == (1, 1, 1)
    assert summary(groups)["ep"] == (4, 4, 1)
    assert summary(groups)["edp"] == (4, 2, 2)
    # etp defaults to tp = 2: ep = 0, 2, 4, 6 (node 0); edp = 16 / 8 = 2: ranks 0, 8.
    groups = place_groups(ParallelConfig(tp=2, ep=4), cluster)
    assert summary(groups)["ep"] == (4, 4, 1)
    assert summary(groups)["edp"] == (2, 1, 2)
    # ep 16 over the whole world: 8 per node, 2 nodes; no expert data parallelism left.
    groups = place_groups(ParallelConfig(ep=16), cluster)
    assert summary(groups)["ep"] == (16, 8, 2)
    assert summary(groups)["edp"] == (1, 1, 1)


def test_placement_rule_for_strides_beyond_a_node() -> None:
    # stride 16 on 8-GPU nodes: every rank on its own node.
    assert place_group("pp", size=4, stride=16, gpus_in_node=8) == GroupPlacement("pp", 4, 1, 4)
    # span exactly one node
    assert place_group("dp", size=4, stride=2, gpus_in_node=8) == GroupPlacement("dp", 4, 4, 1)


def test_layout_that_does_not_fill_the_cluster_is_an_error() -> None:
    with pytest.raises(SpecError, match="tp x cp x dp x pp"):
        place_groups(ParallelConfig(tp=8, dp=4), load_cluster("dgx-h100", nodes=2))
    with pytest.raises(SpecError, match="etp x ep x pp"):
        place_groups(ParallelConfig(tp=1, ep=3), load_cluster("dgx-h100", nodes=1))


def test_inconsistent_group_placement_is_rejected() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        GroupPlacement("tp", size=2, ranks_per_node=4, nodes=1)
    with pytest.raises(ValueError, match="fewer than"):
        GroupPlacement("dp", size=8, ranks_per_node=2, nodes=2)
