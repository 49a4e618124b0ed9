"""Pipeline schedules as op sequences: which forward/backward each rank runs, in order.

A schedule is generated the way Megatron-LM orders it
(``megatron/core/pipeline_parallel/schedules.py``), so the in-flight micro-batches each
stage holds, and later the step time with bubbles, come from simulating that order rather
than from closed forms. The closed forms are the checks (Narayanan et al. 2021, section
2.2): 1F1B rank r holds min(p - r, m) micro-batches at its peak; the interleaved schedule's
first rank holds (1 + (p - 1)/(p v)) times the activations of plain 1F1B.

Terms: p pipeline ranks, v model chunks per rank (virtual stages; v = 1 is plain 1F1B),
m micro-batches. Chunk c of rank r is virtual stage c * p + r.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Phase = Literal["F", "B"]


@dataclass(frozen=True)
class PipelineOp:
    """One forward or backward pass of one micro-batch through one model chunk."""

    phase: Phase
    microbatch: int
    chunk: int


def rank_ops(*, rank: int, pp: int, vpp: int, microbatches: int) -> list[PipelineOp]:
    """The ordered ops of pipeline ``rank`` under (interleaved) 1F1B.

    Warm-up runs ``w`` forwards, steady state alternates one forward and one backward,
    cool-down runs the remaining backwards. Megatron's warm-up length is p - r - 1 for
    1F1B and 2 (p - r - 1) + (v - 1) p for the interleaved schedule, capped at the total
    number of forwards.
    """
    if vpp > 1 and microbatches % pp != 0:
        raise ValueError(
            f"the interleaved schedule runs micro-batches in groups of pp: {microbatches} "
            f"micro-batches are not a multiple of pp ({pp}) (Megatron rule 24)"
        )
    total = microbatches * vpp
    if vpp == 1:
        warmup = min(pp - rank - 1, total)
    else:
        warmup = min((pp - rank - 1) * 2 + (vpp - 1) * pp, total)
    forwards = [_forward_op(k, pp=pp, vpp=vpp) for k in range(total)]
    backwards = [_backward_op(k, pp=pp, vpp=vpp) for k in range(total)]
    ops: list[PipelineOp] = forwards[:warmup]
    for step in range(total - warmup):
        ops.append(forwards[warmup + step])
        ops.append(backwards[step])
    ops.extend(backwards[total - warmup :])
    return ops


def _forward_op(k: int, *, pp: int, vpp: int) -> PipelineOp:
    """The k-th forward of a rank: micro-batches go through chunks in groups of p."""
    if vpp == 1:
        return PipelineOp("F", k, 0)
    group, within = divmod(k, pp * vpp)
    return PipelineOp("F", group * pp + within % pp, within // pp)


def _backward_op(k: int, *, pp: int, vpp: int) -> PipelineOp:
    """The k-th backward of a rank: chunks in reverse order, micro-batches in groups of p."""
    if vpp == 1:
        return PipelineOp("B", k, 0)
    group, within = divmod(k, pp * vpp)
    return PipelineOp("B", group * pp + within % pp, vpp - 1 - within // pp)


def peak_in_flight(
    *, rank: int, pp: int, vpp: int, microbatches: int, chunk_bytes: list[float] | None = None
) -> float:
    """The largest activation footprint rank ``rank`` reaches, in units of ``chunk_bytes``.

    A forward adds its chunk's activations and keeps them until that micro-batch's backward
    through the same chunk frees them. ``chunk_bytes[c]`` is what one micro-batch of chunk
    ``c`` keeps; by default 1 per chunk, so the result counts in-flight (micro-batch,
    chunk) pairs. The peak is taken right after a forward (before the backward that
    follows it frees anything), which is when the framework's memory peaks.
    """
    weights = chunk_bytes if chunk_bytes is not None else [1.0] * vpp
    if len(weights) != vpp:
        raise ValueError(f"chunk_bytes has {len(weights)} entries for vpp = {vpp}")
    held, peak = 0.0, 0.0
    for op in rank_ops(rank=rank, pp=pp, vpp=vpp, microbatches=microbatches):
        if op.phase == "F":
            held += weights[op.chunk]
            peak = max(peak, held)
        else:
            held -= weights[op.chunk]
    return peak
