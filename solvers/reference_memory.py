"""Brute-force references for memory placement and recompute/offload: small instances only.

They share only the problem types with the CP-SAT models: placement enumerates every base
of every rigid group (a group's base never needs to exceed the warm start's arena less its
height), recompute/offload every choice of every group.
"""

from __future__ import annotations

from itertools import product

from solvers.memory_placement import (
    PlacementProblem,
    arena_of,
    best_fit_offsets,
    overlapping_pair,
    rigid_groups,
)
from solvers.recompute_offload import CHOICES, RecomputeOffloadProblem


def placement_brute_force(problem: PlacementProblem) -> int:
    """The least arena over every placement of the rigid groups."""
    tensors = problem.tensors
    groups = rigid_groups(problem)
    best = arena_of(tensors, best_fit_offsets(problem))
    ranges = [range(best - g.height(tensors) + 1) for g in groups]
    for bases in product(*ranges):
        offsets = [0] * len(tensors)
        for group, base in zip(groups, bases, strict=True):
            for i, rel in group.members:
                offsets[i] = base + rel
        arena = arena_of(tensors, tuple(offsets))
        if arena < best and overlapping_pair(tensors, tuple(offsets)) is None:
            best = arena
    return best


def recompute_offload_brute_force(problem: RecomputeOffloadProblem) -> int | None:
    """The least added time over every choice that fits the budget (linked groups taking
    one choice together), or None."""
    best = None
    classes = [list(m) for m in problem.linked]
    linked = {g for m in problem.linked for g in m}
    classes += [[g] for g in range(len(problem.groups)) if g not in linked]
    options = [
        [c for c in CHOICES if all(problem.groups[g].allows(c) for g in members)]
        for members in classes
    ]
    for picked in product(*options):
        assigned: dict[int, str] = {}
        for members, choice in zip(classes, picked, strict=True):
            assigned.update(dict.fromkeys(members, choice))
        choices = tuple(assigned[g] for g in range(len(problem.groups)))
        if max(problem.memory(choices), default=0) > problem.budget:
            continue
        added = problem.added_us(choices)
        if best is None or added < best:
            best = added
    return best
