"""Sequence scattering: a hand-solved instance, the brute force on random small instances,
the greedy, the blaster and the baselines (every sequence once, memory, GPUs used)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solvers._cpsat import SolveOptions, SolveStatus
from solvers.reference_scatter import scatter_brute_force
from solvers.scatter import ScatterProblem, ScatterTable, solve
from solvers.scatter_baselines import (
    best_fit_decreasing_schedule,
    best_static_degree,
    group_memory,
    megatron_hybrid_cp,
)
from solvers.scatter_greedy import best_fit_decreasing, blast

OPTIONS = SolveOptions(time_limit_s=10.0, workers=1)


def _hand_table() -> ScatterTable:
    # Sizes 1, 2, 4 GPUs; a GPU holds 5 units. Row 0 is a long sequence: 8 units on one GPU
    # (does not fit), 4 on each GPU of a pair, 2 on each of four; 40, 10, 6 us. Row 1 is a
    # short one: 1 unit anywhere, 3, 2, 2 us.
    return ScatterTable(
        gpus=4,
        sizes=(1, 2, 4),
        lengths=(4000, 500),
        time_us=((40, 10, 6), (3, 2, 2)),
        memory=((8, 4, 2), (1, 1, 1)),
        capacity=5,
    )


def test_hand_solved_instance_splits_long_and_short_sequences() -> None:
    # One long and four short sequences on 4 GPUs. The long one needs a pair (10 us) or
    # all four; all four in one group would hold 2 + 4 x 1 = 6 > 5 units: infeasible. With
    # the long one on a pair, the other two GPUs run the four short ones in 6 us (two
    # single GPUs, two each) or 8 us (one pair); adding a short one to the long one's pair
    # makes it 12 us. Optimum: makespan 10 us.
    problem = ScatterProblem(_hand_table(), (1, 4))
    solution = solve(problem, OPTIONS)
    assert solution.status is SolveStatus.OPTIMAL
    assert solution.makespan_us == 10
    assert solution.groups[0].size == 2 and solution.groups[0].counts == (1, 0)
    assert scatter_brute_force(problem) == 10
    # Best-fit-decreasing puts a short one next to the long one (0 units left: the best
    # fit), then the other three on one GPU grown to a pair: 12 us.
    packing = best_fit_decreasing(problem)
    assert packing is not None
    assert sorted(packing) == [(1, (0, 3)), (1, (1, 1))]


@st.composite
def problems(draw: st.DrawFn) -> ScatterProblem:
    gpus = draw(st.sampled_from([1, 2, 3, 4]))
    sizes = tuple(s for s in (1, 2, 4) if s <= gpus)
    rows = draw(st.integers(1, 3))
    capacity = draw(st.integers(4, 12))
    lengths, times, memory = [], [], []
    for _ in range(rows):
        lengths.append(draw(st.integers(1, 10_000)))
        times.append(tuple(draw(st.integers(0, 50)) for _ in sizes))
        memory.append(tuple(sorted((draw(st.integers(0, 14)) for _ in sizes), reverse=True)))
    table = ScatterTable(gpus, sizes, tuple(lengths), tuple(times), tuple(memory), capacity)
    counts = [draw(st.integers(0, 3)) for _ in range(rows)]
    if sum(counts) == 0:
        counts[0] = 1
    while sum(counts) > 5:
        counts[counts.index(max(counts))] -= 1
    return ScatterProblem(table, tuple(counts))


def _check_packing(problem: ScatterProblem, groups: list[tuple[int, tuple[int, ...]]]) -> None:
    table = problem.table
    assert sum(table.sizes[j] for j, _ in groups) == table.gpus
    totals = [sum(counts[r] for _, counts in groups) for r in range(table.rows)]
    assert tuple(totals) == problem.counts
    for j, counts in groups:
        assert sum(counts) >= 1
        assert sum(table.memory[r][j] * c for r, c in enumerate(counts)) <= table.capacity


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_solver_equals_brute_force_and_respects_every_constraint(problem: ScatterProblem) -> None:
    expected = scatter_brute_force(problem)
    solution = solve(problem, OPTIONS)
    if expected is None:
        assert solution.status is SolveStatus.INFEASIBLE
        assert best_fit_decreasing(problem) is None
        return
    assert solution.status is SolveStatus.OPTIMAL
    assert solution.makespan_us == expected
    table = problem.table
    groups = [(table.sizes.index(g.size), g.counts) for g in solution.groups]
    _check_packing(problem, groups)
    greedy = best_fit_decreasing(problem)
    if greedy is not None:
        _check_packing(problem, greedy)
        slowest = max(sum(table.time_us[r][j] * c for r, c in enumerate(k)) for j, k in greedy)
        assert slowest >= expected


def _time(length: int, size: int) -> int:
    """A quadratic plus linear time split over the group, plus an exchange when split."""
    return length * length // (size * 1000) + length // size + 7 * (size > 1)


@st.composite
def batches(draw: st.DrawFn) -> tuple[ScatterTable, list[int]]:
    """A table whose memory is proportional to tokens per GPU, and a batch of rows."""
    gpus = draw(st.sampled_from([1, 2, 4, 8, 12]))
    sizes = tuple(s for s in (1, 2, 4, 8) if s <= gpus)
    capacity = draw(st.integers(1_000, 8_000))
    longest = st.integers(1, capacity * sizes[-1])
    lengths = sorted(set(draw(st.lists(longest, min_size=1, max_size=6))))
    times = tuple(tuple(_time(n, s) for s in sizes) for n in lengths)
    memory = tuple(tuple(-(-n // s) for s in sizes) for n in lengths)
    table = ScatterTable(gpus, sizes, tuple(lengths), times, memory, capacity)
    rows_of = draw(st.lists(st.integers(0, len(lengths) - 1), min_size=1, max_size=30))
    return table, rows_of


def _every_sequence_once(schedule: list, count: int) -> None:
    seen = Counter(i for micro in schedule for _, members in micro for i in members)
    assert seen == Counter(range(count))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_blaster_and_baselines_keep_every_sequence_once_in_memory(
    batch: tuple[ScatterTable, list[int]],
) -> None:
    table, rows_of = batch
    try:
        micro_batches = blast(table, rows_of)
    except ValueError:
        # N not a sum of powers of two over few enough sequences (e.g. 12 GPUs, one
        # sequence): no micro-batch can use every GPU.
        assert table.gpus & (table.gpus - 1)
        return
    assert sorted(i for micro in micro_batches for i in micro) == list(range(len(rows_of)))
    greedy = best_fit_decreasing_schedule(table, rows_of)
    _every_sequence_once(greedy.schedule, len(rows_of))
    for micro in greedy.schedule:
        assert sum(size for size, _ in micro) == table.gpus
        for group in micro:
            assert group_memory(table, rows_of, group) <= table.capacity
    static = best_static_degree(table, rows_of)
    _every_sequence_once(static.schedule, len(rows_of))
    for micro in static.schedule:
        assert len({size for size, _ in micro}) == 1
        for group in micro:
            assert group_memory(table, rows_of, group) <= table.capacity
    hybrid = megatron_hybrid_cp(table, rows_of)
    _every_sequence_once(hybrid.schedule, len(rows_of))
    for micro in hybrid.schedule:
        assert sum(size for size, _ in micro) <= table.gpus
        for size, members in micro:
            j = table.sizes.index(size)
            assert all(table.fits(rows_of[i], j) for i in members)


def test_table_rejects_a_size_that_is_not_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        ScatterTable(4, (1, 3), (10,), ((1, 1),), ((1, 1),), 5)


def test_time_limit_returns_the_best_found_labelled_not_optimal() -> None:
    # 64 GPUs and 60 sequences of 12 kinds: too large to prove in a millisecond, and the
    # best-fit-decreasing hint is a solution from the start.
    lengths = tuple(100 * (k + 1) ** 2 for k in range(12))
    sizes = (1, 2, 4, 8, 16, 32, 64)
    table = ScatterTable(
        64,
        sizes,
        lengths,
        tuple(tuple(_time(n, s) for s in sizes) for n in lengths),
        tuple(tuple(-(-n // s) for s in sizes) for n in lengths),
        8_000,
    )
    problem = ScatterProblem(table, (5,) * 12)
    solution = solve(problem, SolveOptions(time_limit_s=0.05, workers=1))
    assert solution.hinted
    assert solution.status in (SolveStatus.FEASIBLE, SolveStatus.OPTIMAL)
    assert solution.makespan_us is not None
    assert sum(g.size for g in solution.groups) == 64
