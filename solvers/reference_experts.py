"""Brute-force reference for expert placement: exponential, tiny instances only.

Enumerates every placement (each GPU any multiset of S experts, every expert hosted, at
most K replicas) and evaluates it with exact fractions, sharing no code with the CP-SAT
model or its evaluation beyond the problem type.
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from itertools import combinations_with_replacement, product

from solvers.expert_problem import ExpertPlacementProblem


def _layer_rows(problem: ExpertPlacementProblem) -> list[tuple[tuple[int, ...], ...]]:
    """Every placement of one layer, as one sorted tuple of hosted experts per GPU."""
    sets = list(combinations_with_replacement(range(problem.experts), problem.slots_per_gpu))
    rows = []
    for gpus in product(sets, repeat=problem.gpus):
        counts = Counter(e for hosted in gpus for e in hosted)
        if len(counts) == problem.experts and max(counts.values()) <= problem.max_replicas:
            rows.append(gpus)
    return rows


def _busiest(loads: tuple[int, ...], gpus: tuple[tuple[int, ...], ...]) -> Fraction:
    counts = Counter(e for hosted in gpus for e in hosted)
    return max(sum((Fraction(loads[e], counts[e]) for e in hosted), Fraction(0)) for hosted in gpus)


def _hop_cost(
    problem: ExpertPlacementProblem, layout: tuple[tuple[tuple[int, ...], ...], ...]
) -> int:
    per_node = problem.gpus_per_node
    cost = 0
    for a in problem.affinity:
        g = next(i for i, hosted in enumerate(layout[a.layer]) if a.src in hosted)
        h = next(i for i, hosted in enumerate(layout[a.layer + 1]) if a.dst in hosted)
        cost += a.tokens * (problem.gpu_hop_weight * (g != h))
        cost += a.tokens * (problem.node_hop_weight * (g // per_node != h // per_node))
    return cost


def expert_placement_brute_force(problem: ExpertPlacementProblem) -> Fraction:
    """The least objective in tokens: β times the summed busiest-GPU loads, plus the hop
    costs when the problem has traffic terms (then every layer combination is tried)."""
    rows = _layer_rows(problem)
    if not problem.uses_traffic:
        return problem.balance_weight * sum(
            (min(_busiest(loads, gpus) for gpus in rows) for loads in problem.loads), Fraction(0)
        )
    best = None
    for layout in product(rows, repeat=problem.layers):
        value = problem.balance_weight * sum(
            (_busiest(loads, gpus) for loads, gpus in zip(problem.loads, layout, strict=True)),
            Fraction(0),
        ) + _hop_cost(problem, layout)
        if best is None or value < best:
            best = value
    assert best is not None
    return best
