"""Brute-force references for the solver formulations: exponential, small instances only.

Each reference answers the same question as its solver by plain enumeration, sharing no
code with the CP-SAT model beyond the problem type, so the tests comparing the two check
the formulation as well as the solving.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import product

from solvers.stage_partition import StagePartitionProblem


def _splits(total: int, parts: int, least: int) -> Iterator[tuple[int, ...]]:
    """Every way to write ``total`` as ``parts`` ordered sizes of at least ``least``."""
    if parts == 1:
        if total >= least:
            yield (total,)
        return
    for first in range(least, total - least * (parts - 1) + 1):
        for rest in _splits(total - first, parts - 1, least):
            yield (first, *rest)


def _option_counts(layers: int, options: int) -> Iterator[tuple[int, ...]]:
    """Every way to give ``layers`` identical layers one of ``options`` options each."""
    yield from _splits(layers, options, 0)


def _best_stage_time_us(problem: StagePartitionProblem, stage: int, kinds: list[int]) -> int | None:
    """The fastest time of one stage holding layers of the given kinds, or None if no
    recompute choice fits its memory."""
    per_kind = {k: kinds.count(k) for k in set(kinds)}
    first, last = stage == 0, stage == problem.stages - 1
    base_time = problem.first_extra_time_us * first + problem.last_extra_time_us * last
    base_mib = problem.first_extra_mib * first + problem.last_extra_mib * last
    best = None
    choices = [_option_counts(n, problem.options) for n in per_kind.values()]
    for choice in product(*(list(c) for c in choices)):
        time_us, mib = base_time, base_mib
        for k, counts in zip(per_kind, choice, strict=True):
            kind = problem.kinds[k]
            mib += kind.static_mib * per_kind[k]
            for r, y in enumerate(counts):
                time_us += kind.time_us[r] * y
                mib += problem.inflight[stage] * kind.activation_mib[r] * y
        if mib <= problem.capacity_mib[stage] and (best is None or time_us < best):
            best = time_us
    return best


def _block_time_us(problem: StagePartitionProblem, sizes: tuple[int, ...]) -> int | None:
    """Constraint (7) on one split: the best shared N* (every stage's first N* layers on
    ``block_option``, the rest on option 0), or None when no N* fits every stage."""
    kind = problem.kinds[problem.runs[0].kind]
    r = problem.block_option
    assert r is not None
    best = None
    for block in range(max(sizes) + 1):
        slowest = 0
        for stage, size in enumerate(sizes):
            first, last = stage == 0, stage == problem.stages - 1
            chosen = min(block, size)
            time_us = problem.first_extra_time_us * first + problem.last_extra_time_us * last
            mib = problem.first_extra_mib * first + problem.last_extra_mib * last
            time_us += kind.time_us[r] * chosen + kind.time_us[0] * (size - chosen)
            mib += kind.static_mib * size + problem.inflight[stage] * (
                kind.activation_mib[r] * chosen + kind.activation_mib[0] * (size - chosen)
            )
            if mib > problem.capacity_mib[stage]:
                break
            slowest = max(slowest, time_us)
        else:
            if best is None or slowest < best:
                best = slowest
    return best


def stage_partition_brute_force(problem: StagePartitionProblem) -> int | None:
    """The least slowest-stage time over every split and recompute choice, or None when
    nothing fits. Without ``block_option`` stages are independent once the split is fixed,
    so each takes its own fastest choice that fits; with it the shared N* is enumerated.
    ``uniform_middle`` keeps the splits whose middle stages are equal."""
    layer_kinds = [run.kind for run in problem.runs for _ in range(run.count)]
    best = None
    for sizes in _splits(len(layer_kinds), problem.stages, problem.min_layers_per_stage):
        if problem.uniform_middle and len(set(sizes[1:-1])) > 1:
            continue
        if problem.block_option is not None:
            slowest_block = _block_time_us(problem, sizes)
            if slowest_block is not None and (best is None or slowest_block < best):
                best = slowest_block
            continue
        slowest, start = 0, 0
        for stage, size in enumerate(sizes):
            time_us = _best_stage_time_us(problem, stage, layer_kinds[start : start + size])
            if time_us is None:
                break
            slowest = max(slowest, time_us)
            start += size
        else:
            if best is None or slowest < best:
                best = slowest
    return best
