"""Routing statistics into the time model: one placement per EP degree, and its factors.

``autopar plan --routing STATS`` times every layout of an MoE model with the placement
its EP degree would use: for each EP degree the search considers, ``place_experts``
solves the placement once (balance objective, a short time limit, the best found kept)
for that EP group on the cluster's nodes, and the layouts of that degree are timed with
its ``ExpertLoadFactors`` (``planner.cost.expert_load``): per MoE layer the busiest GPU's
load over the mean GPU's, and the share of the all-to-all bytes that crosses nodes. So
the EP degree and its placement are chosen together. ``PlacementSummary`` is what a plan
entry reports of the placement it was timed with.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from planner.cost.expert_load import ExpertLoadFactors
from planner.errors import SpecError
from planner.experts.place import (
    ExpertPlacementResult,
    LayerPlacement,
    check_inputs,
    place_experts,
)
from planner.experts.stats import RoutingStats
from planner.specs import ClusterSpec, ModelSpec

PLACEMENT_TIME_LIMIT_S = 2.0
"""Seconds the placement solver gets per EP degree inside a plan (best found kept)."""


class PlacementSummary(BaseModel):
    """The expert placement a plan entry was timed with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ep: int
    balancedness: float = Field(description="mean over MoE layers of mean / max GPU load")
    max_imbalance: float = Field(description="largest max / mean GPU load of any MoE layer")
    cross_node_fraction: float = Field(
        description="share of the all-to-all bytes that crosses nodes (mean over layers)"
    )
    method: str = Field(
        description="'solver' (CP-SAT) or 'solver+greedy' (EPLB kept on some layers)"
    )
    status: str = Field(description="the solver's status: optimal, or feasible at the time limit")
    gap: float
    solve_s: float
    routing_source: str


class ExpertLoads:
    """Placements and factors per EP degree for one model, cluster and routing, solved on
    first use and reused (``planner.cost.expert_load.ExpertLoadSource``)."""

    def __init__(
        self,
        *,
        model: ModelSpec,
        cluster: ClusterSpec,
        routing: RoutingStats,
        time_limit_s: float = PLACEMENT_TIME_LIMIT_S,
    ) -> None:
        if model.moe is None:
            raise SpecError(
                f"routing: {model.name} has no MoE layers; routing statistics apply to MoE "
                "models only"
            )
        self.model, self.cluster, self.routing = model, cluster, routing
        self.time_limit_s = time_limit_s
        self._solved: dict[int, tuple[ExpertLoadFactors, PlacementSummary] | None] = {1: None}
        check_inputs(model, cluster, routing, 1, 0)  # experts and layers match, before the search

    def __call__(self, ep: int) -> ExpertLoadFactors | None:
        solved = self._solve(ep)
        return None if solved is None else solved[0]

    def summary(self, ep: int) -> PlacementSummary | None:
        solved = self._solve(ep)
        return None if solved is None else solved[1]

    def _solve(self, ep: int) -> tuple[ExpertLoadFactors, PlacementSummary] | None:
        """The placement of ``ep`` GPUs (None for ep 1: one GPU holds every expert)."""
        if ep not in self._solved:
            result = place_experts(
                model=self.model, cluster=self.cluster, ep=ep, routing=self.routing,
                time_limit_s=self.time_limit_s,
            )  # fmt: skip
            self._solved[ep] = (factors(self.model, result), summary(result))
        return self._solved[ep]


def factors(model: ModelSpec, result: ExpertPlacementResult) -> ExpertLoadFactors:
    """Per model layer: the placement's max / mean GPU load and cross-node share (uniform
    token sources, the training layout: ``planner.experts.traffic``)."""
    moe_layers = [i for i in range(model.num_layers) if model.is_moe_layer(i)]
    imbalance = [1.0] * model.num_layers
    cross: list[float | None] = [None] * model.num_layers
    for layer_id, layer in zip(moe_layers, result.layers, strict=True):
        imbalance[layer_id] = _imbalance(layer)
        cross[layer_id] = _cross_share(layer, result.ep)
    return ExpertLoadFactors(imbalance=tuple(imbalance), cross_node_fraction=tuple(cross))


def _cross_share(layer: LayerPlacement, ep: int) -> float:
    """Share of all dispatched bytes (those that stay on the GPU included) crossing nodes."""
    inside, across = layer.uniform_bytes_in_node, layer.uniform_bytes_across_nodes
    moved = inside + across
    if moved <= 0:
        return 0.0
    # uniform bytes count what leaves the GPU: (ep - 1) / ep of all the bytes
    return across / (moved * ep / (ep - 1))


def summary(result: ExpertPlacementResult) -> PlacementSummary:
    greedy = any("EPLB greedy" in note for note in result.notes)
    layers = result.layers
    cross = [_cross_share(layer, result.ep) for layer in layers]
    return PlacementSummary(
        ep=result.ep,
        balancedness=round(sum(layer.balancedness for layer in layers) / len(layers), 6),
        max_imbalance=round(max(_imbalance(layer) for layer in layers), 6),
        cross_node_fraction=round(sum(cross) / len(cross), 6),
        method="solver+greedy" if greedy else "solver",
        status=result.status,
        gap=round(result.gap, 6),
        solve_s=round(result.solve_s, 3),
        routing_source=result.routing_source,
    )


def _imbalance(layer: LayerPlacement) -> float:
    """The busiest GPU's load over the mean GPU's (1 for a layer without tokens)."""
    return max(1.0, layer.max_load / layer.mean_load) if layer.mean_load else 1.0
