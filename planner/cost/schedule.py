"""Pipeline schedules as op sequences: which forward/backward each rank runs, in order.

A schedule is generated the way Megatron-LM orders it
(``megatron/core/pipeline_parallel/schedules.py``), so the in-flight micro-batches each
stage holds, and later the step time with bubbles, come from simulating that order rather
than from closed forms. The closed forms are the checks (Narayanan et al. 2021, section
2.2): 1F1B rank r holds min(p - r, m) micro-batches at its peak; the interleaved schedule's
first rank holds (1 + (p - 1)/(p v)) times the activations of plain 1F1B.

Terms: p pipeline ranks, v model chunks per rank (virtual stages; v = 1 is plain 1F1B),
m micro-batches, g the interleaved schedule's micro-batch group (Megatron-LM's
``microbatch_group_size_per_vp_stage``, default p): each rank runs g consecutive
micro-batches through one chunk before the next chunk (``get_schedule_table``; the last
group takes the m mod g left over), and warms up with 2 (p - r - 1) + (v - 1) g forwards.
``group=None`` everywhere means g = p. Chunk c of rank r is virtual stage c * p + r.

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


def check_groups(*, pp: int, vpp: int, microbatches: int, group: int | None = None) -> None:
    """Raise ``ValueError`` where Megatron-LM's interleaved schedule refuses the micro-batch
    groups (``forward_backward_pipelining_with_interleaving``): p <= g <= m, and the last
    group (m mod g) empty or at least p. With g = p: m a multiple of p."""
    if vpp == 1:
        return
    if group is None:
        if microbatches % pp != 0:
            raise ValueError(
                f"the interleaved schedule runs micro-batches in groups of pp: {microbatches} "
                f"micro-batches are not a multiple of pp ({pp}), which Megatron-LM's "
                "interleaved schedule requires"
            )
        return
    last = microbatches % group
    if not pp <= group <= microbatches or 0 < last < pp:
        raise ValueError(
            f"the interleaved schedule's micro-batch group ({group}) must lie between pp "
            f"({pp}) and the micro-batches ({microbatches}), and the last group ({last}) be "
            "empty or at least pp, as Megatron-LM's interleaved schedule requires"
        )


def _group(pp: int, group: int | None) -> int:
    return pp if group is None else group


def rank_ops(
    *, rank: int, pp: int, vpp: int, microbatches: int, group: int | None = None
) -> list[PipelineOp]:
    """The ordered ops of pipeline ``rank`` under (interleaved) 1F1B.

    Warm-up runs ``w`` forwards, steady state alternates one forward and one backward,
    cool-down runs the remaining backwards. Megatron's warm-up length is p - r - 1 for
    1F1B and 2 (p - r - 1) + (v - 1) g for the interleaved schedule, capped at the total
    number of forwards.
    """
    check_groups(pp=pp, vpp=vpp, microbatches=microbatches, group=group)
    total = microbatches * vpp
    warmup = warmup_forwards(rank=rank, pp=pp, vpp=vpp, microbatches=microbatches, group=group)
    order = dict(pp=pp, vpp=vpp, microbatches=microbatches, group=group)
    forwards = [_forward_op(k, **order) for k in range(total)]
    backwards = [_backward_op(k, **order) for k in range(total)]
    ops: list[PipelineOp] = forwards[:warmup]
    for step in range(total - warmup):
        ops.append(forwards[warmup + step])
        ops.append(backwards[step])
    ops.extend(backwards[total - warmup :])
    return ops


def _table(
    k: int, *, pp: int, vpp: int, microbatches: int = 0, group: int | None = None
) -> tuple[int, int]:
    """(micro-batch, chunk) of a rank's k-th forward: Megatron-LM's ``get_schedule_table``,
    groups of g micro-batches through every chunk in turn, the last group the m mod g left
    over (``microbatches`` is read only when that group is partial)."""
    g = _group(pp, group)
    span = g * vpp
    full = microbatches // g if group is not None and microbatches % g else None
    if full is None or k < full * span:
        index, within = divmod(k, span)
        return index * g + within % g, within // g
    left = microbatches % g
    k -= full * span
    return full * g + k % left, k // left


def _forward_op(
    k: int, *, pp: int, vpp: int, microbatches: int = 0, group: int | None = None
) -> PipelineOp:
    """The k-th forward of a rank: micro-batches go through chunks in groups of g."""
    if vpp == 1:
        return PipelineOp("F", k, 0)
    microbatch, chunk = _table(k, pp=pp, vpp=vpp, microbatches=microbatches, group=group)
    return PipelineOp("F", microbatch, chunk)


def _backward_op(
    k: int, *, pp: int, vpp: int, microbatches: int = 0, group: int | None = None
) -> PipelineOp:
    """The k-th backward of a rank: chunks in reverse order, micro-batches in groups of g."""
    if vpp == 1:
        return PipelineOp("B", k, 0)
    microbatch, chunk = _table(k, pp=pp, vpp=vpp, microbatches=microbatches, group=group)
    return PipelineOp("B", microbatch, vpp - 1 - chunk)


def warmup_forwards(
    *, rank: int, pp: int, vpp: int, microbatches: int, group: int | None = None
) -> int:
    """Megatron's warm-up length for ``rank`` (see :func:`rank_ops`)."""
    total = microbatches * vpp
    if vpp == 1:
        return min(pp - rank - 1, total)
    return min((pp - rank - 1) * 2 + (vpp - 1) * _group(pp, group), total)


def steady_period(*, pp: int, vpp: int) -> int:
    """Forward/backward pairs after which a rank's steady-state pattern repeats (with the
    micro-batches shifted by ``steady_shift``): 1 for 1F1B, p·v for the interleaved order."""
    return 1 if vpp == 1 else pp * vpp


def steady_shift(*, pp: int, vpp: int) -> int:
    """Micro-batches one steady period advances: 1 for 1F1B, p for the interleaved order."""
    return 1 if vpp == 1 else pp


def rank_op_arrays(
    *, rank: int, pp: int, vpp: int, microbatches: int, group: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rank_ops`` as arrays: (is_backward 0/1, micro-batch, chunk), one entry per op."""
    check_groups(pp=pp, vpp=vpp, microbatches=microbatches, group=group)
    total = microbatches * vpp
    warmup = warmup_forwards(rank=rank, pp=pp, vpp=vpp, microbatches=microbatches, group=group)
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
    g = _group(pp, group)
    number, within = np.divmod(index, g * vpp)
    microbatch = number * g + within % g
    chunk = within // g
    left = microbatches % g
    if group is not None and left:  # the last, partial group (get_schedule_table)
        start = microbatches // g * g * vpp
        rest = np.maximum(index - start, 0)
        partial = index >= start
        microbatch = np.where(partial, microbatches // g * g + rest % left, microbatch)
        chunk = np.where(partial, rest // left, chunk)
    chunk = np.where(backward == 1, vpp - 1 - chunk, chunk)
    return backward, microbatch, chunk


@lru_cache(maxsize=1024)
def _memory_walk(
    rank: int, pp: int, vpp: int, microbatches: int, group: int | None = None
) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...], int, tuple[tuple[int, int], ...]]:
    """(warm-up forward chunks, one steady pattern of (forward chunk, backward chunk)
    pairs, number of whole patterns, the pairs of the last partial pattern). Groups of g
    repeat every g·v pairs; a partial last group breaks the pattern, so the whole steady
    state is then one pattern (walked once)."""
    warmup = warmup_forwards(rank=rank, pp=pp, vpp=vpp, microbatches=microbatches, group=group)
    total = microbatches * vpp
    steady = total - warmup
    period = steady_period(pp=pp, vpp=vpp)
    if vpp > 1 and group is not None:
        g = _group(pp, group)
        period = g * vpp if microbatches % g == 0 else max(steady, 1)
    order = dict(pp=pp, vpp=vpp, microbatches=microbatches, group=group)
    warm = tuple(_forward_op(k, **order).chunk for k in range(warmup))
    pairs = tuple(
        (
            _forward_op(warmup + s, **order).chunk,
            _backward_op(s, **order).chunk,
        )
        for s in range(min(period, steady))
    )
    whole, rest = divmod(steady, period)
    return warm, pairs, whole, pairs[:rest]


def peak_in_flight(
    *,
    rank: int,
    pp: int,
    vpp: int,
    microbatches: int,
    chunk_bytes: list[float] | None = None,
    group: int | None = None,
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
    check_groups(pp=pp, vpp=vpp, microbatches=microbatches, group=group)
    warm, pairs, whole, rest = _memory_walk(rank, pp, vpp, microbatches, group)
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
    *,
    rank: int,
    pp: int,
    vpp: int,
    microbatches: int,
    chunk_bytes: list[float] | None = None,
    group: int | None = None,
) -> float:
    """:func:`peak_in_flight` by walking every op of ``rank_ops`` (the reference)."""
    weights = chunk_bytes if chunk_bytes is not None else [1.0] * vpp
    if len(weights) != vpp:
        raise ValueError(f"chunk_bytes has {len(weights)} entries for vpp = {vpp}")
    held, peak = 0.0, 0.0
    for op in rank_ops(rank=rank, pp=pp, vpp=vpp, microbatches=microbatches, group=group):
        if op.phase == "F":
            held += weights[op.chunk]
            peak = max(peak, held)
        else:
            held -= weights[op.chunk]
    return peak
