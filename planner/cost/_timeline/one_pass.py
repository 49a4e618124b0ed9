"""The walk in one pass over a recorded op order (exact: the walk's doubles).

An op's end depends only on its input's end and the end of the op before it on its rank,
so any order that puts every op after those two gives the walk's floats. Where a schedule
is walked whole (no cycles to skip, at most ``FLAT_MAX_OPS`` ops), the walk's own order is
recorded once per shape, with each op's two predecessors as positions in it, and
``flat_finish`` runs through it in one loop without the walk's parking and waking of
ranks (the same ``max`` and ``+`` per op, about half the time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from planner.cost._timeline.walk import PipelineTimes, check_done, compile_schedule

FLAT_MAX_OPS = 16_384
"""Largest schedule whose order is recorded for the one-pass walk (about 1.3 MB a shape,
cached like the compiled tables)."""


@dataclass(frozen=True)
class Order:
    """A shape's ops in the order the walk runs them, for ``flat_finish``.

    The k-th op's end is ``ends[k + 2]``; ``before[k]`` and ``inputs[k]`` index ``ends``
    too: the end of the op before it on its rank (0: ``ends[0]`` = 0.0, the rank's first
    op) and the end of its input (1: ``ends[1]`` = -inf, none). ``kinds[k]`` indexes
    forward_s + backward_s; ``last[r]`` is where rank r's last end lies in ``ends``.
    """

    before: list[int]
    inputs: list[int]
    kinds: np.ndarray
    last: list[int]


@lru_cache(maxsize=256)
def walk_order(pp: int, vpp: int, microbatches: int) -> Order:
    """The walk's op order of a shape (``walk`` without the floats)."""
    compiled = compile_schedule(pp, vpp, microbatches)
    slot = [-1] * (2 * pp * vpp * microbatches)  # where each op id lies in ``ends``
    waiter = [-1] * len(slot)
    before: list[int] = []
    inputs: list[int] = []
    ops: list[int] = []
    position = [0] * pp
    last = [0] * pp  # the rank's latest end, in ``ends``
    runnable = list(range(pp))
    while runnable:
        rank = runnable.pop()
        ids, deps = compiled.ids[rank], compiled.deps[rank]
        i, n = position[rank], len(ids)
        while i < n:
            dep = deps[i]
            if dep >= 0 and slot[dep] < 0:
                waiter[dep] = rank
                break
            op = ids[i]
            before.append(last[rank])
            inputs.append(slot[dep] if dep >= 0 else 1)
            ops.append(op)
            last[rank] = slot[op] = len(ops) + 1
            if waiter[op] >= 0:
                runnable.append(waiter[op])
            i += 1
        position[rank] = i
    times = PipelineTimes(pp, vpp, microbatches, (0.0,) * pp * vpp, (0.0,) * pp * vpp)
    check_done(position, compiled, times)
    kinds = np.asarray(ops, dtype=np.int64) // microbatches
    return Order(before=before, inputs=inputs, kinds=kinds, last=last)


def flat_finish(times: PipelineTimes) -> list[float]:
    """Each rank's end: the walk's floats, in one pass over ``walk_order`` (module docstring)."""
    order = walk_order(times.pp, times.vpp, times.microbatches)
    table = np.asarray(times.forward_s + times.backward_s, dtype=np.float64)
    durations = table[order.kinds].tolist()
    lag = times.p2p_s if times.pp > 1 else 0.0
    ends = [0.0, -math.inf]
    append = ends.append
    for previous, dep, duration in zip(order.before, order.inputs, durations, strict=True):
        t = ends[previous]
        ready = ends[dep] + lag  # -inf for no input: never later than t
        if ready > t:
            t = ready
        append(t + duration)
    return [ends[k] for k in order.last]
