"""Tensors to addresses over their lifetimes: the smallest arena that holds every tensor.

Each tensor is alive over a fixed interval of events (its lifetime, from the model's
schedule or from an allocator trace) and needs a contiguous range of addresses. Two tensors
alive at the same event must not share an address. The arena is the highest address in use;
the least arena is what a perfect allocator would need (the planned peak). It is never
below the largest sum of the sizes of tensors alive together (the live-bytes bound), and
can exceed it when no placement lets the holes left by freed tensors be reused.

Units: sizes in integer units of the caller's choosing (the planner uses the caching
allocator's 512-byte blocks); events are integer indices.

Data
    Tensors i = 0..n-1: size s_i >= 1, lifetime [a_i, e_i) with a_i < e_i.
    Chains: sequences (i_1, ..., i_k) of tensors placed as one stack, i_{j+1} right above
        i_j (the saved activations of consecutive layers of one micro-batch).
    Ties: pairs (i, j) placed at the same offset (micro-batch k reuses the addresses of
        micro-batch k - f once the latter's memory is freed).
    Chains and ties join tensors into rigid groups g: each member i has a fixed offset
    r_i relative to its group's base (computed by a weighted union-find, validated to
    agree and to keep members alive together apart).

Decision variables
    x_g in [0, U - h_g]          base address of rigid group g (h_g: its height,
                                  max_i r_i + s_i; U the warm start's arena).
    A in [L, U]                   the arena; L the live-bytes bound.
    For every tensor, an address interval [x_g + r_i, x_g + r_i + s_i) and a fixed time
    interval [a_i, e_i).

Constraints
    (1) AddNoOverlap2D over (time interval, address interval) of all tensors: two tensors
        alive together occupy disjoint addresses.
    (2) A >= x_g + h_g for every group.
    (3) Symmetry: two single-tensor groups with the same size and lifetime are
        interchangeable, so the one with the lower index gets the lower base (exact).

Objective
    minimise A.

Repeated layers as one block of decisions
    A stage's saved activations are nested: layer 0 of a micro-batch is saved first and
    freed last. The planner passes each micro-batch's layers as one chain, so a run of
    identical layers is one rigid block with a single base variable, and ties the
    micro-batches that the schedule runs one after another in the same slot; with c
    chains the model has c base variables whatever the layer count, and CP-SAT's presolve
    substitutes the member offsets away. Chains and ties restrict the placement (the
    optimum over rigid groups can exceed the free optimum); the result says how far it is
    from the live-bytes bound, which holds for any placement.

Warm start and early exit
    :func:`best_fit_offsets` places groups by first fit in decreasing size (ties: longer
    lifetime first), the lowest base where no member collides: XLA's heap simulator's
    global decreasing-size rule. Its arena is the upper bound U and the hint. When it
    already equals the live-bytes bound it is optimal and CP-SAT is not called.

Result
    Offsets per tensor, the arena, the best proven lower bound (the live-bytes bound or
    CP-SAT's, whichever is higher) and the relative gap; at the time limit the best
    placement found is returned labelled FEASIBLE.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from ortools.sat.python import cp_model

from solvers._cpsat import Incumbent, SolveOptions, SolveStatus, solve_model


@dataclass(frozen=True)
class Tensor:
    """One buffer: ``size`` units alive from event ``start`` until before event ``end``."""

    size: int
    start: int
    end: int

    def __post_init__(self) -> None:
        for name in ("size", "start", "end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"tensor {name} must be an integer, got {value!r}")
        if self.size < 1:
            raise ValueError(f"tensor size must be at least 1, got {self.size}")
        if self.start < 0 or self.end <= self.start:
            raise ValueError(
                f"tensor lifetime [{self.start}, {self.end}) must start at 0 or later and "
                "end after it starts"
            )


@dataclass(frozen=True)
class PlacementProblem:
    """The data of the module docstring."""

    tensors: tuple[Tensor, ...]
    chains: tuple[tuple[int, ...], ...] = ()
    ties: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", tuple(self.tensors))
        object.__setattr__(self, "chains", tuple(tuple(c) for c in self.chains))
        object.__setattr__(self, "ties", tuple(tuple(t) for t in self.ties))
        n = len(self.tensors)
        for where, indices in [("chains", c) for c in self.chains] + [
            ("ties", t) for t in self.ties
        ]:
            for i in indices:
                if not 0 <= i < n:
                    raise ValueError(f"{where}: tensor index {i} is not in 0..{n - 1}")
        rigid_groups(self)  # validates that chains and ties agree


@dataclass(frozen=True)
class Group:
    """A rigid group: (tensor, offset above the group's base) for each member."""

    members: tuple[tuple[int, int], ...]

    def height(self, tensors: tuple[Tensor, ...]) -> int:
        return max(rel + tensors[i].size for i, rel in self.members)


@dataclass(frozen=True)
class PlacementSolution:
    status: SolveStatus
    offsets: tuple[int, ...]
    arena: int
    lower_bound: int
    """The best proven bound on the least arena (live bytes, or CP-SAT's if higher)."""
    live_bound: int
    """The largest sum of sizes alive at one event."""
    warm_start_arena: int
    wall_s: float
    incumbents: tuple[Incumbent, ...] = ()

    @property
    def gap(self) -> float:
        """(arena - lower bound) / arena: 0 when proven optimal."""
        return 0.0 if self.arena == 0 else (self.arena - self.lower_bound) / self.arena


def _find(parent: list[int], rel: list[int], i: int) -> tuple[int, int]:
    """Root of ``i`` and i's offset above the root (path-compressing)."""
    path = []
    while parent[i] != i:
        path.append(i)
        i = parent[i]
    root, total = i, 0
    for node in reversed(path):
        total += rel[node]
        rel[node], parent[node] = total, root
    return root, (rel[path[0]] if path else 0)


def rigid_groups(problem: PlacementProblem) -> tuple[Group, ...]:
    """The rigid groups chains and ties form (module docstring), bases at offset 0."""
    n = len(problem.tensors)
    parent, rel = list(range(n)), [0] * n

    def join(i: int, j: int, delta: int, what: str) -> None:
        """Require offset(j) - offset(i) == delta."""
        ri, oi = _find(parent, rel, i)
        rj, oj = _find(parent, rel, j)
        if ri == rj:
            if oj - oi != delta:
                raise ValueError(f"{what}: tensors {i} and {j} are already placed otherwise")
            return
        parent[rj], rel[rj] = ri, oi + delta - oj

    for chain in problem.chains:
        for below, above in pairwise(chain):
            join(below, above, problem.tensors[below].size, "chains")
    for i, j in problem.ties:
        join(i, j, 0, "ties")
    members: dict[int, list[tuple[int, int]]] = {}
    for i in range(n):
        root, offset = _find(parent, rel, i)
        members.setdefault(root, []).append((i, offset))
    groups = []
    for found in members.values():
        low = min(offset for _, offset in found)
        group = tuple((i, offset - low) for i, offset in found)
        _check_rigid(problem.tensors, group)
        groups.append(Group(group))
    return tuple(groups)


def _check_rigid(tensors: tuple[Tensor, ...], members: tuple[tuple[int, int], ...]) -> None:
    for k, (i, ri) in enumerate(members):
        for j, rj in members[k + 1 :]:
            a, b = tensors[i], tensors[j]
            if a.start < b.end and b.start < a.end and ri < rj + b.size and rj < ri + a.size:
                raise ValueError(
                    f"chains/ties put tensors {i} and {j}, alive together, at overlapping addresses"
                )


def live_bound(tensors: tuple[Tensor, ...]) -> int:
    """The largest sum of sizes alive at one event (a lower bound on any arena)."""
    if not tensors:
        return 0
    horizon = max(t.end for t in tensors) + 1
    delta = np.zeros(horizon + 1, dtype=np.int64)
    for t in tensors:
        delta[t.start] += t.size
        delta[t.end] -= t.size
    return int(np.cumsum(delta).max())


def best_fit_offsets(problem: PlacementProblem) -> tuple[int, ...]:
    """First fit by decreasing size: groups in order of total size (larger first; ties:
    longer lifetime, then earlier start), each at the lowest base where none of its
    members collides with a tensor already placed and alive at the same time."""
    tensors = problem.tensors
    groups = rigid_groups(problem)

    def key(group: Group) -> tuple[int, int, int]:
        size = sum(tensors[i].size for i, _ in group.members)
        start = min(tensors[i].start for i, _ in group.members)
        span = max(tensors[i].end for i, _ in group.members) - start
        return (-size, -span, start)

    offsets = [0] * len(tensors)
    placed_start = np.zeros(0, dtype=np.int64)
    placed_end = np.zeros(0, dtype=np.int64)
    placed_low = np.zeros(0, dtype=np.int64)
    placed_high = np.zeros(0, dtype=np.int64)
    for group in sorted(groups, key=key):
        forbidden: list[tuple[int, int]] = []  # base in [lo, hi] collides
        for i, rel in group.members:
            t = tensors[i]
            hit = (placed_start < t.end) & (placed_end > t.start)
            lows, highs = placed_low[hit], placed_high[hit]
            forbidden.extend(
                zip((lows - rel - t.size + 1).tolist(), (highs - rel - 1).tolist(), strict=True)
            )
        base = 0
        for lo, hi in sorted(forbidden):
            if lo > base:
                break
            base = max(base, hi + 1)
        for i, rel in group.members:
            offsets[i] = base + rel
        idx = [i for i, _ in group.members]
        placed_start = np.concatenate([placed_start, [tensors[i].start for i in idx]])
        placed_end = np.concatenate([placed_end, [tensors[i].end for i in idx]])
        placed_low = np.concatenate([placed_low, [offsets[i] for i in idx]])
        placed_high = np.concatenate([placed_high, [offsets[i] + tensors[i].size for i in idx]])
    return tuple(offsets)


def arena_of(tensors: tuple[Tensor, ...], offsets: tuple[int, ...]) -> int:
    return max((o + t.size for t, o in zip(tensors, offsets, strict=True)), default=0)


def overlapping_pair(
    tensors: tuple[Tensor, ...], offsets: tuple[int, ...]
) -> tuple[int, int] | None:
    """Two tensors alive together at overlapping addresses, or None (a checker for tests
    and callers that edit placements)."""
    order = sorted(range(len(tensors)), key=lambda i: tensors[i].start)
    active: list[int] = []
    for i in order:
        t = tensors[i]
        active = [j for j in active if tensors[j].end > t.start]
        for j in active:
            if offsets[i] < offsets[j] + tensors[j].size and offsets[j] < offsets[i] + t.size:
                return (j, i)
        active.append(i)
    return None


_DEFAULT_OPTIONS = SolveOptions()


def solve(problem: PlacementProblem, options: SolveOptions = _DEFAULT_OPTIONS) -> PlacementSolution:
    """The least arena (module docstring); the warm start when it meets the bound."""
    started = time.perf_counter()
    tensors = problem.tensors
    bound = live_bound(tensors)
    warm = best_fit_offsets(problem)
    upper = arena_of(tensors, warm)
    if upper == bound:
        return PlacementSolution(
            SolveStatus.OPTIMAL, warm, upper, bound, bound, upper, time.perf_counter() - started
        )
    groups = rigid_groups(problem)
    model = cp_model.CpModel()
    arena = model.new_int_var(bound, upper, "A")
    bases, x_intervals, t_intervals = [], [], []
    for g, group in enumerate(groups):
        height = group.height(tensors)
        base = model.new_int_var(0, upper - height, f"x[{g}]")
        bases.append(base)
        model.add(arena >= base + height)  # (2)
        first, rel0 = group.members[0]
        model.add_hint(base, warm[first] - rel0)
        for i, rel in group.members:
            t = tensors[i]
            x_intervals.append(model.new_fixed_size_interval_var(base + rel, t.size, f"ax[{i}]"))
            t_intervals.append(
                model.new_fixed_size_interval_var(t.start, t.end - t.start, f"tx[{i}]")
            )
    model.add_no_overlap_2d(t_intervals, x_intervals)  # (1)
    twins: dict[tuple[int, int, int], int] = {}
    for g, group in enumerate(groups):  # (3)
        if len(group.members) == 1:
            t = tensors[group.members[0][0]]
            key = (t.size, t.start, t.end)
            if key in twins:
                model.add(bases[twins[key]] <= bases[g])
            twins[key] = g
    model.add_hint(arena, upper)
    model.minimize(arena)
    run = solve_model(model, options)
    if not run.has_solution or run.solver.objective_value >= upper:
        proven = max(bound, int(np.ceil(run.solver.best_objective_bound - 1e-9)))
        status = SolveStatus.OPTIMAL if run.status is SolveStatus.OPTIMAL else SolveStatus.FEASIBLE
        return PlacementSolution(
            status, warm, upper, min(proven, upper), bound, upper,
            time.perf_counter() - started, run.incumbents,
        )  # fmt: skip
    offsets = [0] * len(tensors)
    for group, base in zip(groups, bases, strict=True):
        value = run.solver.value(base)
        for i, rel in group.members:
            offsets[i] = value + rel
    found = arena_of(tensors, tuple(offsets))
    proven = max(bound, int(np.ceil(run.solver.best_objective_bound - 1e-9)))
    return PlacementSolution(
        run.status, tuple(offsets), found, min(proven, found), bound, upper,
        time.perf_counter() - started, run.incumbents,
    )  # fmt: skip
