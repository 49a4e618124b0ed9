"""The reference walk of a pipeline step: every op of the (interleaved) 1F1B order, in order.

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

How it is computed: since each rank's order is fixed, no event queue is needed. A rank
runs ops until the next one's input is not yet known, then parks on that input; the op
that produces the input wakes it. The op order of a (pp, vpp, microbatches) shape is
compiled once into flat integer tables and cached, because the planner simulates the same
shape with many different stage times.

This module is the reference: ``walk`` visits every op, and ``Run`` is the same walk
advanced in pieces, for the faster paths that skip or sweep parts of the schedule. Each
faster path (``one_pass``, ``skip``, ``sweep``) performs the walk's float operations on
the walk's operands, so it returns the walk's doubles bit for bit
(``tests/cost/test_timeline_paths.py`` compares each with ``walk``).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from planner.cost.schedule import Phase, check_groups, rank_op_arrays

NUMPY_OPS = 2048
"""From this many ops, per-rank duration lists are gathered with numpy."""


@dataclass(frozen=True)
class PipelineTimes:
    """What a pipeline step is simulated from: the schedule shape and per-stage times.

    ``forward_s[k]`` and ``backward_s[k]`` are the times of one micro-batch's forward and
    backward through virtual stage k = chunk·pp + rank (pp·vpp entries each), in seconds.
    ``p2p_s`` is one point-to-point transfer between consecutive virtual stages (the
    activation forward or its gradient backward). ``microbatch_group``: the interleaved
    schedule's micro-batch group (``schedule.rank_ops``'s ``group``; None: pp).
    """

    pp: int
    vpp: int
    microbatches: int
    forward_s: tuple[float, ...]
    backward_s: tuple[float, ...]
    p2p_s: float = 0.0
    microbatch_group: int | None = None

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
        group = self.microbatch_group
        if self.vpp == 1 or group == self.pp:  # the default order: one shape, one cache
            group = None
        object.__setattr__(self, "microbatch_group", group)
        check_groups(pp=self.pp, vpp=self.vpp, microbatches=self.microbatches, group=group)


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
class Compiled:
    """A schedule shape as flat tables. An op's id is (phase·S + stage)·m + micro-batch
    (phase 0 forward, 1 backward; S = pp·vpp), so id // m indexes the durations table
    forward_s + backward_s. ``deps[r][i]`` is the id of the op whose end the i-th op of rank
    r waits for (plus one transfer), or -1. ``tables[r]`` holds rank r's (ids, deps) as
    arrays."""

    ids: tuple[list[int], ...]
    deps: tuple[list[int], ...]
    tables: tuple[tuple[np.ndarray, np.ndarray], ...]


@lru_cache(maxsize=256)
def compile_schedule(pp: int, vpp: int, microbatches: int, group: int | None = None) -> Compiled:
    """The op tables of a (pp, vpp, microbatches[, micro-batch group]) shape
    (``Compiled``), cached."""
    stages, m = pp * vpp, microbatches
    last = stages - 1
    tables = []
    for rank in range(pp):
        backward, microbatch, chunk = rank_op_arrays(
            rank=rank, pp=pp, vpp=vpp, microbatches=microbatches, group=group
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
    return Compiled(
        ids=tuple(ids.tolist() for ids, _ in tables),
        deps=tuple(deps.tolist() for _, deps in tables),
        tables=tuple(tables),
    )


def walk(times: PipelineTimes) -> tuple[list[list[float]], list[float]]:
    """Every op, in order (the module docstring's walk): start times and each rank's end."""
    pp, vpp, m = times.pp, times.vpp, times.microbatches
    compiled = compile_schedule(pp, vpp, m, times.microbatch_group)
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
    check_done(position, compiled, times)
    return starts, free


def check_done(position: list[int], compiled: Compiled, times: PipelineTimes) -> None:
    """Raise if a rank stopped before its last op (a schedule that deadlocks)."""
    if any(position[r] != len(compiled.ids[r]) for r in range(times.pp)):
        raise RuntimeError(  # rank_ops guarantees an executable order; this is a bug
            f"pipeline deadlock at op positions {position} for pp={times.pp}, "
            f"vpp={times.vpp}, m={times.microbatches}"
        )


class Run:
    """The walk's state, advanced in pieces so that steady cycles can be skipped."""

    def __init__(self, times: PipelineTimes, compiled: Compiled) -> None:
        pp = times.pp
        self.times = times
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

    def finish(self) -> list[float]:
        """Walk every rank to its last op; each rank's end."""
        self.advance([len(ids) for ids in self.compiled.ids])
        check_done(self.position, self.compiled, self.times)
        return self.free
