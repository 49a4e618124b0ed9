"""Brute-force reference for :mod:`solvers.degrees`, for small instances only.

Enumerates the Cartesian product of the axes' values and keeps the assignments that meet
every product constraint, every allowed table and every cost factor's tabulated
combinations; the objective is the sum of the factors' costs. It shares no code with the
CP-SAT formulation beyond the problem types, so tests can compare the two.
"""

from __future__ import annotations

import itertools
import math

from solvers.degrees import DegreesProblem


def degrees_brute_force(problem: DegreesProblem) -> list[tuple[int, dict[str, int]]]:
    """All feasible assignments as (objective, assignment), sorted by objective, then values."""
    names = [a.name for a in problem.axes]
    found: list[tuple[int, tuple[int, ...]]] = []
    for combination in itertools.product(*(a.values for a in problem.axes)):
        chosen = dict(zip(names, combination, strict=True))
        if any(math.prod(chosen[n] for n in p.axes) != p.target(chosen) for p in problem.products):
            continue
        if any(tuple(chosen[n] for n in t.axes) not in t.rows for t in problem.tables):
            continue
        keys = [(f, tuple(chosen[n] for n in f.axes)) for f in problem.factors]
        if all(key in f.costs for f, key in keys):
            found.append((sum(f.costs[key] for f, key in keys), combination))
    found.sort()
    return [(objective, dict(zip(names, values, strict=True))) for objective, values in found]
