"""Pipeline step time as a discrete-event timeline of the (interleaved) 1F1B op order.

Each pipeline rank runs the ops ``schedule.rank_ops`` gives, in exactly that order, one at
a time. An op starts when its rank is free and its input has arrived:

- the forward of micro-batch m through virtual stage k needs the forward of (m, k - 1)
  finished plus one point-to-point transfer (k = 0 has no input to wait for);
- the backward of (m, k) needs the backward of (m, k + 1) finished plus one transfer; the
  last virtual stage's backward needs its own forward, which runs earlier on the same rank
  (``rank_ops`` puts every forward before its backward), so the rank order covers it.

A transfer between two virtual stages on the same rank (only when pp = 1) costs nothing.
Transfers are overlapped with compute on the sending rank, as with Megatron-LM's
``overlap_p2p_comm`` (on by default in the training CLI, off with
``--no-overlap-p2p-communication``, and forced off by ``megatron/training/arguments.py``
for the non-interleaved schedule): only the receiver waits ``p2p_s``. Where the sender
blocks too (plain 1F1B's batched ``send_forward_recv_backward``), this under-charges the
transfers. The step ends when the last op on any rank ends; the optimizer step and the
data-parallel gradient reduce that follow are not part of it.

Terms (as in ``schedule.py``): p = pp ranks, v = vpp chunks per rank, m micro-batches;
chunk c of rank r is virtual stage c·p + r, and ``forward_s``/``backward_s`` are indexed
by virtual stage.

Bubble, two ways (both relative to the busiest rank, which sets the ideal step):

- ``bubble_over_ideal`` = (step - busy_max) / busy_max: Narayanan et al. 2021 ("Efficient
  Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", SC'21), section
  2.2.1, define the bubble fraction as bubble time over ideal compute time m·(t_f + t_b),
  which is (p - 1)/m for 1F1B and (p - 1)/(v·m) for the interleaved schedule with uniform
  stages and free transfers.
- ``bubble_fraction`` = (step - busy_max) / step: the share of the step the busiest rank
  sits idle.

How it is computed: since each rank's order is fixed, no event queue is needed. A rank
runs ops until the next one's input is not yet known, then parks on that input; the op
that produces the input wakes it. The op order of a (pp, vpp, microbatches) shape is
compiled once into flat integer tables and cached, because the planner simulates the same
shape with many different stage times.

Skipping the steady middle (exact): the planner simulates schedules of up to thousands of
micro-batches, so ``simulate`` does not visit every op of the steady state. Call a *cycle*
one steady-state pattern of every rank (one forward/backward pair for 1F1B, p·v pairs for
the interleaved order; ``schedule.steady_period``), and a *slot* one op position within a
cycle: the op tables of cycle k + 1 are those of cycle k with every micro-batch shifted by
the same amount, so slot s of cycle k ends at

    V_s(k) = max(V_prev(s)(k - a), fl(V_dep(s)(k - b) + transfer)) + d_s

with fixed input slots and cycle offsets a, b ≤ D. Within one binade [2^e, 2^(e+1)) every
double is a multiple of u = 2^(e-52), and adding a duration to such a value, when the sum
stays in the binade, adds exactly u·round(d/u) (unless d/u lies exactly halfway between
integers, where the rounding depends on the value; such binades are not skipped). There
the float simulation is an integer max-plus recursion. If every slot grew linearly over
the last D cycles, V_s(k) = V_s(q) + (k - q)·Δ_s, and each slot's larger input (the one
the max picked at cycle q) grows by that slot's Δ_s and stays the larger for n more
cycles (both inputs are linear, so when the smaller grows faster the crossing cycle is a
division), then by induction over the cycles and the op order every slot stays linear for
those n cycles. The simulation then jumps: it writes V_s(q) + (k - q)·Δ_s (exact: a
multiple of u inside the binade) for the last D + 1 cycles before the landing, as far as
every value stays in the binade, the inputs keep their order and the cycles stay in the
steady state of every rank, and resumes op by op (a new regime, the next binade, the
cool-down). Per-rank cycle offsets align the ranks in time so that a cycle's values fit in
one binade. The values are the doubles the op-by-op walk produces; ``start_s`` and the op
records, which need every op, come from that walk on first access.

One rank: with pp = 1 nothing ever waits, so the walk's end is the busy time (summed the
same way); ``simulate`` takes it without walking.

In one pass (exact too): an op's end depends only on its input's end and the end of the
op before it on its rank, so any order that puts every op after those two gives the
walk's floats. Where a schedule is walked whole (no cycles to skip, at most
``FLAT_MAX_OPS`` ops), the walk's own order is recorded once per shape, with each op's
two predecessors as positions in it, and ``_flat_finish`` runs through it in one loop
without the walk's parking and waking of ranks (the same ``max`` and ``+`` per op, about
half the time).

Sweeping (exact too): in the steady state of a deep 1F1B pipeline every op's input sits at
an earlier position of its rank list than the op itself (the neighbour's previous op), so
all ranks' ops at one position depend only on earlier positions. There the walk runs as
array operations, one position at a time: ``end = max(end of the previous op, end of the
input + transfer) + duration`` elementwise, the same IEEE operations on the same operands
as op by op. This serves the pipelines whose steady state drifts rather than repeats
(1F1B with transfers, where the slots do not grow linearly for long), once there are
enough ranks for arrays to beat the loop (``MIN_SWEEP_RANKS``). The tests in
``tests/search`` compare every path with the walk on random pipelines.

Size: past the house's ~400 lines because the two exact fast paths (with their static
analyses of a schedule shape) belong next to the walk whose float operations they
reproduce; split apart, each would need the walk's internals.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from planner.cost.schedule import (
    Phase,
    rank_op_arrays,
    rank_ops,
    steady_period,
    steady_shift,
    warmup_forwards,
)

MIN_CYCLES_TO_SKIP = 32
"""Shorter steady states are walked op by op: nothing to gain from the jump machinery."""
MIN_OPS_TO_SKIP = 4096
"""Nor are schedules of fewer ops (measured on the planner's 70B / 64-GPU candidates: below
this the bookkeeping costs more than the ops it skips). Against the one-pass walk the
scale is per rank: ``_one_pass_is_cheaper``."""
NUMPY_OPS = 2048
"""From this many ops, per-rank duration lists are gathered with numpy."""
FLAT_MAX_OPS = 16_384
"""Largest schedule whose order is recorded for the one-pass walk (about 1.3 MB a shape,
cached like the compiled tables)."""

MIN_SWEEP_RANKS = 24
"""From this many pipeline ranks, a sweep of array operations beats the walk per position
(measured on the planner's Llama 3.1 405B / 1,024-GPU candidates)."""
MIN_SWEEP_POSITIONS = 64
"""Shorter sweeps are not worth their setup."""
MAX_PERIOD = 4
"""The longest repeat (in cycles) of the slots' growth looked for before a jump."""
MAX_BACKOFF = 256
"""While the slots do not grow linearly, the test is repeated after 2, 4, ... up to this
many cycles (1F1B with transfers can drift for the whole step)."""


@dataclass(frozen=True)
class PipelineTimes:
    """What a pipeline step is simulated from: the schedule shape and per-stage times.

    ``forward_s[k]`` and ``backward_s[k]`` are the times of one micro-batch's forward and
    backward through virtual stage k = chunk·pp + rank (pp·vpp entries each), in seconds.
    ``p2p_s`` is one point-to-point transfer between consecutive virtual stages (the
    activation forward or its gradient backward).
    """

    pp: int
    vpp: int
    microbatches: int
    forward_s: tuple[float, ...]
    backward_s: tuple[float, ...]
    p2p_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("pp", "vpp", "microbatches"):
            value = getattr(self, name)
            try:
                count = operator.index(value)  # int, or a numpy integer
            except TypeError:
                count = 0
            if isinstance(value, bool) or count < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, count)
        stages = self.pp * self.vpp
        for name in ("forward_s", "backward_s"):
            durations = tuple(float(d) for d in getattr(self, name))
            if len(durations) != stages:
                raise ValueError(
                    f"{name} has {len(durations)} entries; it needs one per virtual stage, "
                    f"pp·vpp = {self.pp}·{self.vpp} = {stages}"
                )
            for stage, duration in enumerate(durations):
                if not (math.isfinite(duration) and duration >= 0):
                    raise ValueError(
                        f"{name}[{stage}] = {duration}: durations must be finite and ≥ 0"
                    )
            object.__setattr__(self, name, durations)
        p2p = float(self.p2p_s)
        if not (math.isfinite(p2p) and p2p >= 0):
            raise ValueError(f"p2p_s = {p2p}: a transfer time must be finite and ≥ 0")
        object.__setattr__(self, "p2p_s", p2p)
        if self.vpp > 1 and self.microbatches % self.pp != 0:
            raise ValueError(
                f"the interleaved schedule runs micro-batches in groups of pp: "
                f"{self.microbatches} micro-batches are not a multiple of pp ({self.pp}), "
                "which Megatron-LM's interleaved schedule requires"
            )


@dataclass(frozen=True)
class OpTiming:
    """When one op ran: rank, what it was, and its start and end in seconds."""

    rank: int
    phase: Phase
    microbatch: int
    chunk: int
    stage: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class PipelineTimeline:
    """The simulated step: its length, each rank's busy and idle time, and the bubble.

    ``busy_s[r]`` is the sum of rank r's op durations and ``idle_s[r]`` = step_s - busy_s[r]
    (the busy time is summed op by op in execution order, so idle is never negative, even
    in floating point). ``start_s[r][i]`` is when the i-th op of rank r in ``rank_ops``
    order starts; ``start_s``, ``end_s`` and the ``ops`` records are derived on first
    access (by the op-by-op walk), since the planner rarely needs them and a large pipeline
    has a million ops.
    """

    times: PipelineTimes
    step_s: float
    busy_s: tuple[float, ...]
    idle_s: tuple[float, ...]
    bubble_over_ideal: float
    bubble_fraction: float

    @cached_property
    def start_s(self) -> tuple[tuple[float, ...], ...]:
        """When each op starts, rank by rank in ``rank_ops`` order."""
        starts, _ = _walk(self.times)
        return tuple(tuple(s) for s in starts)

    @cached_property
    def end_s(self) -> tuple[tuple[float, ...], ...]:
        """When each op ends, laid out like ``start_s`` (start plus duration, as simulated)."""
        durations = self.times.forward_s + self.times.backward_s
        compiled = _compile(self.times.pp, self.times.vpp, self.times.microbatches)
        m = self.times.microbatches
        return tuple(
            tuple(start + durations[op // m] for start, op in zip(starts, ids, strict=True))
            for starts, ids in zip(self.start_s, compiled.ids, strict=True)
        )

    @cached_property
    def ops(self) -> tuple[OpTiming, ...]:
        """Every op of every rank with its start and end, rank by rank in execution order."""
        pp, vpp, m = self.times.pp, self.times.vpp, self.times.microbatches
        records = []
        for rank in range(pp):
            order = rank_ops(rank=rank, pp=pp, vpp=vpp, microbatches=m)
            timed = zip(order, self.start_s[rank], self.end_s[rank], strict=True)
            for op, start, end in timed:
                stage = op.chunk * pp + rank
                records.append(OpTiming(rank, op.phase, op.microbatch, op.chunk, stage, start, end))
        return tuple(records)


@dataclass(frozen=True)
class _Shape:
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
class _Steady:
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


@dataclass(frozen=True)
class _Compiled:
    """A schedule shape as flat tables. An op's id is (phase·S + stage)·m + micro-batch
    (phase 0 forward, 1 backward; S = pp·vpp), so id // m indexes the durations table
    forward_s + backward_s. ``deps[r][i]`` is the id of the op whose end the i-th op of rank
    r waits for (plus one transfer), or -1. ``tables[r]`` holds rank r's (ids, deps) as
    arrays; ``shape`` is None where cycles cannot be skipped."""

    ids: tuple[list[int], ...]
    deps: tuple[list[int], ...]
    tables: tuple[tuple[np.ndarray, np.ndarray], ...]
    shape: _Shape | None


@lru_cache(maxsize=256)
def _compile(pp: int, vpp: int, microbatches: int) -> _Compiled:
    stages, m = pp * vpp, microbatches
    last = stages - 1
    tables = []
    for rank in range(pp):
        backward, microbatch, chunk = rank_op_arrays(
            rank=rank, pp=pp, vpp=vpp, microbatches=microbatches
        )
        stage = chunk * pp + rank
        ids = (backward * stages + stage) * m + microbatch
        # forward: the previous stage's forward; backward: the next stage's backward, and
        # the last stage's backward waits on its own forward, earlier on this rank
        deps = np.where(
            backward == 0,
            np.where(stage == 0, -1, (stage - 1) * m + microbatch),
            np.where(stage == last, -1, (stages + stage + 1) * m + microbatch),
        )
        tables.append((ids, deps))
    return _Compiled(
        ids=tuple(ids.tolist() for ids, _ in tables),
        deps=tuple(deps.tolist() for _, deps in tables),
        tables=tuple(tables),
        shape=_shape(pp, vpp, m, tables),
    )


def _shape(pp: int, vpp: int, m: int, tables: list[tuple[np.ndarray, np.ndarray]]) -> _Shape | None:
    """The static facts of :class:`_Shape`, read off the tables (None: no skipping)."""
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
    return _Shape(
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


def _offsets(times: PipelineTimes) -> list[int]:
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
def _cycles(pp: int, vpp: int, microbatches: int, offsets: tuple[int, ...]) -> _Steady | None:
    """:func:`_plan` of a compiled shape, cached (the planner repeats shapes and offsets)."""
    shape = _compile(pp, vpp, microbatches).shape
    return None if shape is None else _plan(shape, list(offsets))


def _plan(shape: _Shape, offsets: list[int]) -> _Steady | None:
    """The cycles of :class:`_Steady` for these offsets; None if they do not close."""
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
    return _Steady(
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


def _walk(times: PipelineTimes) -> tuple[list[list[float]], list[float]]:
    """Every op, in order (the module docstring's walk): start times and each rank's end."""
    pp, vpp, m = times.pp, times.vpp, times.microbatches
    compiled = _compile(pp, vpp, m)
    durations = times.forward_s + times.backward_s
    # consecutive virtual stages sit on different ranks unless pp = 1
    lag = times.p2p_s if pp > 1 else 0.0
    end = [-1.0] * (2 * pp * vpp * m)  # -1: not run yet (real ends are ≥ 0)
    waiter = [-1] * len(end)  # the rank parked on this op's end, if any
    starts: list[list[float]] = [[0.0] * len(ids) for ids in compiled.ids]
    position = [0] * pp
    free = [0.0] * pp
    runnable = list(range(pp))
    while runnable:
        rank = runnable.pop()
        ids, deps = compiled.ids[rank], compiled.deps[rank]
        rank_starts = starts[rank]
        i, t, n = position[rank], free[rank], len(ids)
        while i < n:
            dep = deps[i]
            if dep >= 0:
                dep_end = end[dep]
                if dep_end < 0.0:
                    waiter[dep] = rank
                    break
                dep_end += lag
                if dep_end > t:
                    t = dep_end
            op = ids[i]
            rank_starts[i] = t
            t += durations[op // m]
            end[op] = t
            woken = waiter[op]
            if woken >= 0:
                runnable.append(woken)
            i += 1
        position[rank], free[rank] = i, t
    _check_done(position, compiled, times)
    return starts, free


@dataclass(frozen=True)
class _Order:
    """A shape's ops in the order the walk runs them, for ``_flat_finish``.

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
def _order(pp: int, vpp: int, microbatches: int) -> _Order:
    """The walk's op order of a shape (``_walk`` without the floats)."""
    compiled = _compile(pp, vpp, microbatches)
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
    _check_done(position, compiled, times)
    kinds = np.asarray(ops, dtype=np.int64) // microbatches
    return _Order(before=before, inputs=inputs, kinds=kinds, last=last)


def _one_pass_is_cheaper(compiled: _Compiled, ops: int) -> bool:
    """Whether ``_flat_finish`` beats skipping cycles here (either gives the same floats).

    Skipping walks some cycles in every binade the step's times cross before it can
    jump; one pass walks every op, at about half the walk's cost per op. Measured on the
    stage times of ``tests/search``'s random planner-like pipelines (pp 2-16, vpp 1-4,
    512 to 65,536 ops): one pass was the faster up to about 1,024 ops per rank, and for
    the interleaved schedule, whose longer cycles cost more to walk before each jump, up
    to about 128 steady cycles (128 x ``span`` ops per rank): ``MIN_OPS_TO_SKIP`` / 4
    and ``MIN_OPS_TO_SKIP`` / 32 x ``span``.
    """
    if ops > FLAT_MAX_OPS:
        return False
    shape = compiled.shape
    if shape is None:
        return True
    per_rank = len(compiled.ids[0])
    return per_rank <= max(MIN_OPS_TO_SKIP // 4, MIN_OPS_TO_SKIP // 32 * shape.span)


def _flat_finish(times: PipelineTimes) -> list[float]:
    """Each rank's end: the walk's floats, in one pass over ``_order`` (module docstring)."""
    order = _order(times.pp, times.vpp, times.microbatches)
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


def _check_done(position: list[int], compiled: _Compiled, times: PipelineTimes) -> None:
    if any(position[r] != len(compiled.ids[r]) for r in range(times.pp)):
        raise RuntimeError(  # rank_ops guarantees an executable order; this is a bug
            f"pipeline deadlock at op positions {position} for pp={times.pp}, "
            f"vpp={times.vpp}, m={times.microbatches}"
        )


class _Run:
    """The walk's state, advanced in pieces so that steady cycles can be skipped."""

    def __init__(self, times: PipelineTimes, compiled: _Compiled) -> None:
        pp = times.pp
        self.compiled = compiled
        self.durations = times.forward_s + times.backward_s
        m = times.microbatches
        # each rank's op durations in execution order (the walk reads durations[op // m])
        if 2 * pp * times.vpp * m >= NUMPY_OPS:
            table = np.asarray(self.durations, dtype=np.float64)
            self.rank_durations = [table[ids // m].tolist() for ids, _ in compiled.tables]
        else:
            durations = self.durations
            self.rank_durations = [[durations[op // m] for op in ids] for ids in compiled.ids]
        self.lag = times.p2p_s if pp > 1 else 0.0
        self.end = [-1.0] * (2 * pp * times.vpp * times.microbatches)
        self.waiter = [-1] * len(self.end)
        self.position = [0] * pp
        self.free = [0.0] * pp
        self.parked = [False] * pp

    def advance(self, limits: list[int]) -> None:
        """Run every rank up to (not including) position ``limits[rank]`` or its first
        input not yet known; exactly the walk's float operations."""
        ids_of, deps_of = self.compiled.ids, self.compiled.deps
        end, waiter, parked, lag = self.end, self.waiter, self.parked, self.lag
        runnable = [r for r in range(len(limits)) if not parked[r]]
        while runnable:
            rank = runnable.pop()
            ids, deps, durations = ids_of[rank], deps_of[rank], self.rank_durations[rank]
            start, t, stop = self.position[rank], self.free[rank], limits[rank]
            i = stop
            for i in range(start, stop):
                dep = deps[i]
                if dep >= 0:
                    dep_end = end[dep]
                    if dep_end < 0.0:
                        waiter[dep] = rank
                        parked[rank] = True
                        break
                    dep_end += lag
                    if dep_end > t:
                        t = dep_end
                op = ids[i]
                t += durations[i]
                end[op] = t
                woken = waiter[op]
                if woken >= 0:
                    parked[woken] = False
                    runnable.append(woken)
            else:
                i = stop
            self.position[rank], self.free[rank] = i, t


@dataclass(frozen=True)
class _Sweep:
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
def _sweep_plan(pp: int, vpp: int, microbatches: int) -> _Sweep | None:
    """The longest run of positions of :class:`_Sweep`; None if shorter than worth it."""
    tables = _compile(pp, vpp, microbatches).tables
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
    return _Sweep(
        start=start,
        stop=stop,
        low=low,
        keep=min(keep, stop - 1),
        rows=np.where(has[:, start:stop], inside - low, 0).T.copy(),
        cols=dep_ranks.T.copy(),
        durations=(ids[:, start:stop] // microbatches).T.copy(),
        ids=ids,
    )


def _sweep(run: _Run, plan: _Sweep) -> bool:
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


def _finish_times(times: PipelineTimes) -> list[float]:
    """Each rank's end (the last op's end), skipping repeating cycles (module docstring)."""
    compiled = _compile(times.pp, times.vpp, times.microbatches)
    full = [len(ids) for ids in compiled.ids]
    run = None
    if times.pp >= MIN_SWEEP_RANKS and (times.p2p_s > 0.0 or compiled.shape is None):
        run = _Run(times, compiled)
        plan = _sweep_plan(times.pp, times.vpp, times.microbatches)
        if plan is not None and _sweep(run, plan):
            run.advance(full)
            _check_done(run.position, compiled, times)
            return run.free
    if run is None and _one_pass_is_cheaper(compiled, sum(full)):
        return _flat_finish(times)
    steady = None
    if compiled.shape is not None:
        shape = (times.pp, times.vpp, times.microbatches)
        steady = _cycles(*shape, tuple(_offsets(times)))
        if steady is None:
            steady = _cycles(*shape, (0,) * times.pp)
    if steady is None:
        if run is None and sum(full) <= FLAT_MAX_OPS:
            return _flat_finish(times)
        run = run or _Run(times, compiled)
        run.advance(full)
        _check_done(run.position, compiled, times)
        return run.free
    run = run or _Run(times, compiled)
    history: dict[int, list[float]] = {}
    q, next_check, backoff = -1, 0, 1
    window = 2 * MAX_PERIOD + steady.reach + 1  # cycles a test reads
    while q + 1 < steady.cycles:
        ahead = min(next_check - window, steady.cycles - 1)
        if ahead > q:  # no test before then: run those cycles in one go, unrecorded
            q = ahead
            run.advance([w + (q + 1) * steady.span for w in steady.start])
            history.clear()
            continue
        q += 1
        limits = [w + (q + 1) * steady.span for w in steady.start]
        run.advance(limits)
        if run.position != limits:  # an input beyond the cycle: not closed, no jump
            history.clear()
            continue
        offset = steady.shift * q
        history[q] = [run.end[i + offset] for i in steady.base]
        history.pop(q - 2 * MAX_PERIOD - steady.reach, None)
        if q < next_check:
            continue
        cycles, period = _jump(steady, history, q, run)
        if not cycles:
            # period 0: the cheap binade test failed, ask again next cycle; else the slots
            # are not (yet) linear: ask less and less often (a regime can take long)
            if period:
                backoff = min(2 * backoff, MAX_BACKOFF)
            next_check = q + (backoff if period else 1)
            continue
        backoff = 1
        landing = q + cycles
        for k in range(landing - steady.reach + 1, landing + 1):
            # k = k0 + t·c with k0 one of the last c simulated cycles; t·Δ is a multiple
            # of the binade's unit below 2^e and the sum stays in the binade: both exact
            k0 = q - (q - k) % period
            t = (k - k0) // period
            values = [
                v + t * (v - w) for v, w in zip(history[k0], history[k0 - period], strict=True)
            ]
            offset = steady.shift * k
            for i, v in zip(steady.base, values, strict=True):
                run.end[i + offset] = v
            history[k] = values
        for k in [k for k in history if k <= landing - steady.reach]:
            del history[k]
        run.position = [w + (landing + 1) * steady.span for w in steady.start]
        run.free = [history[landing][i] for i in steady.last]
        q = landing
        next_check = q + 1
    run.advance(full)
    _check_done(run.position, compiled, times)
    return run.free


def _jump(steady: _Steady, history: dict[int, list[float]], q: int, run: _Run) -> tuple[int, int]:
    """(cycles to skip, c) when every slot of the last c cycles grows linearly every c
    cycles and keeps its larger input; else (0, 0) if the values straddle a binade (or too
    few cycles are known), (0, 1) if they are not linear.

    Along a rank the end times only grow, so a window's smallest value is in its oldest
    cycle and its largest in cycle q (module docstring).
    """
    reach = steady.reach
    newest = history[q]
    exponent = math.frexp(max(newest))[1]
    for period in range(1, MAX_PERIOD + 1):
        low = q - 2 * period - reach + 1
        if low < steady.first or low not in history:
            return 0, 0
        smallest = min(history[low])
        if not smallest > 0.0 or math.frexp(smallest)[1] != exponent:
            return 0, 0  # a longer window would straddle too
        if _linear(history, q, period, reach):
            cycles = _stable_cycles(steady, history, q, period, run, exponent)
            if cycles:
                return cycles, period
    return 0, 1


def _linear(history: dict[int, list[float]], q: int, period: int, reach: int) -> bool:
    """V(j) - V(j - c) = V(j + c) - V(j) for j in [q - c - D + 1, q - c], slot by slot."""
    for j in range(q - period - reach + 1, q - period + 1):
        earlier = list(map(operator.sub, history[j], history[j - period]))
        if list(map(operator.sub, history[j + period], history[j])) != earlier:
            return False
    return True


def _stable_cycles(
    steady: _Steady,
    history: dict[int, list[float]],
    q: int,
    period: int,
    run: _Run,
    exponent: int,
) -> int:
    """How many cycles (a multiple of c) every slot of the last c cycles keeps its larger
    input and its values stay in the binade; 0 if none (module docstring)."""
    unit = math.ldexp(1.0, exponent - 53)
    if _has_tie(run.durations, run.lag, unit):
        return 0
    lag = run.lag
    horizon = (steady.landing_max - q) // period  # in periods of c cycles
    top = 2**53 - 1
    for k0 in range(q - period + 1, q + 1):
        now = history[k0]
        growth = {
            back: list(map(operator.sub, history[k0 - back], history[k0 - back - period]))
            for back in range(steady.reach + 1)
        }
        deltas = growth[0]
        for delta, (prev, prev_back, dep, dep_back) in zip(deltas, steady.links, strict=True):
            a, grow_a = history[k0 - prev_back][prev], growth[prev_back][prev]
            if dep < 0:
                if delta != grow_a:
                    return 0
                continue
            b, grow_b = history[k0 - dep_back][dep] + lag, growth[dep_back][dep]
            if a == b:
                if delta != max(grow_a, grow_b):
                    return 0
                continue
            if b > a:
                a, grow_a, b, grow_b = b, grow_b, a, grow_a
            if delta != grow_a:
                return 0
            if grow_b > grow_a:  # the smaller input catches up: a + n·Δa ≥ b + n·Δb
                crossing = round((a - b) / unit) // round((grow_b - grow_a) / unit)
                if crossing < horizon:
                    horizon = crossing
                    if horizon < 1:
                        return 0
        # every value stays ≤ 2^exponent - unit: in units, V + n·Δ ≤ 2^53 - 1
        for v, delta in zip(now, deltas, strict=True):
            if delta > 0.0:
                room = (top - round(v / unit)) // round(delta / unit)
                if room < horizon:
                    horizon = room
                    if horizon < 1:
                        return 0
    return horizon * period


def _has_tie(durations: tuple[float, ...], lag: float, unit: float) -> bool:
    """Whether adding some duration to a multiple of ``unit`` can round half-way."""
    for d in (*durations, lag):
        scaled = d / unit
        if scaled - math.floor(scaled) == 0.5:
            return True
    return False


def _busy(times: PipelineTimes) -> tuple[float, ...]:
    """Each rank's op durations summed one by one in execution order (``np.cumsum``
    accumulates sequentially, so these are the walk's sums)."""
    compiled = _compile(times.pp, times.vpp, times.microbatches)
    durations = np.asarray(times.forward_s + times.backward_s, dtype=np.float64)
    m = times.microbatches
    return tuple(float(np.cumsum(durations[ids // m])[-1]) for ids, _ in compiled.tables)


def simulate(times: PipelineTimes) -> PipelineTimeline:
    """Run the schedule's op order against the stage times; see the module docstring."""
    busy = _busy(times)
    # one rank (exact): every input ran earlier on the rank itself and transfers are free,
    # so no op ever waits (its input ended at or before the rank's current time, which
    # only grows) and the walk's end is its running sum of durations, the busy time
    free = list(busy) if times.pp == 1 else _finish_times(times)
    step = max(free)
    busiest = max(busy)
    if busiest > 0.0:
        over_ideal = (step - busiest) / busiest
    elif step == 0.0:  # nothing to do at all
        over_ideal = 0.0
    else:  # no compute, only transfers: no ideal to compare with
        over_ideal = math.inf
    return PipelineTimeline(
        times=times,
        step_s=step,
        busy_s=busy,
        idle_s=tuple(step - b for b in busy),
        bubble_over_ideal=over_ideal,
        bubble_fraction=(step - busiest) / step if step > 0.0 else 0.0,
    )
