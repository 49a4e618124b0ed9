"""Pipeline op orders (rank_ops) and in-flight peaks (peak_in_flight).

Closed forms from Narayanan et al. 2021, section 2.2, and Megatron-LM's
megatron/training/theoretical_memory_usage.py (the interleaving factor 1 + (p - 1)/(p·v)):
under 1F1B rank r holds min(p - r, m) micro-batches at its peak; the interleaved
schedule's first rank runs 2(p - 1) + (v - 1)p warm-up forwards and one more before its
first backward, so it holds v·p + p - 1 chunk-micro-batches, which is (v·p + p - 1)/v =
p·(1 + (p - 1)/(p·v)) micro-batches' worth of its layers.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.cost.schedule import PipelineOp, peak_in_flight, rank_ops


def F(microbatch: int, chunk: int = 0) -> PipelineOp:
    return PipelineOp("F", microbatch, chunk)


def B(microbatch: int, chunk: int = 0) -> PipelineOp:
    return PipelineOp("B", microbatch, chunk)


def assert_complete(ops: list[PipelineOp], *, microbatches: int, vpp: int) -> None:
    """Each (micro-batch, chunk) runs forward once and backward once, backward after."""
    pairs = {(mb, chunk) for mb in range(microbatches) for chunk in range(vpp)}
    forward_at = {(op.microbatch, op.chunk): i for i, op in enumerate(ops) if op.phase == "F"}
    backward_at = {(op.microbatch, op.chunk): i for i, op in enumerate(ops) if op.phase == "B"}
    assert len(ops) == 2 * len(pairs)
    assert set(forward_at) == pairs and set(backward_at) == pairs  # each once: len check above
    for pair in pairs:
        assert forward_at[pair] < backward_at[pair], pair


def assert_executable(*, pp: int, vpp: int, microbatches: int) -> None:
    """All ranks, each running its ops in order, finish without waiting on each other forever.

    Virtual stage of chunk c on rank r is c·p + r. A forward needs the previous virtual
    stage's forward of the same micro-batch; a backward needs its own forward and the next
    virtual stage's backward.
    """
    last = pp * vpp - 1
    orders = [rank_ops(rank=r, pp=pp, vpp=vpp, microbatches=microbatches) for r in range(pp)]
    done: set[tuple[str, int, int]] = set()
    position = [0] * pp
    while any(position[r] < len(orders[r]) for r in range(pp)):
        progressed = False
        for rank in range(pp):
            if position[rank] == len(orders[rank]):
                continue
            op = orders[rank][position[rank]]
            stage = op.chunk * pp + rank
            if op.phase == "F":
                ready = stage == 0 or ("F", op.microbatch, stage - 1) in done
            else:
                ready = ("F", op.microbatch, stage) in done and (
                    stage == last or ("B", op.microbatch, stage + 1) in done
                )
            if ready:
                done.add((op.phase, op.microbatch, stage))
                position[rank] += 1
                progressed = True
        assert progressed, f"deadlock at {position} for p={pp} v={vpp} m={microbatches}"


def test_1f1b_order_by_hand() -> None:
    # p = 4, rank 1, m = 5: p - r - 1 = 2 warm-up forwards, 3 steady F/B pairs, 2 cool-down
    assert rank_ops(rank=1, pp=4, vpp=1, microbatches=5) == [
        F(0), F(1), F(2), B(0), F(3), B(1), F(4), B(2), B(3), B(4),
    ]  # fmt: skip
    # the last rank has no warm-up: strict alternation
    assert rank_ops(rank=3, pp=4, vpp=1, microbatches=2) == [F(0), B(0), F(1), B(1)]
    # fewer micro-batches than warm-up slots: all forwards, then all backwards
    assert rank_ops(rank=0, pp=4, vpp=1, microbatches=2) == [F(0), F(1), B(0), B(1)]


def test_interleaved_order_by_hand() -> None:
    # p = 2, v = 2, m = 4, rank 0: warm-up 2(p - 1) + (v - 1)p = 4 forwards. Forwards go
    # through chunk 0 then chunk 1 in groups of p micro-batches; backwards through the
    # chunks in reverse (Megatron's get_model_chunk_id).
    assert rank_ops(rank=0, pp=2, vpp=2, microbatches=4) == [
        F(0, 0), F(1, 0), F(0, 1), F(1, 1),
        F(2, 0), B(0, 1), F(3, 0), B(1, 1), F(2, 1), B(0, 0), F(3, 1), B(1, 0),
        B(2, 1), B(3, 1), B(2, 0), B(3, 0),
    ]  # fmt: skip
    # peak after the fifth forward: 5 = v·p + p - 1
    assert peak_in_flight(rank=0, pp=2, vpp=2, microbatches=4) == 5


@pytest.mark.parametrize(
    ("pp", "microbatches"),
    [(1, 1), (1, 6), (2, 1), (2, 2), (2, 7), (3, 2), (4, 1), (4, 3), (4, 4), (4, 9),
     (8, 5), (8, 8), (8, 64), (16, 3), (16, 128)],
)  # fmt: skip
def test_1f1b_rank_holds_min_of_remaining_stages_and_microbatches(
    pp: int, microbatches: int
) -> None:
    for rank in range(pp):
        expected = min(pp - rank, microbatches)
        assert peak_in_flight(rank=rank, pp=pp, vpp=1, microbatches=microbatches) == expected


@pytest.mark.parametrize("pp", [2, 4, 8])
@pytest.mark.parametrize("vpp", [2, 3, 4])
@pytest.mark.parametrize("groups", [2, 3, 8])
def test_interleaved_first_rank_holds_vp_plus_p_minus_one(pp: int, vpp: int, groups: int) -> None:
    microbatches = groups * pp  # m ≥ 2p: the warm-up fits in the m·v forwards
    peak = peak_in_flight(rank=0, pp=pp, vpp=vpp, microbatches=microbatches)
    assert peak == vpp * pp + pp - 1
    plain = peak_in_flight(rank=0, pp=pp, vpp=1, microbatches=microbatches)
    assert plain == pp
    # a chunk holds 1/v of the rank's layers: the activation factor over plain 1F1B
    assert Fraction(int(peak), vpp) / int(plain) == 1 + Fraction(pp - 1, pp * vpp)


@pytest.mark.parametrize(("pp", "vpp"), [(2, 2), (4, 2), (4, 4), (8, 3)])
def test_interleaved_with_m_equal_p_runs_every_forward_first(pp: int, vpp: int) -> None:
    # Megatron: num_microbatches == pp -> all_warmup_microbatches; rank 0 holds all p·v
    assert peak_in_flight(rank=0, pp=pp, vpp=vpp, microbatches=pp) == pp * vpp
    ops = rank_ops(rank=0, pp=pp, vpp=vpp, microbatches=pp)
    assert [op.phase for op in ops] == ["F"] * (pp * vpp) + ["B"] * (pp * vpp)


def test_chunk_bytes_weight_the_peak() -> None:
    # p = 2, v = 2, m = 4, rank 0 with chunk 0 = 1 and chunk 1 = 10 (order as above):
    # F00 1, F10 2, F01 12, F11 22, F20 23 | B01 13, F30 14, B11 4, F21 14, B00 13, F31 23
    peak = peak_in_flight(rank=0, pp=2, vpp=2, microbatches=4, chunk_bytes=[1.0, 10.0])
    assert peak == 23
    # 1F1B, p = 3, rank 0 with 2.5 per micro-batch: min(3, m) micro-batches
    assert peak_in_flight(rank=0, pp=3, vpp=1, microbatches=7, chunk_bytes=[2.5]) == 7.5


def test_chunk_bytes_must_match_vpp() -> None:
    with pytest.raises(ValueError, match="2 entries for vpp = 3"):
        peak_in_flight(rank=0, pp=2, vpp=3, microbatches=4, chunk_bytes=[1.0, 1.0])


@st.composite
def schedules(draw: st.DrawFn) -> tuple[int, int, int]:
    pp = draw(st.integers(min_value=1, max_value=6))
    vpp = 1 if pp == 1 else draw(st.integers(min_value=1, max_value=4))
    if vpp == 1:
        microbatches = draw(st.integers(min_value=1, max_value=14))
    else:  # Megatron's interleaved schedule needs m a multiple of p
        microbatches = pp * draw(st.integers(min_value=1, max_value=4))
    return pp, vpp, microbatches


@settings(max_examples=150, deadline=None)
@given(schedules())
def test_every_schedule_is_complete_ordered_and_executable(case: tuple[int, int, int]) -> None:
    pp, vpp, microbatches = case
    peaks = []
    for rank in range(pp):
        ops = rank_ops(rank=rank, pp=pp, vpp=vpp, microbatches=microbatches)
        assert_complete(ops, microbatches=microbatches, vpp=vpp)
        peak = peak_in_flight(rank=rank, pp=pp, vpp=vpp, microbatches=microbatches)
        assert 1 <= peak <= microbatches * vpp
        peaks.append(peak)
    # earlier ranks never hold less than later ones
    assert peaks == sorted(peaks, reverse=True)
    assert_executable(pp=pp, vpp=vpp, microbatches=microbatches)


def test_interleaved_partial_group_is_refused_or_complete() -> None:
    # Megatron (interleaved schedule) raises for m % p != 0 with the default group size p; either
    # refusing or producing a complete schedule is acceptable, inventing ops is not.
    try:
        ops = rank_ops(rank=0, pp=4, vpp=2, microbatches=6)
    except ValueError:
        return
    assert_complete(ops, microbatches=6, vpp=2)
