"""The steady cycles of a schedule shape: static facts for skipping them (``skip``).

A *cycle* is one steady-state pattern of every rank (one forward/backward pair for 1F1B,
p·v pairs for the interleaved order; ``schedule.steady_period``), a *slot* one op position
within a cycle. This module reads off a shape's op tables where each rank's steady state
lies, which cycles of which ranks each op's input comes from, and (for per-rank cycle
offsets that align the ranks in time) the slot each op's two predecessors sit in; the
tables depend only on (pp, vpp, microbatches) and are cached, since the planner
simulates the same shapes with many different stage times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from planner.cost._timeline.walk import PipelineTimes, compile_schedule
from planner.cost.schedule import steady_period, steady_shift, warmup_forwards

MIN_CYCLES_TO_SKIP = 32
"""Shorter steady states are walked op by op: nothing to gain from the jump machinery."""
MIN_OPS_TO_SKIP = 4096
"""Nor are schedules of fewer ops (measured on the planner's 70B / 64-GPU candidates: below
this the bookkeeping costs more than the ops it skips). Against the one-pass walk the
scale is per rank: ``simulate.one_pass_is_cheaper``."""


@dataclass(frozen=True)
class Shape:
    """Static facts about a shape's steady state, for skipping cycles (module docstring).

    Rank r's steady state is positions warmup[r] + [0, cycles[r]·span) of its op table in
    *pair cycles* of ``span`` positions; a pair cycle's op ids are the previous one's plus
    ``shift``. Every dependency edge (an op and the op whose end it waits for) is
    summarised per (op rank, input rank): ``gaps`` the least and largest pair-cycle
    distance between two steady ends, ``early`` the latest steady op cycle whose input is
    still in the warm-up, ``late`` the earliest steady input cycle read by an op after the
    steady state. ``ids[r]`` is rank r's op table.
    """

    warmup: tuple[int, ...]
    span: int
    shift: int
    cycles: tuple[int, ...]
    gaps: dict[tuple[int, int], tuple[int, int]]
    early: dict[tuple[int, int], int]
    late: dict[tuple[int, int], int]
    after: dict[tuple[int, int], int]
    """The earliest steady op cycle that reads the other rank's ops after its steady state."""
    ids: tuple[np.ndarray, ...]
    deps: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class Steady:
    """Cycles for one simulation: rank r's cycle k is its pair cycle k + offset[r].

    Offsets align the ranks in time (1F1B rank r runs pair q about one backward later
    than rank r + 1), so a cycle's end times lie close together and fit in one binade
    sooner. ``cycles`` cycles are steady on every rank; from cycle ``first`` on, every
    input of an op in a cycle lies in a cycle at most ``reach`` earlier (never later), and
    a jump may land on cycle ``landing_max`` at the latest (ops after the common steady
    state read cycles from there on). ``base`` lists the op ids of cycle 0, rank by rank;
    ``last[r]`` indexes rank r's last one.
    """

    start: tuple[int, ...]
    """Position where rank r's cycle 0 starts."""
    span: int
    shift: int
    cycles: int
    first: int
    reach: int
    landing_max: int
    base: tuple[int, ...]
    last: tuple[int, ...]
    links: tuple[tuple[int, int, int, int], ...]
    """Per slot: (previous op's slot, its cycles back, input's slot or -1, its cycles back)."""


@lru_cache(maxsize=256)
def shape_of(pp: int, vpp: int, microbatches: int) -> Shape | None:
    """The static facts of :class:`Shape`, read off the compiled tables (None: no skipping)."""
    return _shape(pp, vpp, microbatches, compile_schedule(pp, vpp, microbatches).tables)


def _shape(
    pp: int, vpp: int, m: int, tables: tuple[tuple[np.ndarray, np.ndarray], ...]
) -> Shape | None:
    """The static facts of :class:`Shape`, read off the tables (None: no skipping)."""
    span = 2 * steady_period(pp=pp, vpp=vpp)
    shift = steady_shift(pp=pp, vpp=vpp)
    warmup = [warmup_forwards(rank=r, pp=pp, vpp=vpp, microbatches=m) for r in range(pp)]
    cycles = [(len(ids) - 2 * w) // span for (ids, _), w in zip(tables, warmup, strict=True)]
    if min(cycles) < MIN_CYCLES_TO_SKIP or 2 * pp * vpp * m < MIN_OPS_TO_SKIP:
        return None
    count = 2 * pp * vpp * m
    rank_of = np.empty(count, np.int64)
    cycle_of = np.empty(count, np.int64)  # pair cycle; -1 warm-up, -2 after the steady state
    for rank, ((ids, deps), w, n) in enumerate(zip(tables, warmup, cycles, strict=True)):
        positions = np.arange(len(ids))
        rank_of[ids] = rank
        cycle_of[ids] = np.where(
            positions < w, -1, np.where(positions < w + n * span, (positions - w) // span, -2)
        )
        # pair cycle q + 1 is pair cycle q with the micro-batches shifted
        body, later = slice(w, w + (n - 1) * span), slice(w + span, w + n * span)
        shifted_deps = np.where(deps[body] >= 0, deps[body] + shift, -1)
        if not (
            np.array_equal(ids[later], ids[body] + shift)
            and np.array_equal(deps[later], shifted_deps)
        ):
            return None
    gaps: dict[tuple[int, int], tuple[int, int]] = {}
    early: dict[tuple[int, int], int] = {}
    late: dict[tuple[int, int], int] = {}
    after: dict[tuple[int, int], int] = {}
    for rank, (ids, deps) in enumerate(tables):
        has = deps >= 0
        op_cycle, dep = cycle_of[ids[has]], deps[has]
        dep_cycle, dep_rank = cycle_of[dep], rank_of[dep]
        for other in np.unique(dep_rank).tolist():
            mine = dep_rank == other
            ops, inputs = op_cycle[mine], dep_cycle[mine]
            key = (rank, other)
            reads_late = (ops >= 0) & (inputs == -2)
            if reads_late.any():  # such ops must stay after the cycles that are skipped
                after[key] = int(ops[reads_late].min())
            steady = (ops >= 0) & (inputs >= 0)
            if steady.any():
                gap = ops[steady] - inputs[steady]
                gaps[key] = (int(gap.min()), int(gap.max()))
            warm = (ops >= 0) & (inputs == -1)
            if warm.any():
                early[key] = int(ops[warm].max())
            later = (ops == -2) & (inputs >= 0)
            if later.any():
                late[key] = int(inputs[later].min())
    return Shape(
        warmup=tuple(warmup),
        span=span,
        shift=shift,
        cycles=tuple(cycles),
        gaps=gaps,
        early=early,
        late=late,
        after=after,
        ids=tuple(ids for ids, _ in tables),
        deps=tuple(deps for _, deps in tables),
    )


def rank_offsets(times: PipelineTimes) -> list[int]:
    """Per-rank pair-cycle offsets that align 1F1B ranks in time (zero when interleaved).

    In the steady state rank r's backward of a micro-batch follows rank r + 1's by that
    backward plus a transfer, so rank r + 1 runs the same pair index about
    (b_r + transfer) / P pair cycles earlier, P the slowest rank's forward plus backward.
    """
    pp = times.pp
    if times.vpp > 1 or pp == 1:
        return [0] * pp
    period = max(f + b for f, b in zip(times.forward_s, times.backward_s, strict=True))
    if not period > 0.0:
        return [0] * pp
    offsets, total = [0], 0.0
    for rank in range(pp - 1):
        total += min(1.0, (times.backward_s[rank] + times.p2p_s) / period)
        offsets.append(math.floor(total))
    return offsets


@lru_cache(maxsize=1024)
def steady_cycles(pp: int, vpp: int, microbatches: int, offsets: tuple[int, ...]) -> Steady | None:
    """:func:`_plan` of a compiled shape, cached (the planner repeats shapes and offsets)."""
    shape = shape_of(pp, vpp, microbatches)
    return None if shape is None else _plan(shape, list(offsets))


def _plan(shape: Shape, offsets: list[int]) -> Steady | None:
    """The cycles of :class:`Steady` for these offsets; None if they do not close."""
    cycles = min(n - s for n, s in zip(shape.cycles, offsets, strict=True))
    for (rank, _other), cycle in shape.after.items():
        cycles = min(cycles, cycle - offsets[rank])  # those ops come after the cycles
    if cycles < MIN_CYCLES_TO_SKIP:
        return None
    reach = 1  # the previous op of a rank's first op in a cycle is in the cycle before
    for (rank, other), (low, high) in shape.gaps.items():
        if low - offsets[rank] + offsets[other] < 0:
            return None  # an input in a later cycle: cycles would not close
        reach = max(reach, high - offsets[rank] + offsets[other])
    first = reach  # steady inputs reach back at most ``reach`` cycles: from here ≥ cycle 0
    for (rank, _other), cycle in shape.early.items():
        first = max(first, cycle - offsets[rank] + 1)
    horizon = cycles - reach  # later steady ops read at most ``reach`` cycles back
    for (_rank, other), cycle in shape.late.items():
        horizon = min(horizon, cycle - offsets[other])
    start = [w + s * shape.span for w, s in zip(shape.warmup, offsets, strict=True)]
    base: list[int] = []
    last = []
    for ids, begin in zip(shape.ids, start, strict=True):
        base.extend(ids[begin : begin + shape.span].tolist())
        last.append(len(base) - 1)
    if first >= cycles:
        return None
    slot_of = {op: slot for slot, op in enumerate(base)}
    links = []
    for rank, (deps, begin) in enumerate(zip(shape.deps, start, strict=True)):
        lead = last[rank] - shape.span + 1
        inputs = deps[begin + first * shape.span : begin + (first + 1) * shape.span].tolist()
        for j, dep in enumerate(inputs):
            previous = (lead + j - 1, 0) if j else (last[rank], 1)
            if dep < 0:
                links.append((*previous, -1, 0))
                continue
            for back in range(reach + 1):
                slot = slot_of.get(dep - shape.shift * (first - back))
                if slot is not None:
                    links.append((*previous, slot, back))
                    break
            else:  # cannot happen when ``reach`` is right; do not skip then
                return None
    return Steady(
        start=tuple(start),
        span=shape.span,
        shift=shape.shift,
        cycles=cycles,
        first=first,
        reach=reach,
        landing_max=min(cycles - 1, horizon + reach - 1),
        base=tuple(base),
        last=tuple(last),
        links=tuple(links),
    )


def steady_for(times: PipelineTimes) -> Steady | None:
    """The cycles to skip in ``times``: with the offsets that align its ranks in time,
    else with none; None where the shape has no cycles to skip or they do not close."""
    shape = (times.pp, times.vpp, times.microbatches)
    if shape_of(*shape) is None:
        return None
    steady = steady_cycles(*shape, tuple(rank_offsets(times)))
    if steady is None:
        steady = steady_cycles(*shape, (0,) * times.pp)
    return steady
