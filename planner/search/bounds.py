"""A lower bound on a pipelined layout's step time that counts the pipeline's fill and drain.

``predict.step_lower_bound`` bounds the step by the busiest rank's compute: m micro-batches
times its forward and backward per micro-batch. That ignores the bubble, which for deep
pipelines with few micro-batches is a large share of the step, so many layouts pass that
bound and are simulated only to lose. The schedule itself gives a tighter one, for
every rank r of the (interleaved) 1F1B order (``cost.schedule.rank_ops``):

* rank r's first op is the forward of micro-batch 0 through virtual stage r (its chunk
  0), which needs that micro-batch's forward through virtual stages 0 .. r-1 first, one
  after the other: rank r starts no earlier than F_0 + ... + F_{r-1};
* from then on it runs its ops one at a time: it ends no earlier than that plus its busy
  time, m x (its forward + backward per micro-batch, over its chunks);
* its last op is a backward through its chunk 0 (1F1B: of the last micro-batch; the
  interleaved order ends every rank's cool-down with chunk 0, since m is a multiple of
  pp), after which that micro-batch's backward still has to run through virtual stages
  r-1 .. 0: the step ends no earlier than B_{r-1} + ... + B_0 after it.

So step >= max over r of (F_0 + .. + F_{r-1}) + busy_r + (B_0 + .. + B_{r-1}), with F_k and
B_k the compute of one micro-batch through virtual stage k (``stage_work.stage_times``,
the same calls the time model makes; the simulated op adds exposed communication and
blocking sends, never less). Transfers only add to the chain. With one rank it equals
``step_lower_bound``; it is never below it (the busiest rank's term is at least its
busy time). Under an expert placement's routing skew the straggler's times replace the
stage's; the bound then falls back to ``step_lower_bound``.
"""

from __future__ import annotations

from planner.predict import Prepared, chunk_compute_times, step_lower_bound


def pipeline_lower_bound(prepared: Prepared) -> float:
    """The bound of the module docstring, in seconds (the float sums run in another order
    than the simulation's: callers compare with a margin, as for ``step_lower_bound``)."""
    layout = prepared.layout
    if layout.pp == 1 or prepared.expert_load is not None:
        return step_lower_bound(prepared)
    ctx = prepared.ctx
    compute = chunk_compute_times(prepared)
    vpp = layout.vpp or 1
    head = tail = best = 0.0
    for rank in range(layout.pp):
        busy = ctx.microbatches * sum(
            compute[c * layout.pp + rank].forward_s + compute[c * layout.pp + rank].backward_s
            for c in range(vpp)
        )
        best = max(best, head + busy + tail)
        head += compute[rank].forward_s
        tail += compute[rank].backward_s
    return best
