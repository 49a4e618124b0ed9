"""``place_experts``: build the placement problem from the specs, solve it, compare.

The problem (:mod:`solvers.expert_placement`) is built from an MoE ``ModelSpec`` (experts
per MoE layer, one expert's weight bytes from ``planner.graph.params``), the EP degree and
the cluster (GPUs per node, so how many nodes the EP group spans; GPU memory bounds the
expert weights), and routing statistics. The answer is compared with contiguous placement
and with our EPLB greedy (hierarchical where it applies, and global) on the same loads.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from planner.errors import SpecError
from planner.experts.stats import RoutingStats
from planner.experts.traffic import affinity_bytes, uniform_bytes
from planner.graph.params import mlp_params
from planner.specs import ClusterSpec, ModelSpec
from planner.specs.workload import BYTES_PER_DTYPE
from solvers import SolveOptions
from solvers.expert_greedy import contiguous, eplb, eplb_is_hierarchical
from solvers.expert_placement import mean_bound, solve
from solvers.expert_problem import Affinity, ExpertPlacementProblem, gpu_loads

Objective = Literal["balance", "traffic", "both"]
_WEIGHTS = {"balance": (1, 0, 0), "traffic": (0, 1, 1), "both": (1, 1, 1)}
"""(balance, GPU hop, extra node hop) weights: a token crossing nodes costs two hops."""
_MAX_SCALED = 2**48
_MAX_REPLICAS_CAP = 16
"""Most replicas of one expert the model allows: Λ = lcm(1..16) = 720720 keeps exact shares
small enough for CP-SAT; EPLB gives an expert more only for extreme skew, and then its
placement is used where it is better (``_adopt_greedy``)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LayerPlacement(_Frozen):
    """One MoE layer: what each GPU hosts and what that costs."""

    layer: int
    gpu_experts: list[list[int]] = Field(description="logical experts per GPU (repeats: replicas)")
    max_load: float = Field(description="busiest GPU's tokens")
    mean_load: float
    balancedness: float = Field(description="mean / max GPU load (1 is perfect)")
    bound: float = Field(description="proven lower bound on this layer's busiest GPU")
    uniform_bytes_in_node: float
    uniform_bytes_across_nodes: float
    affinity_bytes_in_node: float | None = None
    affinity_bytes_across_nodes: float | None = None
    gain_vs_contiguous: float = Field(description="contiguous busiest load / ours")
    gain_vs_greedy_global: float
    gain_vs_greedy_hierarchical: float | None = None


class BaselineSummary(_Frozen):
    name: str
    straggler_tokens: float = Field(description="sum over layers of the busiest GPU's tokens")
    balancedness: float = Field(description="mean over layers of mean / max GPU load")
    affinity_bytes_across_nodes: float | None = None


class ExpertPlacementResult(_Frozen):
    """A placement of every MoE layer, its proof status and the comparison."""

    model: str
    cluster: str
    ep: int
    nodes: int
    replicas: int
    objective_kind: Objective
    status: str
    objective: float = Field(description="in tokens (and token hops for traffic)")
    bound: float
    gap: float
    solve_s: float
    expert_bytes_per_gpu: int
    phy2log: list[list[int]]
    layers: list[LayerPlacement]
    baselines: list[BaselineSummary]
    routing_source: str
    notes: list[str] = Field(default_factory=list)


def _ep_nodes(cluster: ClusterSpec, ep: int) -> int:
    if ep > cluster.num_gpus:
        raise SpecError(f"ep ({ep}) exceeds the cluster's {cluster.num_gpus} GPUs")
    if ep > cluster.gpus_per_node and ep % cluster.gpus_per_node:
        raise SpecError(
            f"ep ({ep}) must be a multiple of gpus_per_node ({cluster.gpus_per_node}) "
            "when the EP group spans nodes"
        )
    return max(1, ep // cluster.gpus_per_node)


def check_inputs(
    model: ModelSpec, cluster: ClusterSpec, routing: RoutingStats, ep: int, replicas: int
) -> tuple[int, int]:
    """(experts, nodes the EP group spans), or SpecError naming the field."""
    if model.moe is None:
        raise SpecError(f"model: {model.name} has no MoE layers (moe is not set)")
    experts = model.moe.num_experts
    if routing.experts != experts:
        raise SpecError(f"routing: {routing.experts} experts per layer, {model.name} has {experts}")
    if routing.layers != model.num_moe_layers:
        raise SpecError(
            f"routing: {routing.layers} layers, {model.name} has {model.num_moe_layers} MoE layers"
        )
    if ep < 1:
        raise SpecError(f"ep must be at least 1, got {ep}")
    nodes = _ep_nodes(cluster, ep)
    if replicas < 0:
        raise SpecError(f"replicas must be at least 0, got {replicas}")
    if (experts + replicas) % ep:
        raise SpecError(
            f"replicas: {experts} experts + {replicas} redundant = {experts + replicas} "
            f"physical experts do not divide over ep {ep}"
        )
    return experts, nodes


def _problem(
    loads: np.ndarray,
    routing: RoutingStats,
    ep: int,
    nodes: int,
    replicas: int,
    objective: Objective,
    groups: int,
    expert_bytes: int,
    memory_bytes: int,
) -> ExpertPlacementProblem:
    experts = loads.shape[1]
    slots = (experts + replicas) // ep
    weights = _WEIGHTS[objective]
    if weights[1] and replicas:
        raise SpecError(
            f"objective {objective}: the traffic term places one copy of each expert "
            "(ExFlow's setting); use --replicas 0 or --objective balance"
        )
    if weights[1] and not routing.affinity:
        raise SpecError(
            f"objective {objective}: the routing statistics have no affinity; record a "
            "per-token trace and turn it into statistics with autopar routing-stats"
        )
    largest = int(loads.max()) * math.lcm(*range(1, _MAX_REPLICAS_CAP + 1)) * slots
    if largest >= _MAX_SCALED:
        loads = np.round(loads * (_MAX_SCALED / largest)).astype(np.int64)
    base = dict(
        loads=loads.tolist(),
        gpus=ep,
        nodes=nodes,
        slots_per_gpu=slots,
        num_groups=groups,
        expert_bytes=(expert_bytes,) * loads.shape[0],
        memory_bytes=memory_bytes,
    )
    fewest = -(-slots * ep // experts)
    try:
        probe = ExpertPlacementProblem(**base, max_replicas=fewest)
        greedy_top = max(
            int(np.bincount(row).max())
            for h in (True, False)
            for row in eplb(probe, hierarchical=h)
        )
        top = max(fewest, min(replicas + 1, greedy_top + 1, _MAX_REPLICAS_CAP))
        return ExpertPlacementProblem(
            **base,
            max_replicas=top,
            balance_weight=weights[0],
            gpu_hop_weight=weights[1],
            node_hop_weight=weights[2],
            affinity=tuple(Affinity(a.layer, a.src, a.dst, a.tokens) for a in routing.affinity)
            if weights[1]
            else (),
        )
    except ValueError as error:
        raise SpecError(f"expert placement: {error}") from None


def _adopt_greedy(placements: dict[str, np.ndarray], per_gpu: dict[str, np.ndarray]) -> list[int]:
    """Layers where an EPLB placement has a lighter busiest GPU than ours (possible only
    when it exceeds the model's replica cap), switched to it; returns those layers."""
    adopted = []
    for name in ("greedy_hierarchical", "greedy_global"):
        if name not in placements:
            continue
        better = per_gpu[name].max(axis=1) < per_gpu["ours"].max(axis=1) * (1 - 1e-12)
        for layer in np.flatnonzero(better).tolist():
            placements["ours"][layer] = placements[name][layer]
            per_gpu["ours"][layer] = per_gpu[name][layer]
            adopted.append(layer)
    return sorted(set(adopted))


def _summary(name: str, per_gpu: np.ndarray, across: np.ndarray | None) -> BaselineSummary:
    busiest = per_gpu.max(axis=1)
    return BaselineSummary(
        name=name,
        straggler_tokens=float(busiest.sum()),
        balancedness=float(np.mean(per_gpu.mean(axis=1) / np.maximum(busiest, 1e-12))),
        affinity_bytes_across_nodes=None if across is None else float(across.sum()),
    )


def build_problem(
    *,
    model: ModelSpec,
    cluster: ClusterSpec,
    ep: int,
    routing: RoutingStats,
    replicas: int = 0,
    objective: Objective = "balance",
    groups: int | None = None,
    precision: str = "bf16",
) -> ExpertPlacementProblem:
    """The solver's problem for these inputs, or SpecError naming the field at fault."""
    experts, nodes = check_inputs(model, cluster, routing, ep, replicas)
    groups = groups or nodes
    if experts % groups:
        raise SpecError(f"groups ({groups}) must divide the {experts} experts")
    assert model.moe is not None
    matmul, bias = mlp_params(model, model.moe.expert_ffn_hidden_size)
    expert_bytes = (matmul + bias) * BYTES_PER_DTYPE[precision]
    loads = np.asarray(routing.loads, dtype=np.int64)
    return _problem(
        loads, routing, ep, nodes, replicas, objective, groups, expert_bytes,
        cluster.gpu.memory_bytes,
    )  # fmt: skip


def place_experts(
    *,
    model: ModelSpec,
    cluster: ClusterSpec,
    ep: int,
    routing: RoutingStats,
    replicas: int = 0,
    objective: Objective = "balance",
    time_limit_s: float = 10.0,
    groups: int | None = None,
    precision: str = "bf16",
    workers: int = 2,
    relative_gap: float = 1e-3,
) -> ExpertPlacementResult:
    """Place the experts of every MoE layer of ``model`` on ``ep`` GPUs of ``cluster``,
    stopping at ``time_limit_s`` or once proven within ``relative_gap`` of optimal."""
    if not 0 <= relative_gap < 1:
        raise SpecError(f"gap must be in [0, 1), got {relative_gap}")
    problem = build_problem(
        model=model, cluster=cluster, ep=ep, routing=routing, replicas=replicas,
        objective=objective, groups=groups, precision=precision,
    )  # fmt: skip
    experts, nodes, expert_bytes = problem.experts, problem.nodes, problem.expert_bytes[0]
    bytes_per = BYTES_PER_DTYPE[precision]
    loads = np.asarray(routing.loads, dtype=np.int64)
    solution = solve(
        problem,
        SolveOptions(time_limit_s=time_limit_s, workers=workers, relative_gap=relative_gap),
    )
    vector = model.hidden_size * bytes_per
    placements = {
        "ours": np.asarray(solution.phy2log),
        "contiguous": np.asarray(contiguous(problem)),
        "greedy_global": np.asarray(eplb(problem, hierarchical=False)),
    }
    if eplb_is_hierarchical(problem) and nodes > 1:
        placements["greedy_hierarchical"] = np.asarray(eplb(problem, hierarchical=True))
    per_gpu = {name: gpu_loads(loads, p, ep) for name, p in placements.items()}
    adopted = [] if problem.uses_traffic else _adopt_greedy(placements, per_gpu)
    layer_bounds = list(solution.layer_bounds)
    for layer in adopted:  # the mean bound holds for every placement, the solver's may not
        layer_bounds[layer] = mean_bound(problem, layer)
    across: dict[str, np.ndarray | None] = {}
    inside_ours = None
    for name, p in placements.items():
        if routing.affinity:
            inside, cross = affinity_bytes(p, routing.affinity, experts, ep, nodes, vector)
            across[name] = cross
            if name == "ours":
                inside_ours = inside
        else:
            across[name] = None
    uni_in, uni_across = uniform_bytes(loads, ep, nodes, vector)
    slots = problem.slots_per_gpu
    ours = per_gpu["ours"]
    busiest = {name: loads_.max(axis=1) for name, loads_ in per_gpu.items()}
    # Bounds are in the problem's units (1/Λ token, loads rescaled if they were too large).
    unit = float(loads.sum()) / max(1, sum(map(sum, problem.loads))) / problem.scale
    layers = []
    for layer in range(problem.layers):
        mine = busiest["ours"][layer]

        def gain(name: str, layer: int = layer, mine: float = mine) -> float:
            return float(busiest[name][layer] / mine) if mine else 1.0

        layers.append(
            LayerPlacement(
                layer=layer,
                gpu_experts=[
                    [int(e) for e in placements["ours"][layer][g * slots : (g + 1) * slots]]
                    for g in range(ep)
                ],
                max_load=float(mine),
                mean_load=float(ours[layer].mean()),
                balancedness=float(ours[layer].mean() / mine) if mine else 1.0,
                bound=layer_bounds[layer] * unit,
                uniform_bytes_in_node=float(uni_in[layer]),
                uniform_bytes_across_nodes=float(uni_across[layer]),
                affinity_bytes_in_node=None if inside_ours is None else float(inside_ours[layer]),
                affinity_bytes_across_nodes=None
                if across["ours"] is None
                else float(across["ours"][layer]),
                gain_vs_contiguous=gain("contiguous"),
                gain_vs_greedy_global=gain("greedy_global"),
                gain_vs_greedy_hierarchical=gain("greedy_hierarchical")
                if "greedy_hierarchical" in busiest
                else None,
            )
        )
    objective_value, bound = solution.objective * unit, solution.bound * unit
    if adopted:
        objective_value = float(busiest["ours"].sum())
        bound = min(bound, sum(layer_bounds) * unit)
    notes = []
    if not routing.affinity:
        notes.append(
            "no affinity in the routing statistics: all-to-all bytes use uniform token "
            "sources, which are the same for every placement"
        )
    if adopted:
        notes.append(
            f"layers {', '.join(map(str, adopted))} use the EPLB greedy's placement: it gives "
            f"an expert more than the model's {problem.max_replicas} replicas and is better"
        )
    if any(sum(row) != sum(orig) for row, orig in zip(problem.loads, routing.loads, strict=True)):
        notes.append("loads were scaled down to keep the solver's integers exact")
    return ExpertPlacementResult(
        model=model.name,
        cluster=cluster.name,
        ep=ep,
        nodes=nodes,
        replicas=replicas,
        objective_kind=objective,
        status=solution.status.value,
        objective=objective_value,
        bound=bound,
        gap=(objective_value - bound) / objective_value if objective_value else 0.0,
        solve_s=solution.wall_s,
        expert_bytes_per_gpu=expert_bytes * slots * problem.layers,
        phy2log=placements["ours"].tolist(),
        layers=layers,
        baselines=[_summary(name, per_gpu[name], across[name]) for name in placements],
        routing_source=routing.source,
        notes=notes,
    )
