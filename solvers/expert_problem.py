"""The data of MoE expert placement, and the exact evaluation of any placement.

A placement is the EPLB/SGLang ``phy2log`` table: for every MoE layer, R = G x S physical
slots, slot r on GPU r // S holding logical expert ``phy2log[l][r]``. The runtime splits an
expert's tokens evenly over its replicas (DeepSeek's EPLB balances on load / replica
count; SGLang picks a replica uniformly), so a placement fixes every GPU's load.

The objective of :mod:`solvers.expert_placement` is kept in exact integers: with at most
K replicas per expert, loads are counted in units of 1/Λ token, Λ = lcm(1..K), so w / c is
an integer for every replica count c <= K. :func:`objective` evaluates it for any
placement (the greedy baselines' included), which is how the solver's answer is compared
with theirs on equal terms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

_MAX_SCALED = 2**50
"""Largest scaled load the model accepts: CP-SAT's linear relaxation stays exact below it."""


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


@dataclass(frozen=True)
class Affinity:
    """Tokens that went to expert ``src`` in layer ``layer`` and to expert ``dst`` in
    layer ``layer + 1`` (one entry of the sparse layer-to-layer affinity)."""

    layer: int
    src: int
    dst: int
    tokens: int


@dataclass(frozen=True)
class ExpertPlacementProblem:
    """Loads, the machine and the objective weights; see :mod:`solvers.expert_placement`."""

    loads: tuple[tuple[int, ...], ...]
    """``loads[l][e]``: tokens routed to logical expert e of MoE layer l."""
    gpus: int
    nodes: int = 1
    slots_per_gpu: int = 0
    """Physical experts per GPU per layer (S); 0 means E / G (no redundant experts)."""
    max_replicas: int = 1
    """K: the most replicas one logical expert may have."""
    expert_bytes: tuple[int, ...] = ()
    """Weight bytes of one expert of each layer (empty: memory not checked)."""
    memory_bytes: int = 0
    """Memory per GPU for expert weights (0: not checked)."""
    balance_weight: int = 1
    """Weight of the summed per-layer maximum GPU load (tokens)."""
    gpu_hop_weight: int = 0
    """Weight of a token moving to another GPU between consecutive layers."""
    node_hop_weight: int = 0
    """Extra weight of a token moving to another node between consecutive layers."""
    affinity: tuple[Affinity, ...] = ()
    num_groups: int = 1
    """Expert groups of group-limited routing; used by the hierarchical greedy only."""
    _scale: int = field(init=False, repr=False, compare=False, default=1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "loads", tuple(tuple(int(v) for v in row) for row in self.loads))
        object.__setattr__(self, "expert_bytes", tuple(self.expert_bytes))
        object.__setattr__(self, "affinity", tuple(self.affinity))
        if not self.loads or not self.loads[0]:
            raise ValueError("loads needs at least one layer and one expert")
        experts = len(self.loads[0])
        for layer, row in enumerate(self.loads):
            if len(row) != experts:
                raise ValueError(f"loads[{layer}] has {len(row)} experts, loads[0] has {experts}")
            if min(row) < 0:
                raise ValueError(f"loads[{layer}] has a negative token count")
        _check_int("gpus", self.gpus, 1)
        _check_int("nodes", self.nodes, 1)
        if self.gpus % self.nodes:
            raise ValueError(f"nodes ({self.nodes}) must divide gpus ({self.gpus})")
        _check_int("slots_per_gpu", self.slots_per_gpu, 0)
        if self.slots_per_gpu == 0:
            if experts % self.gpus:
                raise ValueError(
                    f"{experts} experts do not divide over {self.gpus} GPUs; give "
                    f"slots_per_gpu >= ceil({experts}/{self.gpus}) to add redundant experts"
                )
            object.__setattr__(self, "slots_per_gpu", experts // self.gpus)
        if self.slots > experts * self.max_replicas:
            raise ValueError(
                f"{self.gpus} GPUs x {self.slots_per_gpu} slots = {self.slots} physical experts "
                f"exceed {experts} experts x max_replicas {self.max_replicas}"
            )
        if self.slots < experts:
            raise ValueError(
                f"{self.gpus} GPUs x {self.slots_per_gpu} slots = {self.slots} physical experts "
                f"cannot host all {experts} experts"
            )
        _check_int("max_replicas", self.max_replicas, 1)
        if self.expert_bytes and len(self.expert_bytes) != self.layers:
            raise ValueError(
                f"expert_bytes has {len(self.expert_bytes)} entries for {self.layers} layers"
            )
        _check_int("memory_bytes", self.memory_bytes, 0)
        if self.memory_bytes and self.expert_bytes:
            need = self.slots_per_gpu * sum(self.expert_bytes)
            if need > self.memory_bytes:
                raise ValueError(
                    f"memory_bytes: {self.slots_per_gpu} slots x {sum(self.expert_bytes)} bytes "
                    f"of one expert per layer, summed over {self.layers} layers = {need} bytes "
                    f"> {self.memory_bytes} bytes per GPU"
                )
        for name in ("balance_weight", "gpu_hop_weight", "node_hop_weight"):
            _check_int(name, getattr(self, name), 0)
        if self.uses_traffic and self.slots != experts:
            raise ValueError(
                "the traffic objective places one copy of every expert (as ExFlow); "
                f"it needs {experts} physical experts, not {self.slots}: set no redundant experts"
            )
        for i, a in enumerate(self.affinity):
            if not (
                0 <= a.layer < self.layers - 1 and 0 <= a.src < experts and 0 <= a.dst < experts
            ):
                raise ValueError(
                    f"affinity[{i}] = {a} is outside {self.layers} layers x {experts} experts"
                )
            _check_int(f"affinity[{i}].tokens", a.tokens, 0)
        _check_int("num_groups", self.num_groups, 1)
        if experts % self.num_groups:
            raise ValueError(f"num_groups ({self.num_groups}) must divide the {experts} experts")
        scale = math.lcm(*range(1, self.max_replicas + 1))
        object.__setattr__(self, "_scale", scale)
        if max(max(row) for row in self.loads) * scale * self.slots_per_gpu >= _MAX_SCALED:
            raise ValueError("loads are too large for exact integer arithmetic: scale them down")

    @property
    def layers(self) -> int:
        return len(self.loads)

    @property
    def experts(self) -> int:
        return len(self.loads[0])

    @property
    def slots(self) -> int:
        """R = G x S physical experts per layer."""
        return self.gpus * self.slots_per_gpu

    @property
    def gpus_per_node(self) -> int:
        return self.gpus // self.nodes

    @property
    def scale(self) -> int:
        """Λ = lcm(1..K): loads are counted in 1/Λ token so that every w / c is an integer."""
        return self._scale

    @property
    def uses_traffic(self) -> bool:
        return bool(self.affinity) and (self.gpu_hop_weight > 0 or self.node_hop_weight > 0)


def check_placement(problem: ExpertPlacementProblem, phy2log: Sequence[Sequence[int]]) -> None:
    """Raise ValueError unless ``phy2log`` is a complete placement of ``problem``: one row
    of R slots per layer, every expert hosted at least once, at most K replicas."""
    if len(phy2log) != problem.layers:
        raise ValueError(f"phy2log has {len(phy2log)} layers, the problem {problem.layers}")
    for layer, row in enumerate(phy2log):
        if len(row) != problem.slots:
            raise ValueError(f"phy2log[{layer}] has {len(row)} slots, the problem {problem.slots}")
        counts = np.bincount(np.asarray(row), minlength=problem.experts)
        if min(row) < 0 or len(counts) > problem.experts:
            raise ValueError(f"phy2log[{layer}] names an expert outside 0..{problem.experts - 1}")
        if counts.min() < 1:
            raise ValueError(f"phy2log[{layer}] does not host expert {int(counts.argmin())}")
        if counts.max() > problem.max_replicas:
            raise ValueError(
                f"phy2log[{layer}] gives an expert more than {problem.max_replicas} replicas"
            )


def gpu_loads(loads: np.ndarray, phy2log: np.ndarray, gpus: int) -> np.ndarray:
    """Tokens each GPU computes per layer, ``[layers, gpus]``, replicas sharing evenly."""
    loads = np.asarray(loads, dtype=np.float64)
    phy2log = np.asarray(phy2log)
    layers, experts = loads.shape
    counts = np.stack([np.bincount(row, minlength=experts) for row in phy2log])
    share = np.take_along_axis(loads / np.maximum(counts, 1), phy2log, axis=1)
    return share.reshape(layers, gpus, -1).sum(axis=2)


def layer_gpu_loads(problem: ExpertPlacementProblem, layer: int, row: Sequence[int]) -> list[int]:
    """Every GPU's load in layer ``layer`` under ``row``, in exact units of 1/Λ token."""
    counts = np.bincount(np.asarray(row), minlength=problem.experts)
    per_slot = [problem.loads[layer][e] * problem.scale // int(counts[e]) for e in row]
    s = problem.slots_per_gpu
    return [sum(per_slot[g * s : (g + 1) * s]) for g in range(problem.gpus)]


def scaled_max_loads(
    problem: ExpertPlacementProblem, phy2log: Sequence[Sequence[int]]
) -> list[int]:
    """Per layer, the busiest GPU's load in exact units of 1/Λ token."""
    return [max(layer_gpu_loads(problem, layer, row)) for layer, row in enumerate(phy2log)]


def hops(problem: ExpertPlacementProblem, phy2log: Sequence[Sequence[int]]) -> tuple[int, int]:
    """Tokens (from the affinity entries) whose consecutive experts sit on different GPUs,
    and on different nodes, for a placement with one copy of each expert."""
    s, per_node = problem.slots_per_gpu, problem.gpus_per_node
    where = [{e: r // s for r, e in enumerate(row)} for row in phy2log]
    gpu_hops = node_hops = 0
    for a in problem.affinity:
        g, h = where[a.layer][a.src], where[a.layer + 1][a.dst]
        gpu_hops += a.tokens * (g != h)
        node_hops += a.tokens * (g // per_node != h // per_node)
    return gpu_hops, node_hops


def objective(problem: ExpertPlacementProblem, phy2log: Sequence[Sequence[int]]) -> int:
    """The solver's objective for any placement, in its exact integer units."""
    value = problem.balance_weight * sum(scaled_max_loads(problem, phy2log))
    if problem.uses_traffic:
        gpu_hops, node_hops = hops(problem, phy2log)
        hop_cost = problem.gpu_hop_weight * gpu_hops + problem.node_hop_weight * node_hops
        value += problem.scale * hop_cost
    return value
