"""Greedy steps around the scattering model: best-fit-decreasing packing and the sequence
blaster.

Best-fit-decreasing (``best_fit_decreasing``) is baseline (c) of the comparison and one
candidate warm start of ``solvers.scatter`` (``best_greedy`` hints the fastest of it,
``uniform_lpt`` at every size and ``balanced_packing``, a bisection on the makespan):
sequences, longest first, go to the open group of a size that holds them with the least
memory left after the move (best fit); when none has room a new group of the smallest size
that holds the sequence opens, if enough GPUs are free.
GPUs still free at the end are given away so that exactly N are used: the slowest group
whose next allowed size fits in the free GPUs grows to it, or, when no group can grow, a
new group of the largest size that fits in the free GPUs takes one sequence from the
slowest group that has more than one.

``rebalance`` shortens a micro-batch's slowest group by single moves and swaps on the
exact per-sequence costs, after the solver placed bucketed counts.

The sequence blaster (``blast``) splits a global batch into the fewest micro-batches whose
sequences best-fit-decreasing can pack, starting from the lower bound
``ceil(sum_i min_j(u_{i,j} s_j) / (N C))`` (the GPU memory every sequence needs on its
cheapest group, over the memory of the cluster) and adding one micro-batch at a time.
Sequences are dealt longest first to the micro-batch holding the least of that memory so
far, so every micro-batch gets a similar share of long and short sequences. Packing is a
sufficient test of fit, not a necessary one: the blaster may use one micro-batch more
than an exact test would.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from solvers.scatter import ScatterProblem, ScatterTable

Packing = list[tuple[int, tuple[int, ...]]]
"""Groups as (size index, sequences per row)."""


@dataclass
class _Group:
    j: int
    counts: list[int]
    memory: int = 0
    time_us: int = 0

    @property
    def size(self) -> int:
        return sum(self.counts)

    def add(self, table: ScatterTable, row: int, k: int = 1) -> None:
        self.counts[row] += k
        self.memory += table.memory[row][self.j] * k
        self.time_us += table.time_us[row][self.j] * k

    def remove(self, table: ScatterTable, row: int) -> None:
        self.add(table, row, -1)

    def resize(self, table: ScatterTable, j: int) -> None:
        self.j = j
        self.memory = sum(table.memory[r][j] * c for r, c in enumerate(self.counts))
        self.time_us = sum(table.time_us[r][j] * c for r, c in enumerate(self.counts))


def _rows_longest_first(table: ScatterTable, counts: Sequence[int]) -> list[int]:
    rows = [r for r, c in enumerate(counts) if c]
    rows.sort(key=lambda r: (-table.lengths[r], -max(table.time_us[r]), r))
    return rows


def _longest_first(table: ScatterTable, counts: Sequence[int]) -> list[int]:
    return [r for r in _rows_longest_first(table, counts) for _ in range(counts[r])]


def best_fit_decreasing(problem: ScatterProblem) -> Packing | None:
    """A packing that uses exactly N GPUs, or None when the greedy finds none.

    Sequences of one row are identical, so they are placed in bulk: as many as fit go to
    the best-fitting group, then the next; the same placement as one at a time."""
    table = problem.table
    groups: list[_Group] = []
    free = table.gpus
    for row in _rows_longest_first(table, problem.counts):
        least = table.smallest_fit(row)
        if least is None:
            return None
        left = problem.counts[row]
        while left:
            best, best_room = None, None
            for group in groups:
                if group.j < least:
                    continue
                room = table.capacity - group.memory - table.memory[row][group.j]
                if room >= 0 and (best_room is None or room < best_room):
                    best, best_room = group, room
            if best is None:
                if table.sizes[least] > free:
                    return None
                best = _Group(least, [0] * table.rows)
                groups.append(best)
                free -= table.sizes[least]
            unit = table.memory[row][best.j]
            room = table.capacity - best.memory
            k = left if unit == 0 else min(left, room // unit)
            best.add(table, row, k)
            left -= k
    if not _give_away(table, groups, free):
        return None
    return [(g.j, tuple(g.counts)) for g in groups]


def _give_away(table: ScatterTable, groups: list[_Group], free: int) -> bool:
    """Use the ``free`` GPUs left (module docstring); False when they cannot be used."""
    sizes = table.sizes
    while free > 0:
        growable = [
            g for g in groups if g.j + 1 < len(sizes) and sizes[g.j + 1] - sizes[g.j] <= free
        ]  # memory per GPU never grows with the size (``ScatterTable`` checks it)
        if growable:
            group = max(growable, key=lambda g: g.time_us)
            free -= sizes[group.j + 1] - sizes[group.j]
            group.resize(table, group.j + 1)
            continue
        fitting = [j for j, size in enumerate(sizes) if size <= free]
        if not fitting:
            return False
        j = fitting[-1]
        donors = sorted((g for g in groups if g.size > 1), key=lambda g: -g.time_us)
        moved = next(
            ((g, r) for g in donors for r in range(table.rows) if g.counts[r] and table.fits(r, j)),
            None,
        )
        if moved is None:
            return False
        donor, row = moved
        donor.remove(table, row)
        fresh = _Group(j, [0] * table.rows)
        fresh.add(table, row)
        groups.append(fresh)
        free -= sizes[j]
    return True


def uniform_lpt(problem: ScatterProblem, j: int) -> Packing | None:
    """Groups of one size ``sizes[j]`` with the longest sequences on their own larger groups.

    Every sequence too large for ``sizes[j]`` gets a group of the smallest size that holds
    it; the remaining GPUs form groups of ``sizes[j]`` (no more than there are sequences
    for them), and the other sequences, slowest first, go to the least loaded of those
    that has room (longest processing time first); GPUs still free are given away as in
    best-fit-decreasing. None when that does not pack.
    """
    table = problem.table
    size = table.sizes[j]
    rows = _longest_first(table, problem.counts)
    if any(table.smallest_fit(r) is None for r in rows):
        return None
    big = [r for r in rows if table.smallest_fit(r) > j]  # type: ignore[operator]
    small = [r for r in rows if table.smallest_fit(r) <= j]  # type: ignore[operator]
    groups: list[_Group] = []
    free = table.gpus
    for row in big:
        least = table.smallest_fit(row)
        assert least is not None
        if table.sizes[least] > free:
            return None
        group = _Group(least, [0] * table.rows)
        group.add(table, row)
        groups.append(group)
        free -= table.sizes[least]
    uniform = [_Group(j, [0] * table.rows) for _ in range(min(free // size, len(small)))]
    free -= size * len(uniform)
    small.sort(key=lambda r: (-table.time_us[r][j], r))
    heap = [(0, g) for g in range(len(uniform))]
    for row in small:
        skipped = []
        while heap:
            load, g = heapq.heappop(heap)
            if uniform[g].memory + table.memory[row][j] <= table.capacity:
                uniform[g].add(table, row)
                heapq.heappush(heap, (uniform[g].time_us, g))
                break
            skipped.append((load, g))
        else:
            # no group of this size has room: the least loaded larger group that has
            roomy = [
                g for g in groups
                if g.memory + table.memory[row][g.j] <= table.capacity
            ]  # fmt: skip
            if not roomy:
                return None
            min(roomy, key=lambda g: (g.time_us + table.time_us[row][g.j], g.j)).add(table, row)
        for item in skipped:
            heapq.heappush(heap, item)
    groups += [g for g in uniform if g.size]
    free += size * sum(1 for g in uniform if not g.size)
    if not _give_away(table, groups, free):
        return None
    return [(g.j, tuple(g.counts)) for g in groups]


def target_packing(problem: ScatterProblem, target_us: int) -> Packing | None:
    """A packing whose groups all finish within ``target_us``, or None when this greedy
    finds none: every sequence takes the smallest size that holds it and runs it within
    the target; slowest first, each goes to the open group of at least that size where it
    leaves the least time before the target (best fit decreasing; a larger group runs it
    faster and holds it in less memory), else opens a group of its size; GPUs left are
    given away."""
    table = problem.table
    chosen = []
    for row, count in enumerate(problem.counts):
        if not count:
            continue
        j = next(
            (
                j
                for j in range(len(table.sizes))
                if table.fits(row, j) and table.time_us[row][j] <= target_us
            ),
            None,
        )
        if j is None:
            return None
        chosen.append((row, j))
    chosen.sort(key=lambda item: (-table.time_us[item[0]][item[1]], item[1]))
    groups: list[_Group] = []
    free = table.gpus
    for row, j in chosen:
        left = problem.counts[row]
        # best fit in bulk: groups of at least this size, least time left first
        order = sorted(
            (g for g in groups if g.j >= j),
            key=lambda g: target_us - g.time_us - table.time_us[row][g.j],
        )
        for g in order:
            k = _room(table, g, row, target_us, left)
            if k:
                g.add(table, row, k)
                left -= k
            if not left:
                break
        while left:
            if table.sizes[j] > free:
                return None
            g = _Group(j, [0] * table.rows)
            groups.append(g)
            free -= table.sizes[j]
            k = max(1, _room(table, g, row, target_us, left))
            g.add(table, row, k)
            left -= k
    if not _give_away(table, groups, free):
        return None
    return [(g.j, tuple(g.counts)) for g in groups]


def _room(table: ScatterTable, g: _Group, row: int, target_us: int, most: int) -> int:
    """How many sequences of ``row`` group ``g`` still takes within time and memory."""
    t, u = table.time_us[row][g.j], table.memory[row][g.j]
    by_time = most if t == 0 else (target_us - g.time_us) // t
    by_memory = most if u == 0 else (table.capacity - g.memory) // u
    return max(0, min(most, by_time, by_memory))


def balanced_packing(problem: ScatterProblem, upper_us: int, lower_us: int) -> Packing | None:
    """``target_packing`` at the least target it meets, by bisection between a lower bound
    and a makespan already reached (about 12 halvings of the gap)."""
    best = None
    lo, hi = lower_us, upper_us
    for _ in range(12):
        if lo >= hi:
            break
        mid = (lo + hi) // 2
        found = target_packing(problem, mid)
        if found is None:
            lo = mid + 1
        else:
            best, hi = found, makespan_us(problem.table, found)
    return best


def makespan_us(table: ScatterTable, packing: Packing) -> int:
    return max(sum(table.time_us[r][j] * c for r, c in enumerate(k)) for j, k in packing)


BFD_HINT_GPUS = 64
"""Best-fit-decreasing joins the hint's candidates up to this many GPUs: beyond, its scan
of every open group per placement costs seconds, and minimising groups rarely minimises
the makespan."""


def best_greedy(problem: ScatterProblem) -> Packing | None:
    """The fastest of best-fit-decreasing (up to ``BFD_HINT_GPUS``), ``uniform_lpt`` at
    every size and ``balanced_packing`` below the best of those: the hint."""
    from solvers.scatter import lower_bound_us

    found = [best_fit_decreasing(problem)] if problem.table.gpus <= BFD_HINT_GPUS else []
    found += [uniform_lpt(problem, j) for j in range(len(problem.table.sizes))]
    packings = [p for p in found if p is not None]
    upper = min((makespan_us(problem.table, p) for p in packings), default=None)
    if upper is None:
        upper = sum(
            max(row) * c for row, c in zip(problem.table.time_us, problem.counts, strict=True)
        )
    balanced = balanced_packing(problem, upper, lower_bound_us(problem))
    if balanced is not None:
        packings.append(balanced)
    if not packings:
        return None
    return min(packings, key=lambda p: makespan_us(problem.table, p))


def memory_area(table: ScatterTable, row: int) -> int:
    """The least GPU memory (summed over the group) one sequence of ``row`` needs."""
    return min(table.memory[row][j] * size for j, size in enumerate(table.sizes))


def blast(table: ScatterTable, rows_of: Sequence[int]) -> list[list[int]]:
    """Split the sequences (``rows_of[i]`` is sequence i's row) into the fewest
    micro-batches that best-fit-decreasing packs; each micro-batch lists sequence indices.

    Raises ``ValueError`` when a sequence fits no group size, or no split is found.
    """
    if not rows_of:
        raise ValueError("the batch holds no sequence")
    for i, row in enumerate(rows_of):
        if table.smallest_fit(row) is None:
            raise ValueError(
                f"sequence {i} ({table.lengths[row]} tokens) does not fit in memory even on "
                f"a group of {table.sizes[-1]} GPUs"
            )
    order = sorted(range(len(rows_of)), key=lambda i: (-table.lengths[rows_of[i]], i))
    area = [memory_area(table, rows_of[i]) for i in range(len(rows_of))]
    start = max(1, math.ceil(sum(area) / (table.gpus * table.capacity)))
    for parts in range(start, len(rows_of) + 1):
        batches: list[list[int]] = [[] for _ in range(parts)]
        held = [0] * parts
        for i in order:
            k = min(range(parts), key=lambda b: (held[b], b))
            batches[k].append(i)
            held[k] += area[i]
        if all(_packs(table, rows_of, batch) for batch in batches):
            return [sorted(batch) for batch in batches]
    raise ValueError("no split of the batch into micro-batches packs onto the GPUs")


def counts_of(table: ScatterTable, rows_of: Sequence[int], batch: Sequence[int]) -> tuple[int, ...]:
    """Sequences per row of the micro-batch ``batch`` (sequence indices)."""
    counts = [0] * table.rows
    for i in batch:
        counts[rows_of[i]] += 1
    return tuple(counts)


def _packs(table: ScatterTable, rows_of: Sequence[int], batch: Sequence[int]) -> bool:
    if not batch:
        return False
    problem = ScatterProblem(table, counts_of(table, rows_of, batch))
    return best_fit_decreasing(problem) is not None


def rebalance(
    table: ScatterTable,
    rows_of: Sequence[int],
    groups: list[tuple[int, tuple[int, ...]]],
    max_moves: int = 500,
    time_limit_s: float = 1.0,
) -> list[tuple[int, tuple[int, ...]]]:
    """Shorten a micro-batch's slowest group by moving or swapping single sequences.

    ``groups`` are (size, sequence indices) priced on ``table`` (the exact one, where the
    solver ran on buckets). While some move helps: take the slowest group; move one of its
    sequences to the group where it ends earliest, or swap it with a shorter one of
    another group, when both groups then end before the slowest did and both still fit in
    memory. Each step shortens the slowest group or leaves one fewer at the makespan, so
    the makespan never grows; at most ``max_moves`` steps or ``time_limit_s`` seconds.
    """
    stop_at = time.perf_counter() + time_limit_s
    sizes = [table.sizes.index(size) for size, _ in groups]
    members = [list(m) for _, m in groups]

    def time_of(g: int, i: int) -> int:
        return table.time_us[rows_of[i]][sizes[g]]

    def mem_of(g: int, i: int) -> int:
        return table.memory[rows_of[i]][sizes[g]]

    busy = [sum(time_of(g, i) for i in m) for g, m in enumerate(members)]
    held = [sum(mem_of(g, i) for i in m) for g, m in enumerate(members)]
    for _ in range(max_moves):
        if time.perf_counter() > stop_at:
            break
        slow = max(range(len(groups)), key=lambda g: busy[g])
        top = busy[slow]
        best = None  # (new worst of the two groups, kind, i, other group, j)
        for i in members[slow]:
            if len(members[slow]) == 1:
                break
            for h in range(len(groups)):
                if h == slow or held[h] + mem_of(h, i) > table.capacity:
                    continue
                after = max(busy[slow] - time_of(slow, i), busy[h] + time_of(h, i))
                if after < top and (best is None or after < best[0]):
                    best = (after, "move", i, h, -1)
        if best is None:
            for i in members[slow]:
                for h in range(len(groups)):
                    if h == slow:
                        continue
                    for j in members[h]:
                        gain = time_of(slow, i) - time_of(slow, j)
                        if gain <= 0:
                            continue
                        mine = busy[slow] - gain
                        theirs = busy[h] - time_of(h, j) + time_of(h, i)
                        fits = (
                            held[slow] - mem_of(slow, i) + mem_of(slow, j) <= table.capacity
                            and held[h] - mem_of(h, j) + mem_of(h, i) <= table.capacity
                        )
                        after = max(mine, theirs)
                        if fits and after < top and (best is None or after < best[0]):
                            best = (after, "swap", i, h, j)
        if best is None:
            break
        _, kind, i, h, j = best
        members[slow].remove(i)
        busy[slow] -= time_of(slow, i)
        held[slow] -= mem_of(slow, i)
        members[h].append(i)
        busy[h] += time_of(h, i)
        held[h] += mem_of(h, i)
        if kind == "swap":
            members[h].remove(j)
            busy[h] -= time_of(h, j)
            held[h] -= mem_of(h, j)
            members[slow].append(j)
            busy[slow] += time_of(slow, j)
            held[slow] += mem_of(slow, j)
    return [(table.sizes[sizes[g]], tuple(sorted(m))) for g, m in enumerate(members)]
