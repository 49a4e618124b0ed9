"""Sequence scattering: one micro-batch of variable-length sequences on sequence-parallel
groups of different sizes (the formulation of FlexSP: Wang et al., "Data-Centric
Heterogeneity-Adaptive Sequence Parallelism for Efficient LLM Training", ASPLOS 2025,
section 4; code in PKU-DAIR/Hetu-Galvatron, branch ``flexsp``).

The N GPUs of a micro-batch are split into sequence-parallel (SP) groups whose sizes are
powers of two; every sequence runs on exactly one group, packed with the other sequences of
that group; the micro-batch lasts as long as its slowest group. Short sequences want small
groups (no exchange, no idle GPUs), long ones need large groups to fit in memory: the
solver picks the group sizes and the assignment together.

Units: time in integer microseconds (``_us``); memory in the integer unit of
``ScatterTable.capacity`` (the planner uses KiB). CP-SAT takes integer coefficients only:
the planner rounds its cost model (seconds, bytes) up into these units when it builds a
table.

Data
    N GPUs; allowed group sizes s_1 < ... < s_J (powers of two, at most N).
    Rows r = 0..R-1 ("buckets"): kinds of sequence, with n_r sequences of row r in this
    micro-batch; t_{r,j} the time of one sequence of row r on a group of size s_j (the
    planner: (alpha1 L^2 + alpha2 L) / s_j plus the exchange priced where such a group
    sits); u_{r,j} the memory it adds to each GPU of that group; C the memory of one GPU.
    Bucketing many lengths into one row takes the row's longest sequence, so times and
    memory are upper bounds for every sequence of the row.
    Group slots g = (j, i), i = 0..K_j-1, K_j = min(floor(N / s_j), sequences that fit on
    s_j): at most that many groups of size s_j can be used.

Decision variables
    A_{r,g} in [0, n_r]     sequences of row r run by group g (fixed to 0 when
                            u_{r,j(g)} > C: the group is too small to hold one of them).
    m_g in {0, 1}           group g is used.
    T_g                     the time of group g.
    M                       the makespan.

Constraints
    (1) sum_g A_{r,g} = n_r                          every sequence runs exactly once.
    (2) sum_r u_{r,j(g)} A_{r,g} <= C m_g            per-GPU memory of the packed group;
                                                     an unused group holds nothing.
    (3) m_g <= sum_r A_{r,g} <= n m_g                a used group runs something, an unused
                                                     one nothing (n = sum_r n_r; (2) alone
                                                     allows sequences of zero memory).
    (4) T_g = sum_r t_{r,j(g)} A_{r,g} <= M          makespan.
    (5) sum_g s_{j(g)} m_g = N                       GPUs used exactly.
    (6) m_{j,i} >= m_{j,i+1}, T_{j,i} >= T_{j,i+1}   symmetry: groups of one size are
                                                     interchangeable, so order them by use
                                                     and by time.

Objective
    minimise M.

Bounds
    M >= ceil(sum_i min_j t_{i,j} s_j / N) (the GPU-time no packing avoids, spread over
    all GPUs) and M >= max_i min_j t_{i,j}: they let CP-SAT prove a good packing optimal.

Scale
    Above ``MAX_FULL_VARIABLES`` assignment variables the slots K_j are capped near the
    hint's (twice its groups of size s_j, plus two); the result is then never labelled
    optimal.

Warm start and time limit
    The fastest of best-fit-decreasing and "one size plus the long sequences on their own
    groups" (``solvers.scatter_greedy.best_greedy``) is a complete hint. The solve stops at
    ``SolveOptions.time_limit_s`` with the best packing found, labelled optimal or not
    (``solvers._cpsat``).

The sequence blaster (``solvers.scatter_greedy.blast``) splits a global batch into the
fewest micro-batches that fit before this model runs, one model per micro-batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

from ortools.sat.python import cp_model

from solvers._cpsat import Incumbent, SolveOptions, SolveStatus, solve_model


def _rows(values: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(v) for v in row) for row in values)


@dataclass(frozen=True)
class ScatterTable:
    """The cost of every kind of sequence on every allowed group size (see the module)."""

    gpus: int
    sizes: tuple[int, ...]
    """Allowed SP group sizes, ascending powers of two, each at most ``gpus``."""
    lengths: tuple[int, ...]
    """Tokens of each row's (longest) sequence; the baselines pack and bucket by them."""
    time_us: tuple[tuple[int, ...], ...]
    """[row][size index]: one sequence of the row on one group of that size."""
    memory: tuple[tuple[int, ...], ...]
    """[row][size index]: what one sequence of the row adds to each GPU of the group."""
    capacity: int
    """Memory of one GPU for the packed sequences (same unit as ``memory``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))
        object.__setattr__(self, "lengths", tuple(int(s) for s in self.lengths))
        object.__setattr__(self, "time_us", _rows(self.time_us))
        object.__setattr__(self, "memory", _rows(self.memory))
        if self.gpus < 1:
            raise ValueError(f"gpus must be at least 1, got {self.gpus}")
        if not self.sizes or list(self.sizes) != sorted(set(self.sizes)):
            raise ValueError(f"sizes must be ascending and distinct, got {self.sizes}")
        for size in self.sizes:
            if size < 1 or size & (size - 1) or size > self.gpus:
                raise ValueError(f"size {size} is not a power of two at most {self.gpus}")
        rows = len(self.lengths)
        if len(self.time_us) != rows or len(self.memory) != rows:
            raise ValueError("lengths, time_us and memory must list the same rows")
        for name, table in (("time_us", self.time_us), ("memory", self.memory)):
            for row in table:
                if len(row) != len(self.sizes) or min(row) < 0:
                    raise ValueError(f"{name}: one non-negative value per size and row")
        for row in self.memory:
            if any(b > a for a, b in pairwise(row)):
                raise ValueError(
                    f"memory per GPU must not grow with the group size, got {row}: a larger "
                    "group splits the same sequence over more GPUs"
                )
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {self.capacity}")
        smallest = tuple(
            next((j for j in range(len(self.sizes)) if self.fits(r, j)), None)
            for r in range(self.rows)
        )
        object.__setattr__(self, "_smallest", smallest)

    @property
    def rows(self) -> int:
        return len(self.lengths)

    def fits(self, row: int, j: int) -> bool:
        """One sequence of ``row`` fits on a group of size ``sizes[j]``."""
        return self.memory[row][j] <= self.capacity

    def smallest_fit(self, row: int) -> int | None:
        """Index of the smallest size that holds one sequence of ``row``, or None."""
        return self._smallest[row]  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ScatterProblem:
    """One micro-batch: ``counts[r]`` sequences of each row of ``table``."""

    table: ScatterTable
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts", tuple(int(c) for c in self.counts))
        if len(self.counts) != self.table.rows:
            raise ValueError(f"counts has {len(self.counts)} rows, table {self.table.rows}")
        if min(self.counts, default=0) < 0 or sum(self.counts) < 1:
            raise ValueError("counts must be non-negative with at least one sequence")


@dataclass(frozen=True)
class GroupLoad:
    """One used SP group: its size and how many sequences of each row it runs."""

    size: int
    counts: tuple[int, ...]
    time_us: int
    memory: int
    """Per GPU of the group."""


def group_load(table: ScatterTable, j: int, counts: Sequence[int]) -> GroupLoad:
    """The time and per-GPU memory of a group of size ``sizes[j]`` running ``counts``."""
    return GroupLoad(
        size=table.sizes[j],
        counts=tuple(counts),
        time_us=sum(table.time_us[r][j] * c for r, c in enumerate(counts)),
        memory=sum(table.memory[r][j] * c for r, c in enumerate(counts)),
    )


@dataclass(frozen=True)
class ScatterSolution:
    status: SolveStatus
    groups: tuple[GroupLoad, ...]
    """Used groups, largest first; empty when no packing was found."""
    makespan_us: int | None
    wall_s: float
    incumbents: tuple[Incumbent, ...] = ()
    hinted: bool = False
    """Best-fit-decreasing found a packing and it was given as the hint."""

    @property
    def optimal(self) -> bool:
        return self.status is SolveStatus.OPTIMAL


def slot_counts(problem: ScatterProblem) -> list[int]:
    """K_j: the most groups of each size a solution can use."""
    table = problem.table
    return [
        min(
            table.gpus // size,
            sum(c for r, c in enumerate(problem.counts) if table.fits(r, j)),
        )
        for j, size in enumerate(table.sizes)
    ]


MAX_FULL_VARIABLES = 20_000
"""Above this many assignment variables (slots x rows) the slots of each size are capped
at twice the hint's groups of that size plus two: a neighbourhood of the hint CP-SAT can
search within a second, whose best is then labelled feasible, not optimal."""


def lower_bound_us(problem: ScatterProblem) -> int:
    """No packing is faster than the busiest GPU-time spread over all GPUs, nor than the
    slowest sequence on its fastest group: M >= ceil(sum_i min_j t_{i,j} s_j / N) and
    M >= max_i min_j t_{i,j} (over the sizes that hold sequence i)."""
    table = problem.table
    area, slowest = 0, 0
    for r, c in enumerate(problem.counts):
        fitting = [j for j in range(len(table.sizes)) if table.fits(r, j)]
        if c == 0 or not fitting:
            continue
        area += c * min(table.time_us[r][j] * table.sizes[j] for j in fitting)
        slowest = max(slowest, min(table.time_us[r][j] for j in fitting))
    return max(slowest, -(-area // table.gpus))


def solve(
    problem: ScatterProblem,
    options: SolveOptions | None = None,
    *,
    hint: Sequence[tuple[int, Sequence[int]]] | None = None,
) -> ScatterSolution:
    """The packing of least makespan (see the module docstring).

    ``hint``: groups as (size index, counts per row); when None the fastest greedy packing
    (``solvers.scatter_greedy.best_greedy``) is used. When the time limit strikes before
    CP-SAT has a solution, the hint is returned, labelled feasible; when the hint meets
    the lower bound it is returned as optimal without running CP-SAT. The greedy's time
    counts against ``options.time_limit_s``.
    """
    from solvers.scatter_greedy import best_greedy

    options = options or SolveOptions()
    table = problem.table
    started = time.perf_counter()
    if hint is None:
        hint = best_greedy(problem)
    hinted = hint is not None
    if hint is not None:
        hinted_us = max(group_load(table, j, counts).time_us for j, counts in hint)
        if hinted_us <= lower_bound_us(problem):  # the hint meets the bound: optimal
            groups = [group_load(table, j, counts) for j, counts in hint]
            return _solution(SolveStatus.OPTIMAL, groups, time.perf_counter() - started, (), True)
    slots_per_size = slot_counts(problem)
    restricted = False
    if hint is not None and sum(slots_per_size) * table.rows > MAX_FULL_VARIABLES:
        hinted_per_size = [sum(1 for j2, _ in hint if j2 == j) for j in range(len(table.sizes))]
        capped = [min(k, 2 * h + 2) for k, h in zip(slots_per_size, hinted_per_size, strict=True)]
        restricted = capped != slots_per_size
        slots_per_size = capped
    built = _build(problem, slots_per_size)
    if hint is not None:
        _add_hint(built.model, problem, hint, built.assign, built.used, built.makespan)
    greedy_s = time.perf_counter() - started
    remaining = max(0.01, options.time_limit_s - greedy_s)
    run = solve_model(built.model, replace(options, time_limit_s=remaining))
    status = run.status
    if restricted and status is SolveStatus.OPTIMAL:
        status = SolveStatus.FEASIBLE  # optimal among the slots kept, not proven overall
    groups = []
    if run.has_solution:
        for g in built.slots:
            if run.solver.value(built.used[g]):
                got = [int(run.solver.value(built.assign[r, g])) for r in range(table.rows)]
                groups.append(group_load(table, g[0], got))
    elif hint is not None and run.status is SolveStatus.UNKNOWN:
        # the time limit struck before CP-SAT loaded the hint: it is the best plan found
        groups = [group_load(table, j, counts) for j, counts in hint]
        status = SolveStatus.FEASIBLE
    else:
        return ScatterSolution(status, (), None, run.wall_s + greedy_s, run.incumbents, hinted)
    return _solution(status, groups, time.perf_counter() - started, run.incumbents, hinted)


@dataclass
class _Built:
    model: cp_model.CpModel
    slots: list[tuple[int, int]]
    assign: dict[tuple[int, tuple[int, int]], cp_model.IntVar]
    used: dict[tuple[int, int], cp_model.IntVar]
    makespan: cp_model.IntVar


def _build(problem: ScatterProblem, slots_per_size: Sequence[int]) -> _Built:
    """The CP-SAT model of the module docstring over ``slots_per_size[j]`` slots of size j."""
    table, counts = problem.table, problem.counts
    rows = range(table.rows)
    model = cp_model.CpModel()
    slots = [(j, i) for j, k in enumerate(slots_per_size) for i in range(k)]
    assign: dict[tuple[int, tuple[int, int]], cp_model.IntVar] = {}
    used: dict[tuple[int, int], cp_model.IntVar] = {}
    group_time: dict[tuple[int, int], cp_model.LinearExprT] = {}
    horizon = sum(max(table.time_us[r]) * counts[r] for r in rows)
    makespan = model.new_int_var(min(lower_bound_us(problem), horizon), horizon, "makespan")
    for g in slots:
        j = g[0]
        used[g] = model.new_bool_var(f"used[{table.sizes[j]},{g[1]}]")
        for r in rows:
            top = counts[r] if table.fits(r, j) else 0
            assign[r, g] = model.new_int_var(0, top, f"A[{r},{table.sizes[j]},{g[1]}]")
        load = [assign[r, g] for r in rows]
        model.add(  # (2)
            cp_model.LinearExpr.weighted_sum(load, [table.memory[r][j] for r in rows])
            <= table.capacity * used[g]
        )
        model.add(cp_model.LinearExpr.sum(load) >= used[g])  # (3)
        model.add(cp_model.LinearExpr.sum(load) <= sum(counts) * used[g])
        group_time[g] = cp_model.LinearExpr.weighted_sum(load, [table.time_us[r][j] for r in rows])
        model.add(group_time[g] <= makespan)  # (4)
    for r in rows:  # (1)
        model.add(cp_model.LinearExpr.sum([assign[r, g] for g in slots]) == counts[r])
    model.add(  # (5)
        cp_model.LinearExpr.weighted_sum(
            [used[g] for g in slots], [table.sizes[g[0]] for g in slots]
        )
        == table.gpus
    )
    for j, i in slots:  # (6)
        if (j, i + 1) in used:
            model.add(used[j, i] >= used[j, i + 1])
            model.add(group_time[j, i] >= group_time[j, i + 1])
    model.minimize(makespan)
    return _Built(model, slots, assign, used, makespan)


def _solution(
    status: SolveStatus,
    groups: list[GroupLoad],
    wall_s: float,
    incumbents: tuple[Incumbent, ...],
    hinted: bool,
) -> ScatterSolution:
    groups.sort(key=lambda load: (-load.size, -load.time_us))
    return ScatterSolution(
        status=status,
        groups=tuple(groups),
        makespan_us=max(load.time_us for load in groups),
        wall_s=wall_s,
        incumbents=incumbents,
        hinted=hinted,
    )


def _add_hint(
    model: cp_model.CpModel,
    problem: ScatterProblem,
    hint: Sequence[tuple[int, Sequence[int]]],
    assign: dict,
    used: dict,
    makespan: cp_model.IntVar,
) -> None:
    """Hint every variable: the hinted groups in the slots of their size, ordered as (6)."""
    table = problem.table
    by_size: dict[int, list[GroupLoad]] = {}
    for j, counts in hint:
        by_size.setdefault(j, []).append(group_load(table, j, counts))
    for loads in by_size.values():
        loads.sort(key=lambda load: -load.time_us)
    for (j, i), flag in used.items():
        loads = by_size.get(j, [])
        load = loads[i] if i < len(loads) else None
        model.add_hint(flag, load is not None)
        for r in range(table.rows):
            model.add_hint(assign[r, (j, i)], load.counts[r] if load is not None else 0)
    model.add_hint(makespan, max(load.time_us for loads in by_size.values() for load in loads))
