"""The walk as array operations, one op position of every rank at a time (exact too).

In the steady state of a deep 1F1B pipeline every op's input sits at an earlier position
of its rank list than the op itself (the neighbour's previous op), so all ranks' ops at
one position depend only on earlier positions. There the walk runs as array operations,
one position at a time: ``end = max(end of the previous op, end of the input + transfer)
+ duration`` elementwise, the same IEEE operations on the same operands as op by op. This
serves the pipelines whose steady state drifts rather than repeats (1F1B with transfers,
where the slots do not grow linearly for long, see ``skip``), once there are enough ranks
for arrays to beat the loop (``MIN_SWEEP_RANKS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from planner.cost._timeline.walk import Run, compile_schedule

MIN_SWEEP_RANKS = 24
"""From this many pipeline ranks, a sweep of array operations beats the walk per position
(measured on the planner's Llama 3.1 405B / 1,024-GPU candidates)."""
MIN_SWEEP_POSITIONS = 64
"""Shorter sweeps are not worth their setup."""


@dataclass(frozen=True)
class Sweep:
    """Positions [start, stop) where every op's input is at an earlier position of its rank
    list (on any rank): all ranks' ops at one position can run together, as arrays.

    ``rows[j][r]``/``cols[j][r]``: the input of rank r's op at position start + j, as a row
    (position - low) and a rank of the sweep's end-time array (rank ``pp``: a column of
    -inf, for ops without an input). ``durations[j][r]``: its index into forward_s +
    backward_s. Ops after the sweep read inputs from position ``keep`` on.
    """

    start: int
    stop: int
    low: int
    keep: int
    rows: np.ndarray
    cols: np.ndarray
    durations: np.ndarray
    ids: np.ndarray
    """(pp, ops per rank): each rank's op ids by position."""


@lru_cache(maxsize=64)
def sweep_plan(pp: int, vpp: int, microbatches: int) -> Sweep | None:
    """The longest run of positions of :class:`Sweep`; None if shorter than worth it."""
    tables = compile_schedule(pp, vpp, microbatches).tables
    ids = np.stack([ids for ids, _ in tables])
    deps = np.stack([deps for _, deps in tables])
    count, length = ids.size, ids.shape[1]
    rank_of, position_of = np.empty(count, np.int64), np.empty(count, np.int64)
    rank_of[ids] = np.arange(pp)[:, None]
    position_of[ids] = np.arange(length)[None, :]
    has = deps >= 0
    at = np.where(has, position_of[np.where(has, deps, 0)], -1)
    ok = (~has | (at < np.arange(length)[None, :])).all(axis=0)
    best, run_start = (0, 0), None
    for i, good in enumerate([*ok.tolist(), False]):
        if good and run_start is None:
            run_start = i
        elif not good and run_start is not None:
            if i - run_start > best[1] - best[0]:
                best = (run_start, i)
            run_start = None
    start, stop = best
    if stop - start < MIN_SWEEP_POSITIONS or start == 0:
        return None
    inside = at[:, start:stop]
    low = min(start - 1, int(inside[has[:, start:stop]].min()))
    after = has[:, stop:]
    reads = at[:, stop:][after]
    reads = reads[(reads >= start) & (reads < stop)]
    keep = int(reads.min()) if reads.size else stop
    dep_ranks = np.where(has, rank_of[np.where(has, deps, 0)], pp)[:, start:stop]
    return Sweep(
        start=start,
        stop=stop,
        low=low,
        keep=min(keep, stop - 1),
        rows=np.where(has[:, start:stop], inside - low, 0).T.copy(),
        cols=dep_ranks.T.copy(),
        durations=(ids[:, start:stop] // microbatches).T.copy(),
        ids=ids,
    )


def sweep(run: Run, plan: Sweep) -> bool:
    """Advance ``run`` through the sweep's positions with array operations; the same float
    operations as the walk (an elementwise max and add per op). False if the walk could
    not reach the sweep's start with every rank (then nothing was swept)."""
    pp = len(run.position)
    run.advance([plan.start] * pp)
    if run.position != [plan.start] * pp:
        return False
    width = plan.stop - plan.low
    ends = np.empty((width, pp + 1))
    ends[:, pp] = -np.inf
    for position in range(plan.low, plan.start):
        ends[position - plan.low, :pp] = [run.end[op] for op in plan.ids[:, position].tolist()]
    durations = np.asarray(run.durations, dtype=np.float64)[plan.durations]
    lag = run.lag
    for j in range(plan.stop - plan.start):
        row = plan.start - plan.low + j
        inputs = ends[plan.rows[j], plan.cols[j]] + lag
        np.maximum(ends[row - 1, :pp], inputs, out=ends[row, :pp])
        ends[row, :pp] += durations[j]
    block = ends[plan.keep - plan.low :, :pp]
    ops = plan.ids[:, plan.keep : plan.stop].T
    for op, value in zip(ops.ravel().tolist(), block.ravel().tolist(), strict=True):
        run.end[op] = value
    run.position = [plan.stop] * pp
    run.free = ends[width - 1, :pp].tolist()
    return True
