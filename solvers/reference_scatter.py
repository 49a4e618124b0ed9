"""Brute-force reference for :mod:`solvers.scatter`, for small instances only.

Enumerates every partition of the micro-batch's sequences into blocks and every size for
each block; keeps those whose blocks fit in one GPU's memory and whose sizes add up to
the GPU count; the answer is the least makespan. It shares no code with the CP-SAT model
or the greedy beyond the problem type, so tests comparing the two check the formulation.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import product

from solvers.scatter import ScatterProblem


def _partitions(items: list[int]) -> Iterator[list[list[int]]]:
    """Every set partition of ``items`` (Bell-number many)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in _partitions(rest):
        yield [[first], *partition]
        for k in range(len(partition)):
            yield [*partition[:k], [first, *partition[k]], *partition[k + 1 :]]


def scatter_brute_force(problem: ScatterProblem) -> int | None:
    """The least makespan (us) over every packing, or None when nothing fits."""
    table = problem.table
    rows = [r for r, c in enumerate(problem.counts) for _ in range(c)]
    best = None
    for partition in _partitions(list(range(len(rows)))):
        if len(partition) > table.gpus:
            continue
        for choice in product(range(len(table.sizes)), repeat=len(partition)):
            if sum(table.sizes[j] for j in choice) != table.gpus:
                continue
            makespan = 0
            for block, j in zip(partition, choice, strict=True):
                if sum(table.memory[rows[i]][j] for i in block) > table.capacity:
                    break
                makespan = max(makespan, sum(table.time_us[rows[i]][j] for i in block))
            else:
                if best is None or makespan < best:
                    best = makespan
    return best
