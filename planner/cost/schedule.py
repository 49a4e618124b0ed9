"""Pipeline schedules as op sequences: which forward/backward each rank runs, in order.

A schedule is generated the way Megatron-LM orders it
(``megatron/core/pipeline_parallel/schedules.py``), so the in-flight micro-batches each
stage holds, and later the step time with bubbles, come from simulating that order rather
than from closed forms. The closed forms are the checks (Narayanan et al. 2021, section
2.2): 1F1B rank r holds min(p - r, m) micro-batches at its peak; the interleaved schedule's
first rank holds (1 + (p - 1)/(p v)) times the activations of plain 1F1B.

Terms: p pipeline ranks, v model chunks per rank (virtual stages; v = 1 is plain 1F1B),
m micro-batches. Chunk c of rank r is virtual stage c * p + r.

Speed: the planner asks for thousands of schedules with up to thousands of micro-batches.
``rank_op_arrays`` builds a rank's order as numpy arrays (the same order as ``rank_ops``,
without one object per op), and ``peak_in_flight`` stops walking the steady state once it
repeats: a rank's steady state is a fixed pattern of forward/backward pairs (one pair for
1F1B; p·v pairs, one group of p micro-batches through every chunk, for the interleaved
schedule), so the running total at the start of a pattern determines every later value.
When that total repeats a value seen at an earlier pattern start, the rest of the steady
state replays patterns already walked and the cool-down only frees memory, so the peak is
final. The floating-point operations are the ones of the op-by-op walk, in the same order,
so the result is bit-identical (tested against the walk in ``tests/search``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

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
            f"micro-batches are not a multiple of pp ({pp}) (Megatron-LM's "
            "forward_backward_pipelining_with_interleaving)"
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


def warmup_forwards(*, rank: int, pp: int, vpp: int, microbatches: int) -> int:
    """Megatron's warm-up length for ``rank`` (see :func:`rank_ops`)."""
    total = microbatches * vpp
    if vpp == 1:
        return min(pp - rank - 1, total)
    return min((pp - rank - 1) * 2 + (vpp - 1) * pp, total)


def steady_period(*, pp: int, vpp: int) -> int:
    """Forward/backward pairs after which a rank's steady-state pattern repeats (with the
    micro-batches shifted by ``steady_shift``): 1 for 1F1B, p·v for the interleaved order."""
    return 1 if vpp == 1 else pp * vpp


def steady_shift(*, pp: int, vpp: int) -> int:
    """Micro-batches one steady period advances: 1 for 1F1B, p for the interleaved order."""
    return 1 if vpp == 1 else pp


def rank_op_arrays(
    *, rank: int, pp: int, vpp: int, microbatches: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rank_ops`` as arrays: (is_backward 0/1, micro-batch, chunk), one entry per op."""
    if vpp > 1 and microbatches % pp != 0:
        rank_ops(rank=rank, pp=pp, vpp=vpp, microbatches=microbatches)  # raises
    total = microbatches * vpp
    warmup = warmup_forwards(rank=rank, pp=pp, vpp=vpp, microbatches=microbatches)
    steady = total - warmup
    backward = np.concatenate(
        [np.zeros(warmup, np.int64), np.tile([0, 1], steady), np.ones(warmup, np.int64)]
    )
    index = np.concatenate(
        [
            np.arange(warmup),
            np.stack([np.arange(warmup, total), np.arange(steady)], axis=1).ravel(),
            np.arange(steady, total),
        ]
    ).astype(np.int64)
    if vpp == 1:
        return backward, index, np.zeros_like(index)
    group, within = np.divmod(index, pp * vpp)
    microbatch = group * pp + within % pp
    chunk = within // pp
    chunk = np.where(backward == 1, vpp - 1 - chunk, chunk)
    return backward, microbatch, chunk


@lru_cache(maxsize=1024)
def _memory_walk(
    rank: int, pp: int, vpp: int, microbatches: int
) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...], int, tuple[tuple[int, int], ...]]:
    """(warm-up forward chunks, one steady pattern of (forward chunk, backward chunk)
    pairs, number of whole patterns, the pairs of the last partial pattern)."""
    warmup = warmup_forwards(rank=rank, pp=pp, vpp=vpp, microbatches=microbatches)
    total = microbatches * vpp
    period = steady_period(pp=pp, vpp=vpp)
    steady = total - warmup
    warm = tuple(_forward_op(k, pp=pp, vpp=vpp).chunk for k in range(warmup))
    pairs = tuple(
        (
            _forward_op(warmup + s, pp=pp, vpp=vpp).chunk,
            _backward_op(s, pp=pp, vpp=vpp).chunk,
        )
        for s in range(min(period, steady))
    )
    whole, rest = divmod(steady, period)
    return warm, pairs, whole, pairs[:rest]


def peak_in_flight(
    *, rank: int, pp: int, vpp: int, microbatches: int, chunk_bytes: list[float] | None = None
) -> float:
    """The largest activation footprint rank ``rank`` reaches, in units of ``chunk_bytes``.

    A forward adds its chunk's activations and keeps them until that micro-batch's backward
    through the same chunk frees them. ``chunk_bytes[c]`` is what one micro-batch of chunk
    ``c`` keeps; by default 1 per chunk, so the result counts in-flight (micro-batch,
    chunk) pairs. The peak is taken right after a forward (before the backward that
    follows it frees anything), which is when the framework's memory peaks. The steady
    state is walked only until it repeats (module docstring): the same float operations as
    walking every op of ``rank_ops``.
    """
    weights = chunk_bytes if chunk_bytes is not None else [1.0] * vpp
    if len(weights) != vpp:
        raise ValueError(f"chunk_bytes has {len(weights)} entries for vpp = {vpp}")
    if vpp > 1 and microbatches % pp != 0:
        rank_ops(rank=rank, pp=pp, vpp=vpp, microbatches=microbatches)  # raises
    warm, pairs, whole, rest = _memory_walk(rank, pp, vpp, microbatches)
    held, peak = 0.0, 0.0
    for chunk in warm:
        held += weights[chunk]
        peak = max(peak, held)
    seen: set[float] = set()
    for _ in range(whole):
        if held in seen:  # the rest replays patterns already walked: no new peak
            return peak
        seen.add(held)
        for forward, backward in pairs:
            held += weights[forward]
            peak = max(peak, held)
            held -= weights[backward]
    for forward, backward in rest:
        held += weights[forward]
        peak = max(peak, held)
        held -= weights[backward]
    return peak


def peak_in_flight_walk(
    *, rank: int, pp: int, vpp: int, microbatches: int, chunk_bytes: list[float] | None = None
) -> float:
    """:func:`peak_in_flight` by walking every op of ``rank_ops`` (the reference)."""
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
