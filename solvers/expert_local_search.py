"""Warm start for expert placement: the better EPLB greedy, improved by swaps.

A descent swaps one slot of the busiest GPU with one slot of another GPU while that lowers
the busiest GPU's load (replica counts unchanged, so every share stays the same). Loads are
the exact scaled integers of :mod:`solvers.expert_problem`.
"""

from __future__ import annotations

import numpy as np

from solvers.expert_greedy import contiguous, eplb
from solvers.expert_problem import ExpertPlacementProblem, check_placement, objective


def _slot_loads(problem: ExpertPlacementProblem, layer: int, row: np.ndarray) -> np.ndarray:
    counts = np.bincount(row, minlength=problem.experts)
    loads = np.asarray(problem.loads[layer], dtype=np.int64) * problem.scale
    return loads[row] // counts[row]


_NEVER = np.iinfo(np.int64).max


def _best_swap(
    grid: np.ndarray, weight: np.ndarray, gpu_load: np.ndarray, g: int
) -> tuple[int, int, int, int]:
    """The swap of a slot of GPU ``g`` with a slot of another GPU that minimises the larger
    of the two new loads: (slot on g, other GPU, its slot, new larger load)."""
    best = (0, g, 0, int(gpu_load[g]))
    for a in range(grid.shape[1]):
        wa = weight[g, a]
        worse = np.maximum(gpu_load[g] - wa + weight, gpu_load[:, None] - weight + wa)
        worse[g, :] = _NEVER
        h, b = np.unravel_index(np.argmin(worse), worse.shape)
        if worse[h, b] < best[3]:
            best = (a, int(h), int(b), int(worse[h, b]))
    return best


def improve_layer(
    problem: ExpertPlacementProblem, layer: int, row: list[int], rounds: int
) -> list[int]:
    """Swap-descend on the busiest GPU's load, at most ``rounds`` swaps."""
    grid = np.asarray(row, dtype=np.int64).reshape(problem.gpus, problem.slots_per_gpu)
    weight = _slot_loads(problem, layer, grid.ravel()).reshape(grid.shape)
    for _ in range(rounds):
        gpu_load = weight.sum(axis=1)
        g = int(np.argmax(gpu_load))
        a, h, b, worse = _best_swap(grid, weight, gpu_load, g)
        if worse >= gpu_load[g]:
            break
        grid[g, a], grid[h, b] = grid[h, b], grid[g, a]
        weight[g, a], weight[h, b] = weight[h, b], weight[g, a]
    return [int(e) for e in grid.ravel()]


def warm_start(problem: ExpertPlacementProblem, rounds: int | None = None) -> list[list[int]]:
    """The best, on the problem's objective, of hierarchical and global EPLB (those within
    its replica limit) and contiguous placement, each as is and improved layer by layer."""
    candidates = []
    for hierarchical in (True, False):
        placement = eplb(problem, hierarchical=hierarchical)
        try:
            check_placement(problem, placement)
        except ValueError:
            continue
        candidates.append(placement)
    candidates.append(contiguous(problem))
    limit = rounds if rounds is not None else 4 * problem.gpus
    for placement in list(candidates):
        candidates.append(
            [improve_layer(problem, i, row, limit) for i, row in enumerate(placement)]
        )
    return min(candidates, key=lambda p: objective(problem, p))
