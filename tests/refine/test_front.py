"""pareto_front() against a brute-force definition on random points."""

from __future__ import annotations

import random

import pytest

from planner.refine import pareto_front


def _dominated(p, points) -> bool:
    return any(all(a >= b for a, b in zip(q, p, strict=True)) and q != p for q in points)


@pytest.mark.parametrize("seed", range(30))
def test_front_matches_definition(seed: int) -> None:
    rng = random.Random(seed)
    points = [(rng.randint(0, 6), rng.randint(0, 6)) for _ in range(rng.randint(1, 25))]
    front = pareto_front(points)
    assert front == [i for i, p in enumerate(points) if not _dominated(p, points)]
    assert front  # a finite set always has a non-dominated point


def test_hand_example() -> None:
    # (3, 1) and (1, 3) trade off; (2, 2) too; (1, 1) is beaten by all; a duplicate of a
    # front point is not dominated by its twin
    points = [(3, 1), (1, 1), (1, 3), (2, 2), (3, 1)]
    assert pareto_front(points) == [0, 2, 3, 4]
