"""Where each process group's ranks sit on the nodes: how many share a node, how many nodes.

Megatron-LM numbers ranks in the order ``tp-cp-ep-dp-pp`` (its default ``order`` string,
``megatron/core/parallel_state.py`` ``initialize_model_parallel``): tp is innermost
(adjacent ranks), pp outermost. A group is therefore a set of ranks ``r0 + i·stride``
for ``i < size``:

  ====== ========== ============================ ==========================================
  group  size       stride                       what it carries
  ====== ========== ============================ ==========================================
  tp     tp         1                            tensor-parallel all-reduce / AG+RS (SP)
  cp     cp         tp                           context-parallel KV exchange
  cp_a2a A          tp                           a2a+p2p: the all-to-all over A adjacent
                                                 CP ranks (1 for the other algorithms)
  cp_p2p cp/A       tp·A                         a2a+p2p: the ring across the a2a groups
  dp     dp         tp·cp                        data-parallel replicas
  pp     pp         tp·cp·dp                     pipeline send/recv
  dp_cp  dp·cp      tp                           dense gradient reduce and dist-opt (cp
                                                 contiguous, then dp: one block of ranks)
  etp    etp        1                            tensor parallel inside the expert MLPs
  ep     ep         etp                          token dispatch/combine all-to-all
  edp    world/     etp·ep                       expert gradient reduce
         (etp·ep·pp)
  ====== ========== ============================ ==========================================

The a2a+p2p groups split each CP group as Megatron-LM's ``create_hierarchical_groups``
does (``parallel_state.py``): level 0, the a2a group, is ``A`` consecutive members of the
CP group; level 1, the p2p ring, takes every ``A``-th member.

The expert grid is numbered ``etp-ep-edp-pp`` (the same order string with tp -> etp and
no cp), so EP is carved out of the dense DP×CP×TP ranks and does not
multiply the world size.

Placement rule, for a group of ``n`` ranks with stride ``S`` on nodes of ``G`` GPUs
(``G`` = the GPUs of one node in use, fewer than ``gpus_per_node`` on a partial node):
if the group's span ``n·S`` fits in a node, all ``n`` ranks share one node; otherwise
``max(1, G // S)`` of them share each node (at most ``n``), and the group spans
``ceil(n / ranks_per_node)`` nodes.

Example: tp 8, dp 4 on four 8-GPU nodes (32 GPUs). The tp group is ranks 0..7
(stride 1, span 8 <= 8): ``ranks_per_node=8, nodes=1`` -- TP stays on NVLink. The dp group
of rank 0 is ranks 0, 8, 16, 24 (stride 8, span 32 > 8): ``8 // 8 = 1`` rank per node,
``nodes=4`` -- every DP all-reduce crosses the network, each rank on its own NIC.

Approximation: when the stride does not divide the node size (tp 3 on 8-GPU nodes), some
groups straddle a node boundary; the rule above places every group as the first one
(rank 0's) is placed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner.errors import SpecError
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import ParallelConfig, resolve_data_parallel


@dataclass(frozen=True)
class GroupPlacement:
    """One process group on the topology: ``size`` ranks, ``ranks_per_node`` to a node.

    ``nodes`` is how many nodes the group spans; ``nodes == 1`` means every collective of
    the group stays on the intra-node link.
    """

    name: str
    size: int
    ranks_per_node: int
    nodes: int

    def __post_init__(self) -> None:
        if self.size < 1 or self.ranks_per_node < 1 or self.nodes < 1:
            raise ValueError(f"group {self.name}: size, ranks_per_node and nodes must be >= 1")
        if self.ranks_per_node > self.size:
            raise ValueError(
                f"group {self.name}: ranks_per_node ({self.ranks_per_node}) exceeds its "
                f"size ({self.size})"
            )
        if self.ranks_per_node * self.nodes < self.size:
            raise ValueError(
                f"group {self.name}: {self.nodes} nodes x {self.ranks_per_node} ranks per node "
                f"hold fewer than its {self.size} ranks"
            )

    @property
    def intra_node(self) -> bool:
        """Whether every rank of the group shares one node."""
        return self.nodes == 1


def place_group(name: str, *, size: int, stride: int, gpus_in_node: int) -> GroupPlacement:
    """Place a group of ``size`` ranks spaced ``stride`` apart on nodes of ``gpus_in_node``."""
    # the whole group when its span size·stride fits in a node (then gpus // stride >= size)
    per_node = min(size, max(1, gpus_in_node // stride))
    return GroupPlacement(
        name=name, size=size, ranks_per_node=per_node, nodes=math.ceil(size / per_node)
    )


def place_groups(layout: ParallelConfig, cluster: ClusterSpec) -> dict[str, GroupPlacement]:
    """Every process group of ``layout`` on ``cluster``, keyed by its name (table above).

    ``layout.dp`` may be ``None`` (filled from the GPU count). Raises ``SpecError`` when the
    degrees do not fill the cluster or the expert grid does not divide it.
    """
    layout = resolve_data_parallel(layout, num_gpus=cluster.num_gpus)
    assert layout.dp is not None
    tp, cp, dp, pp = layout.tp, layout.cp, layout.dp, layout.pp
    etp, ep = layout.expert_tp, layout.ep
    world = cluster.num_gpus
    if world % (etp * ep * pp) != 0:
        raise SpecError(
            f"layout: the {world} GPUs are not divisible by etp x ep x pp = {etp} x {ep} x "
            f"{pp} = {etp * ep * pp} (Megatron-LM lays the expert-parallel groups out over "
            "the same GPUs as the dense ones)"
        )
    edp = world // (etp * ep * pp)
    gpus = cluster.gpus_in_node
    groups = (
        ("tp", tp, 1),
        ("cp", cp, tp),
        ("cp_a2a", layout.cp_a2a_size, tp),
        ("cp_p2p", layout.cp_ring_size, tp * layout.cp_a2a_size),
        ("dp", dp, tp * cp),
        ("pp", pp, tp * cp * dp),
        ("dp_cp", dp * cp, tp),
        ("etp", etp, 1),
        ("ep", ep, etp),
        ("edp", edp, etp * ep),
    )
    return {
        name: place_group(name, size=size, stride=stride, gpus_in_node=gpus)
        for name, size, stride in groups
    }
