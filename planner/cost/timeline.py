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
that produces the input wakes it. Every op is visited once, so a step costs O(p·v·m)
plain list operations. The op order of a (pp, vpp, microbatches) shape is compiled once
into flat integer tables and cached, because the planner simulates the same shape with
many different stage times.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from functools import cached_property, lru_cache

from planner.cost.schedule import Phase, rank_ops


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
                f"{self.microbatches} micro-batches are not a multiple of pp ({self.pp}) "
                f"(Megatron rule 24)"
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
    order starts; ``end_s`` and the ``ops`` records are derived on first access, since the
    planner rarely needs them and a large pipeline has a million ops.
    """

    times: PipelineTimes
    step_s: float
    busy_s: tuple[float, ...]
    idle_s: tuple[float, ...]
    bubble_over_ideal: float
    bubble_fraction: float
    start_s: tuple[tuple[float, ...], ...]

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
class _Compiled:
    """A schedule shape as flat tables. An op's id is (phase·S + stage)·m + micro-batch
    (phase 0 forward, 1 backward; S = pp·vpp), so id // m indexes the durations table
    forward_s + backward_s. ``deps[r][i]`` is the id of the op whose end the i-th op of rank
    r waits for (plus one transfer), or -1."""

    ids: tuple[tuple[int, ...], ...]
    deps: tuple[tuple[int, ...], ...]


@lru_cache(maxsize=16)
def _compile(pp: int, vpp: int, microbatches: int) -> _Compiled:
    stages, m = pp * vpp, microbatches
    last = stages - 1
    ids, deps = [], []
    for rank in range(pp):
        rank_ids, rank_deps = [], []
        for op in rank_ops(rank=rank, pp=pp, vpp=vpp, microbatches=m):
            stage = op.chunk * pp + rank
            if op.phase == "F":
                rank_ids.append(stage * m + op.microbatch)
                rank_deps.append(-1 if stage == 0 else (stage - 1) * m + op.microbatch)
            else:
                rank_ids.append((stages + stage) * m + op.microbatch)
                # the last stage's backward waits on its own forward: earlier on this rank
                rank_deps.append(-1 if stage == last else (stages + stage + 1) * m + op.microbatch)
        ids.append(tuple(rank_ids))
        deps.append(tuple(rank_deps))
    return _Compiled(ids=tuple(ids), deps=tuple(deps))


def simulate(times: PipelineTimes) -> PipelineTimeline:
    """Run the schedule's op order against the stage times; see the module docstring."""
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
    # summed op by op in execution order, so that step ≥ busy holds exactly in floats
    busy = [0.0] * pp
    runnable = list(range(pp))
    while runnable:
        rank = runnable.pop()
        ids, deps = compiled.ids[rank], compiled.deps[rank]
        rank_starts = starts[rank]
        i, t, b, n = position[rank], free[rank], busy[rank], len(ids)
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
            duration = durations[op // m]
            t += duration
            b += duration
            end[op] = t
            woken = waiter[op]
            if woken >= 0:
                runnable.append(woken)
            i += 1
        position[rank], free[rank], busy[rank] = i, t, b
    if any(position[r] != len(compiled.ids[r]) for r in range(pp)):
        raise RuntimeError(  # rank_ops guarantees an executable order; this is a bug
            f"pipeline deadlock at op positions {position} for pp={pp}, vpp={vpp}, m={m}"
        )

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
        busy_s=tuple(busy),
        idle_s=tuple(step - b for b in busy),
        bubble_over_ideal=over_ideal,
        bubble_fraction=(step - busiest) / step if step > 0.0 else 0.0,
        start_s=tuple(tuple(s) for s in starts),
    )
