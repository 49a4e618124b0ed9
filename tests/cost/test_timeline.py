"""Pipeline timeline (simulate): step time, busy/idle time and bubble of the 1F1B orders.

Closed forms: Narayanan et al. 2021 ("Efficient Large-Scale Language Model Training on GPU
Clusters Using Megatron-LM", SC'21), section 2.2: with uniform stages and free transfers
1F1B takes (m + p - 1)(t_f + t_b), a bubble of (p - 1)/m over the ideal m(t_f + t_b), and
the interleaved schedule with v chunks of t/v each cuts the bubble to (p - 1)/(v·m).
Durations are multiples of 1/4 where a test compares floats exactly, so every sum is exact.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.cost.schedule import rank_ops
from planner.cost.timeline import OpTiming, PipelineTimeline, PipelineTimes, simulate


def uniform(
    pp: int,
    microbatches: int,
    *,
    vpp: int = 1,
    forward: float = 1.0,
    backward: float = 2.0,
    p2p: float = 0.0,
) -> PipelineTimeline:
    stages = pp * vpp
    return simulate(
        PipelineTimes(pp, vpp, microbatches, (forward,) * stages, (backward,) * stages, p2p)
    )


def reference_starts(times: PipelineTimes) -> list[list[float]]:
    """An independent simulator: sweep the ranks, run a rank's next op once its input is
    known, until every op has run. Same float operations as ``simulate``, so the start times
    must agree exactly."""
    pp, vpp, m = times.pp, times.vpp, times.microbatches
    last = pp * vpp - 1
    lag = times.p2p_s if pp > 1 else 0.0
    orders = [rank_ops(rank=r, pp=pp, vpp=vpp, microbatches=m) for r in range(pp)]
    end: dict[tuple[str, int, int], float] = {}
    starts: list[list[float]] = [[] for _ in range(pp)]
    free = [0.0] * pp
    while any(len(starts[r]) < len(orders[r]) for r in range(pp)):
        progressed = False
        for rank in range(pp):
            if len(starts[rank]) == len(orders[rank]):
                continue
            op = orders[rank][len(starts[rank])]
            stage = op.chunk * pp + rank
            if op.phase == "F":
                dep, wait = (None, 0.0) if stage == 0 else (("F", op.microbatch, stage - 1), lag)
                duration = times.forward_s[stage]
            else:
                dep, wait = (
                    (("F", op.microbatch, stage), 0.0)
                    if stage == last
                    else (("B", op.microbatch, stage + 1), lag)
                )
                duration = times.backward_s[stage]
            if dep is not None and dep not in end:
                continue
            start = free[rank] if dep is None else max(free[rank], end[dep] + wait)
            starts[rank].append(start)
            free[rank] = start + duration
            end[(op.phase, op.microbatch, stage)] = free[rank]
            progressed = True
        assert progressed, "reference deadlock"
    return starts


# --- closed forms with uniform stages ---------------------------------------------------


@pytest.mark.parametrize(
    ("pp", "microbatches"),
    [(2, 2), (2, 8), (4, 4), (4, 8), (4, 9), (8, 8), (8, 64), (16, 48), (32, 256),
     (4, 1), (4, 3), (8, 2), (8, 5), (16, 7)],  # the last five: m < p
)  # fmt: skip
def test_1f1b_uniform_bubble_is_p_minus_one_over_m(pp: int, microbatches: int) -> None:
    timeline = uniform(pp, microbatches)
    assert timeline.step_s == (microbatches + pp - 1) * 3.0
    assert timeline.busy_s == (microbatches * 3.0,) * pp
    # (p - 1)·3 / (m·3) and (p - 1)/m are the same rational, correctly rounded both times
    assert timeline.bubble_over_ideal == (pp - 1) / microbatches
    assert timeline.bubble_fraction == (pp - 1) / (microbatches + pp - 1)
    assert timeline.idle_s == ((pp - 1) * 3.0,) * pp


@pytest.mark.parametrize("pp", [2, 4, 8])
@pytest.mark.parametrize("vpp", [2, 3, 4])
@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_interleaved_uniform_bubble_is_p_minus_one_over_v_m(pp: int, vpp: int, groups: int) -> None:
    microbatches = groups * pp  # Megatron's interleaved schedule needs m a multiple of p
    # a rank's layers take t_f = 1, t_b = 2; each of its v chunks takes a v-th of that
    timeline = uniform(pp, microbatches, vpp=vpp, forward=1.0 / vpp, backward=2.0 / vpp)
    assert timeline.bubble_over_ideal == pytest.approx(
        (pp - 1) / (vpp * microbatches), rel=1e-9, abs=1e-12
    )
    assert timeline.step_s == pytest.approx(3.0 * (microbatches + (pp - 1) / vpp), rel=1e-9)
    plain = uniform(pp, microbatches)
    assert timeline.step_s < plain.step_s


@pytest.mark.parametrize("vpp", [1, 2, 3])
@pytest.mark.parametrize("microbatches", [1, 2, 7])
def test_one_stage_runs_back_to_back(vpp: int, microbatches: int) -> None:
    # pp = 1: no bubble, and transfers between chunks of the same rank are free
    forward, backward = (0.25, 0.5, 1.0)[:vpp], (0.75, 1.25, 2.0)[:vpp]
    timeline = simulate(PipelineTimes(1, vpp, microbatches, forward, backward, p2p_s=5.0))
    assert timeline.step_s == microbatches * (sum(forward) + sum(backward))
    assert timeline.bubble_over_ideal == 0.0
    assert timeline.idle_s == (0.0,)


def test_hand_timed_two_stages_three_microbatches_with_transfers() -> None:
    # p = 2, m = 3, t_f = 1, t_b = 2, transfer c = 0.25. Orders: rank 0 F0 F1 B0 F2 B1 B2
    # (one warm-up forward), rank 1 F0 B0 F1 B1 F2 B2. By hand, start = max(rank free,
    # input end + c):
    #   r0 F0 0, F1 1                       (ends 1, 2)
    #   r1 F0 1+c, B0 2+c, F1 4+c            (F1's input arrived at 2+c; ends 2+c, 4+c, 5+c)
    #   r0 B0 4+2c (B0 of r1 ended 4+c), F2 6+2c               (ends 6+2c, 7+2c)
    #   r1 B1 5+c, F2 7+3c (input 7+2c + c), B2 8+3c           (ends 7+c, 8+3c, 10+3c)
    #   r0 B1 7+2c (max(7+2c, 7+c+c)), B2 10+4c                (ends 9+2c, 12+4c)
    # step = 12 + 4c: four transfers on the critical path, not 2(p - 1) = 2.
    c = 0.25
    timeline = uniform(2, 3, p2p=c)
    assert timeline.start_s == (
        (0.0, 1.0, 4 + 2 * c, 6 + 2 * c, 7 + 2 * c, 10 + 4 * c),
        (1 + c, 2 + c, 4 + c, 5 + c, 7 + 3 * c, 8 + 3 * c),
    )
    assert timeline.step_s == 12 + 4 * c
    assert timeline.busy_s == (9.0, 9.0)
    assert timeline.idle_s == (3 + 4 * c, 3 + 4 * c)


def one_f_one_b_transfers(pp: int, microbatches: int) -> int:
    """Transfers on the critical path of uniform 1F1B: 2[(m + p - 1) - ceil((m + p - 1)/p)].

    Derivation. Count the step in slots of one forward plus one backward: with uniform
    stages a critical path covers m + p - 1 slots (the c = 0 step). Along it the path dives
    from rank 0 to some rank k and back: down with a forward, up with a backward, then on
    rank 0 the next op after that backward is a later micro-batch's forward. A dive of depth
    k covers k + 1 slots and crosses 2k transfers, because 1F1B keeps only p - r - 1
    forwards ahead on rank r, so rank r's next forward waits behind the backward it receives
    from r + 1 and the round trip is never hidden. (The hand-timed p = 2, m = 3 case above:
    two dives of depth 1.) With d dives, depth at most p - 1, the transfers are
    2[(m + p - 1) - d], largest with the fewest dives, d = ceil((m + p - 1)/p). For m ≤ 2 this
    is the fill-and-drain 2(p - 1); for large m it is about 2(p - 1)/p per micro-batch, the
    mean of the longest cycle (F down through all p ranks and B back up covers p
    micro-batches and 2(p - 1) transfers). Fewer slots never allow more transfers, so the
    count does not depend on c: the step is linear in c.
    """
    slots = microbatches + pp - 1
    return 2 * (slots - math.ceil(slots / pp))


@pytest.mark.parametrize("pp", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("microbatches", [1, 2, 3, 4, 5, 7, 8, 16, 33])
@pytest.mark.parametrize(("forward", "backward"), [(1.0, 2.0), (1.0, 1.0), (2.0, 0.5)])
@pytest.mark.parametrize("p2p", [0.25, 1.0, 16.0])
def test_1f1b_transfers_on_the_critical_path(
    pp: int, microbatches: int, forward: float, backward: float, p2p: float
) -> None:
    free = uniform(pp, microbatches, forward=forward, backward=backward)
    timeline = uniform(pp, microbatches, forward=forward, backward=backward, p2p=p2p)
    transfers = one_f_one_b_transfers(pp, microbatches)
    assert timeline.step_s == free.step_s + transfers * p2p
    if microbatches <= 2:  # fill and drain only: the forward down and the backward up
        assert transfers == 2 * (pp - 1)
    else:
        assert transfers >= 2 * (pp - 1)


@pytest.mark.parametrize(("pp", "vpp", "groups"), [(2, 2, 2), (4, 2, 2), (4, 2, 4), (4, 4, 4),
                                                   (8, 2, 2), (8, 3, 1)])  # fmt: skip
@pytest.mark.parametrize("p2p", [0.25, 0.5, 1.0])
def test_interleaved_transfers_only_fill_and_drain_when_shorter_than_an_op(
    pp: int, vpp: int, groups: int, p2p: float
) -> None:
    # Observed with this simulation, not a published form: the interleaved warm-up runs
    # 2(p - r - 1) more forwards than 1F1B, enough slack to hide the steady-state round
    # trips while a transfer is no longer than a chunk's forward or backward (here c ≤ 1 =
    # t_f), so only the first forward down and the last backward up through the pv virtual
    # stages wait: 2(pv - 1) transfers.
    microbatches = groups * pp
    free = uniform(pp, microbatches, vpp=vpp)
    timeline = uniform(pp, microbatches, vpp=vpp, p2p=p2p)
    assert timeline.step_s == free.step_s + 2 * (pp * vpp - 1) * p2p


@pytest.mark.parametrize(("pp", "microbatches"), [(4, 8), (4, 2), (8, 16), (3, 9)])
def test_a_slower_stage_sets_the_pace_and_idles_the_others(pp: int, microbatches: int) -> None:
    base = uniform(pp, microbatches)
    for slow in range(pp):
        forward, backward = [1.0] * pp, [2.0] * pp
        forward[slow], backward[slow] = 1.5, 3.0
        timeline = simulate(PipelineTimes(pp, 1, microbatches, tuple(forward), tuple(backward)))
        assert timeline.step_s >= microbatches * (1.5 + 3.0)
        assert timeline.step_s > base.step_s
        assert max(timeline.busy_s) == timeline.busy_s[slow] == microbatches * 4.5
        # the bubble, in GPU-seconds, grows: every other rank waits more than before.
        # (bubble_over_ideal is relative to the busiest rank, now the slow one, so it can
        # shrink: p = 4, m = 8 goes from 0.375 to 0.208 with rank 2 slow.)
        assert sum(timeline.idle_s) > sum(base.idle_s)
        for rank in range(pp):
            if rank != slow:
                assert timeline.idle_s[rank] > base.idle_s[rank]


def test_no_compute_gives_zero_or_infinite_bubble() -> None:
    none = simulate(PipelineTimes(2, 1, 2, (0.0, 0.0), (0.0, 0.0)))
    assert (none.step_s, none.bubble_over_ideal, none.bubble_fraction) == (0.0, 0.0, 0.0)
    transfers_only = simulate(PipelineTimes(2, 1, 2, (0.0, 0.0), (0.0, 0.0), p2p_s=1.0))
    assert transfers_only.step_s > 0
    assert transfers_only.bubble_over_ideal == math.inf
    assert transfers_only.bubble_fraction == 1.0


def test_op_records() -> None:
    timeline = simulate(PipelineTimes(2, 2, 4, (1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0), 0.5))
    ops = timeline.ops
    assert len(ops) == 2 * 2 * 2 * 4  # p ranks · v chunks · m micro-batches · (F, B)
    assert ops[0] == OpTiming(rank=0, phase="F", microbatch=0, chunk=0, stage=0,
                              start_s=0.0, end_s=1.0)  # fmt: skip
    for op in ops:
        assert op.stage == op.chunk * 2 + op.rank
        duration = (timeline.times.forward_s if op.phase == "F" else timeline.times.backward_s)[
            op.stage
        ]
        assert op.end_s - op.start_s == duration
    assert max(op.end_s for op in ops) == timeline.step_s
    assert timeline.end_s[1][-1] == ops[-1].end_s


# --- invalid inputs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"forward_s": (1.0,) * 3}, r"forward_s has 3 entries.*pp·vpp = 2·2 = 4"),
        ({"backward_s": (1.0,) * 5}, r"backward_s has 5 entries"),
        ({"forward_s": (1.0, -1.0, 1.0, 1.0)}, r"forward_s\[1\] = -1.0.*≥ 0"),
        ({"backward_s": (1.0, 1.0, math.nan, 1.0)}, r"backward_s\[2\] = nan"),
        ({"p2p_s": -0.5}, r"p2p_s = -0.5"),
        ({"p2p_s": math.inf}, r"p2p_s = inf"),
        ({"microbatches": 5}, r"5 micro-batches are not a multiple of pp \(2\)"),
        ({"microbatches": 0}, r"microbatches must be a positive integer, got 0"),
        ({"pp": 0, "forward_s": (), "backward_s": ()}, r"pp must be a positive integer"),
        ({"vpp": True}, r"vpp must be a positive integer, got True"),
        ({"pp": 2.0}, r"pp must be a positive integer, got 2.0"),
    ],
)
def test_inconsistent_inputs_are_refused(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "pp": 2,
        "vpp": 2,
        "microbatches": 4,
        "forward_s": (1.0,) * 4,
        "backward_s": (2.0,) * 4,
        "p2p_s": 0.0,
    }
    with pytest.raises(ValueError, match=message):
        PipelineTimes(**{**fields, **kwargs})  # type: ignore[arg-type]


def test_1f1b_accepts_any_microbatch_count() -> None:
    assert uniform(4, 6).step_s == 9 * 3.0  # the m % p rule is the interleaved schedule's


# --- properties on random pipelines ------------------------------------------------------

quarters = st.integers(min_value=0, max_value=40).map(lambda k: k / 4)


@st.composite
def pipelines(draw: st.DrawFn) -> PipelineTimes:
    pp = draw(st.integers(min_value=1, max_value=5))
    vpp = draw(st.integers(min_value=1, max_value=3))
    if vpp == 1:
        microbatches = draw(st.integers(min_value=1, max_value=12))
    else:
        microbatches = pp * draw(st.integers(min_value=1, max_value=3))
    stages = pp * vpp
    durations = st.lists(quarters, min_size=stages, max_size=stages).map(tuple)
    return PipelineTimes(
        pp, vpp, microbatches, draw(durations), draw(durations), p2p_s=draw(quarters)
    )


@settings(max_examples=200, deadline=None)
@given(pipelines())
def test_matches_an_independent_sweep(times: PipelineTimes) -> None:
    timeline = simulate(times)
    assert [list(s) for s in timeline.start_s] == reference_starts(times)


@settings(max_examples=200, deadline=None)
@given(pipelines())
def test_every_op_waits_for_its_input_and_its_rank(times: PipelineTimes) -> None:
    timeline = simulate(times)
    pp, last = times.pp, times.pp * times.vpp - 1
    lag = times.p2p_s if pp > 1 else 0.0
    ran = {(op.phase, op.microbatch, op.stage): op for op in timeline.ops}
    assert len(ran) == 2 * times.microbatches * (last + 1)
    for op in timeline.ops:
        if op.phase == "F" and op.stage > 0:
            assert op.start_s >= ran[("F", op.microbatch, op.stage - 1)].end_s + lag
        elif op.phase == "B" and op.stage == last:
            assert op.start_s >= ran[("F", op.microbatch, op.stage)].end_s
        elif op.phase == "B":
            assert op.start_s >= ran[("B", op.microbatch, op.stage + 1)].end_s + lag
    for rank in range(pp):  # one op at a time, in rank_ops order
        mine = [op for op in timeline.ops if op.rank == rank]
        expected = rank_ops(rank=rank, pp=pp, vpp=times.vpp, microbatches=times.microbatches)
        assert [(op.phase, op.microbatch, op.chunk) for op in mine] == [
            (op.phase, op.microbatch, op.chunk) for op in expected
        ]
        for before, after in itertools.pairwise(mine):
            assert after.start_s >= before.end_s


@settings(max_examples=200, deadline=None)
@given(pipelines())
def test_step_covers_the_busiest_rank(times: PipelineTimes) -> None:
    timeline = simulate(times)
    assert timeline.step_s >= max(timeline.busy_s)
    assert all(idle >= 0 for idle in timeline.idle_s)
    assert timeline.bubble_over_ideal >= 0
    assert 0 <= timeline.bubble_fraction <= 1
    for rank in range(times.pp):
        chunks = range(times.vpp)
        stages = [c * times.pp + rank for c in chunks]
        work = sum(times.forward_s[k] + times.backward_s[k] for k in stages)
        assert timeline.busy_s[rank] == times.microbatches * work  # quarters: exact
        assert timeline.idle_s[rank] == timeline.step_s - timeline.busy_s[rank]


@settings(max_examples=300, deadline=None)
@given(pipelines(), st.data())
def test_step_never_shrinks_when_a_duration_grows(
    times: PipelineTimes, data: st.DataObject
) -> None:
    stages = times.pp * times.vpp
    which = data.draw(st.sampled_from(["forward_s", "backward_s", "p2p_s"]))
    extra = data.draw(st.integers(min_value=1, max_value=40).map(lambda k: k / 4))
    if which == "p2p_s":
        slower = PipelineTimes(
            times.pp, times.vpp, times.microbatches, times.forward_s, times.backward_s,
            p2p_s=times.p2p_s + extra,
        )  # fmt: skip
    else:
        stage = data.draw(st.integers(min_value=0, max_value=stages - 1))
        durations = list(getattr(times, which))
        durations[stage] += extra
        slower = PipelineTimes(
            times.pp,
            times.vpp,
            times.microbatches,
            tuple(durations) if which == "forward_s" else times.forward_s,
            tuple(durations) if which == "backward_s" else times.backward_s,
            p2p_s=times.p2p_s,
        )
    assert simulate(slower).step_s >= simulate(times).step_s
