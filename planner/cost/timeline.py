"""Pipeline step time as a discrete-event timeline of the (interleaved) 1F1B op order.

Each pipeline rank runs the ops ``schedule.rank_ops`` gives, in exactly that order, one at
a time; an op starts when its rank is free and its input (the previous virtual stage's
forward, or the next one's backward, plus one point-to-point transfer) has arrived. The
step ends when the last op on any rank ends. ``simulate(PipelineTimes(...))`` returns the
step, each rank's busy and idle time, and the bubble two ways (``PipelineTimeline``).

The walk over every op (``planner.cost._timeline.walk``) is the reference; for the
planner's thousands of candidate schedules ``simulate`` takes a faster path that gives
the same doubles: one pass over a recorded op order, a jump over steady cycles that grow
linearly, or a sweep of array operations over deep pipelines. Each path's module
docstring says why it is exact.
"""

from planner.cost._timeline.simulate import PipelineTimeline, simulate
from planner.cost._timeline.walk import OpTiming, PipelineTimes

__all__ = ["OpTiming", "PipelineTimeline", "PipelineTimes", "simulate"]
