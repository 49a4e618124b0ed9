"""Baseline expert placements: contiguous, and DeepSeek's EPLB greedy balancer.

Our own implementation of the algorithm published with DeepSeek-V3's expert-parallel load
balancer (github.com/deepseek-ai/EPLB, README and ``eplb.py``), written from its
description:

1. pack the expert groups onto nodes: groups sorted by load, heaviest first, each to the
   lightest node that still has room, every node taking the same number of groups;
2. inside each node, replicate: repeatedly give one more replica to the expert with the
   largest load per replica, until the node holds its share of the physical slots;
3. pack the node's physical experts onto its GPUs the same way as step 1 (the item's
   weight is its expert's load divided by its replica count).

Hierarchical when the expert groups divide evenly over the nodes, else global (the same
routine with one group and one node). The output is the ``phy2log`` table of
:mod:`solvers.expert_problem`. It is a heuristic: nothing bounds its distance from optimal.

Contiguous placement is SGLang's ``trivial`` initial expert location: physical slot r holds
logical expert r mod E, so GPU g holds experts [gS, (g + 1)S) and redundant slots wrap.
"""

from __future__ import annotations

import heapq

import numpy as np

from solvers.expert_problem import ExpertPlacementProblem


def balanced_packing(weights: np.ndarray, packs: int) -> np.ndarray:
    """Pack ``len(weights)`` items into ``packs`` packs of equal item count, heaviest item
    first onto the lightest pack with room (ties to the lowest pack); returns each item's
    pack."""
    items = len(weights)
    per_pack = items // packs
    pack_of = np.empty(items, dtype=np.int64)
    open_packs = [(0.0, pack, 0) for pack in range(packs)]  # (load, pack, items): a heap
    for item in np.argsort(-np.asarray(weights, dtype=np.float64), kind="stable").tolist():
        load, pack, size = heapq.heappop(open_packs)
        pack_of[item] = pack
        if size + 1 < per_pack:
            heapq.heappush(open_packs, (load + float(weights[item]), pack, size + 1))
    return pack_of


def replicate(weights: np.ndarray, physical: int) -> np.ndarray:
    """Replica count per expert: one each, then each extra replica to the expert with the
    largest load per replica (ties to the lowest index)."""
    weights = np.asarray(weights, dtype=np.float64)
    counts = np.ones(len(weights), dtype=np.int64)
    # A heap of (-load per replica, expert): the same choice as argmax, ties to the lowest.
    heap = [(-float(w), e) for e, w in enumerate(weights)]
    heapq.heapify(heap)
    for _ in range(physical - len(weights)):
        _, e = heapq.heappop(heap)
        counts[e] += 1
        heapq.heappush(heap, (-float(weights[e]) / counts[e], e))
    return counts


def _eplb_layer(weights: np.ndarray, slots: int, groups: int, nodes: int, gpus: int) -> list[int]:
    experts = len(weights)
    group_size = experts // groups
    group_node = balanced_packing(weights.reshape(groups, group_size).sum(axis=1), nodes)
    gpus_per_node, slots_per_node = gpus // nodes, slots // nodes
    phy2log: list[int] = []
    for node in range(nodes):
        logical = np.concatenate(
            [
                np.arange(g * group_size, (g + 1) * group_size)
                for g in np.flatnonzero(group_node == node)
            ]
        )
        counts = replicate(weights[logical], slots_per_node)
        physical = np.repeat(logical, counts)
        gpu_of = balanced_packing(np.repeat(weights[logical] / counts, counts), gpus_per_node)
        for gpu in range(gpus_per_node):
            phy2log.extend(int(e) for e in physical[gpu_of == gpu])
    return phy2log


def eplb(problem: ExpertPlacementProblem, *, hierarchical: bool = True) -> list[list[int]]:
    """EPLB's placement of every layer: hierarchical when ``problem.num_groups`` divides
    over the nodes (and the slots over the nodes) and ``hierarchical`` is set, else global."""
    groups, nodes = problem.num_groups, problem.nodes
    if not hierarchical or groups % nodes or problem.slots % nodes or problem.slots_per_gpu == 0:
        groups, nodes = 1, 1
    loads = np.asarray(problem.loads, dtype=np.float64)
    return [_eplb_layer(row, problem.slots, groups, nodes, problem.gpus) for row in loads]


def eplb_is_hierarchical(problem: ExpertPlacementProblem) -> bool:
    """Whether :func:`eplb` runs its hierarchical form on this problem."""
    return problem.num_groups % problem.nodes == 0 and problem.slots % problem.nodes == 0


def contiguous(problem: ExpertPlacementProblem) -> list[list[int]]:
    """SGLang's trivial placement: slot r holds expert r mod E."""
    row = [r % problem.experts for r in range(problem.slots)]
    return [list(row) for _ in range(problem.layers)]
