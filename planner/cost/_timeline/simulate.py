"""``simulate``: the step of a pipeline schedule, by the cheapest exact path.

Every path returns the reference walk's doubles (``walk``); which one runs depends only
on the schedule's size and shape:

- one rank: with pp = 1 nothing ever waits, so the walk's end is the busy time (summed the
  same way); ``simulate`` takes it without walking;
- deep pipelines (``sweep.MIN_SWEEP_RANKS`` ranks or more) whose steady state drifts
  (transfers) or does not repeat: the sweep of array operations (``sweep``);
- small schedules: the walk in one pass (``one_pass``), where it is cheaper than skipping
  (``one_pass_is_cheaper``);
- long steady states: the walk, jumping over the cycles that grow linearly (``skip``);
- otherwise the walk itself, in one pass where the schedule is small enough to record;
- a micro-batch group other than pp (Megatron-LM's
  ``--microbatch-group-size-per-virtual-pipeline-stage``): the walk itself (the faster
  paths know the default order's cycles only).

Bubble, two ways (both relative to the busiest rank, which sets the ideal step):

- ``bubble_over_ideal`` = (step - busy_max) / busy_max: Narayanan et al. 2021 ("Efficient
  Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", SC'21), section
  2.2.1, define the bubble fraction as bubble time over ideal compute time m·(t_f + t_b),
  which is (p - 1)/m for 1F1B and (p - 1)/(v·m) for the interleaved schedule with uniform
  stages and free transfers.
- ``bubble_fraction`` = (step - busy_max) / step: the share of the step the busiest rank
  sits idle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from planner.cost._timeline import cycles, one_pass, skip, sweep
from planner.cost._timeline.walk import (
    Compiled,
    OpTiming,
    PipelineTimes,
    Run,
    compile_schedule,
    walk,
)
from planner.cost.schedule import rank_ops


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
        starts, _ = walk(self.times)
        return tuple(tuple(s) for s in starts)

    @cached_property
    def end_s(self) -> tuple[tuple[float, ...], ...]:
        """When each op ends, laid out like ``start_s`` (start plus duration, as simulated)."""
        durations = self.times.forward_s + self.times.backward_s
        times = self.times
        compiled = compile_schedule(times.pp, times.vpp, times.microbatches, times.microbatch_group)
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
            order = rank_ops(
                rank=rank, pp=pp, vpp=vpp, microbatches=m, group=self.times.microbatch_group
            )
            timed = zip(order, self.start_s[rank], self.end_s[rank], strict=True)
            for op, start, end in timed:
                stage = op.chunk * pp + rank
                records.append(OpTiming(rank, op.phase, op.microbatch, op.chunk, stage, start, end))
        return tuple(records)


def finish_times(times: PipelineTimes) -> list[float]:
    """Each rank's end, by the path the module docstring describes (pp > 1)."""
    if times.microbatch_group is not None:  # the faster paths know the default groups only
        compiled = compile_schedule(times.pp, times.vpp, times.microbatches, times.microbatch_group)
        return Run(times, compiled).finish()
    compiled = compile_schedule(times.pp, times.vpp, times.microbatches)
    shape = cycles.shape_of(times.pp, times.vpp, times.microbatches)
    ops = sum(len(ids) for ids in compiled.ids)
    run = None
    if times.pp >= sweep.MIN_SWEEP_RANKS and (times.p2p_s > 0.0 or shape is None):
        plan = sweep.sweep_plan(times.pp, times.vpp, times.microbatches)
        if plan is not None:
            run = Run(times, compiled)
            if sweep.sweep(run, plan):
                return run.finish()
        # no sweep: the walk has not started, so the one-pass walk may still take it
    if run is None and one_pass_is_cheaper(compiled, shape, ops):
        return one_pass.flat_finish(times)
    steady = cycles.steady_for(times)
    if steady is None:
        if run is None and ops <= one_pass.FLAT_MAX_OPS:
            return one_pass.flat_finish(times)
        return (run or Run(times, compiled)).finish()
    return skip.skip_finish(run or Run(times, compiled), steady)


def one_pass_is_cheaper(compiled: Compiled, shape: cycles.Shape | None, ops: int) -> bool:
    """Whether ``one_pass.flat_finish`` beats skipping cycles here (both: the same floats).

    Skipping walks some cycles in every binade the step's times cross before it can
    jump; one pass walks every op, at about half the walk's cost per op. Measured on the
    stage times of the random planner-like pipelines of ``tests/cost/test_timeline_paths.py``
    (pp 2-16, vpp 1-4, 512 to 65,536 ops): one pass was the faster up to about 1,024 ops
    per rank, and for the interleaved schedule, whose longer cycles cost more to walk
    before each jump, up to about 128 steady cycles (128 x ``span`` ops per rank):
    ``MIN_OPS_TO_SKIP`` / 4 and ``MIN_OPS_TO_SKIP`` / 32 x ``span``.
    """
    if ops > one_pass.FLAT_MAX_OPS:
        return False
    if shape is None:
        return True
    per_rank = len(compiled.ids[0])
    least = cycles.MIN_OPS_TO_SKIP
    return per_rank <= max(least // 4, least // 32 * shape.span)


def busy_times(times: PipelineTimes) -> tuple[float, ...]:
    """Each rank's op durations summed one by one in execution order (``np.cumsum``
    accumulates sequentially, so these are the walk's sums)."""
    compiled = compile_schedule(times.pp, times.vpp, times.microbatches, times.microbatch_group)
    durations = np.asarray(times.forward_s + times.backward_s, dtype=np.float64)
    m = times.microbatches
    return tuple(float(np.cumsum(durations[ids // m])[-1]) for ids, _ in compiled.tables)


def simulate(times: PipelineTimes) -> PipelineTimeline:
    """Run the schedule's op order against the stage times; see the module docstring."""
    busy = busy_times(times)
    # one rank (exact): every input ran earlier on the rank itself and transfers are free,
    # so no op ever waits (its input ended at or before the rank's current time, which
    # only grows) and the walk's end is its running sum of durations, the busy time
    free = list(busy) if times.pp == 1 else finish_times(times)
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
