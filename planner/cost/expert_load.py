"""What routing skew and expert placement do to an MoE step: per-layer factors.

The time model assumes balanced routing by default: every EP rank receives the mean
number of routed tokens, and a token's all-to-all destination is uniform over the EP
group, so the share of bytes that leaves the node is the topology's, ``(n - k) / n`` for
an EP group of ``n`` ranks with ``k`` per node. Routing statistics and a placement of the
experts (``planner.experts``) replace both with measured-load values:

- ``imbalance[layer]``: the busiest EP rank's routed tokens over the mean rank's
  (max / mean GPU load of the placement, 1 when balanced). Every rank waits for the
  busiest in the all-to-all that follows, so the expert compute of the layer on the
  critical path is the mean rank's times this factor;
- ``cross_node_fraction[layer]``: the share of the dispatched bytes that crosses nodes
  (those go at the inter-node rate, the rest of the bytes that leave the GPU over the
  intra-node link; ``comm.all_to_all_time``).

Both are indexed by the model's layer id (dense layers carry 1 and None). The object is
frozen and hashable, so it can sit in the cost model's frozen inputs; None everywhere
means today's balanced numbers exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ExpertLoadFactors:
    """Per-layer straggler factor and cross-node share of the all-to-all (module doc)."""

    imbalance: tuple[float, ...]
    """Per model layer: busiest EP rank's routed tokens / the mean rank's (>= 1)."""
    cross_node_fraction: tuple[float | None, ...]
    """Per model layer: share of the dispatched bytes that crosses nodes (None: the
    topology's share under uniform destinations)."""

    def __post_init__(self) -> None:
        if len(self.imbalance) != len(self.cross_node_fraction):
            raise ValueError("imbalance and cross_node_fraction must cover the same layers")
        if any(f < 1.0 - 1e-9 for f in self.imbalance):
            raise ValueError("imbalance is max / mean load, so at least 1")
        if any(c is not None and not 0.0 <= c <= 1.0 for c in self.cross_node_fraction):
            raise ValueError("cross_node_fraction must be in [0, 1]")

    def layer_imbalance(self, layer: int) -> float:
        return self.imbalance[layer] if layer < len(self.imbalance) else 1.0

    def layer_cross_node(self, layer: int) -> float | None:
        return self.cross_node_fraction[layer] if layer < len(self.cross_node_fraction) else None


ExpertLoadSource = Callable[[int], "ExpertLoadFactors | None"]
"""The factors to time layouts of a given EP degree with (the planner solves one placement
per degree and reuses it); None from it means balanced."""
