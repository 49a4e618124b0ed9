"""What scattering is compared with, priced on the same cost table, and the schedule type
every method returns.

A ``Schedule`` is a list of micro-batches, each a list of groups ``(size, sequence
indices)``. Sequence i is of row ``rows_of[i]`` of a ``ScatterTable``. Methods:

(a) ``static_degree``: one sequence-parallel (context-parallel) degree d for the whole
    batch, as Megatron-LM and torchtitan run it: N // d groups (data-parallel replicas),
    sequences packed, longest first (first fit), into bins of at most the longest
    sequence's tokens ("pack to the longest") that also fit in memory, bins dealt to the
    groups slowest-bin first onto the least loaded group. The groups only synchronise at
    the end of the step, so the step is the busiest group's total. Dealing balanced by
    time is generous to this baseline: Megatron's sampler deals samples in index order.
    ``best_static_degree`` keeps the fastest d whose groups hold the longest sequence.
(b) ``megatron_hybrid_cp``: Megatron-Core's ``--hybrid-context-parallel`` scheduler as it
    is documented (``BalancedCPScheduler`` in megatron/core/pipeline_parallel/
    hybrid_cp_schedule.py): every sub-sample gets CP size
    ``2^ceil(log2(len / max_seqlen_per_rank))`` (here the smallest allowed size that holds
    it in memory, the same number when the memory is that many tokens per GPU), work
    ``len^2 / cp``; sequences, longest first, go to the least loaded existing group of
    their CP size or to a new group from the free GPUs when that is less loaded; once a
    smaller CP size has been seen the execution group closes when the ranks' work is
    within 5% (``delta = 0.05``); GPUs left empty are given to the smallest groups by
    doubling them. Each rank runs its sub-samples one after another, so memory is checked
    per sub-sample. Not modelled: its rebalancing step that moves the last sub-sample off
    an overloaded rank. Execution groups run one after another.
(c) ``best_fit_decreasing_schedule``: the blaster, then best-fit-decreasing on each
    micro-batch (``solvers.scatter_greedy``).

Every method's time is read from the table (``time_us``), not from its own estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from solvers.scatter import ScatterProblem, ScatterTable
from solvers.scatter_greedy import Packing, best_fit_decreasing, blast, counts_of

Group = tuple[int, tuple[int, ...]]
"""(size, sequence indices)."""
Schedule = list[list[Group]]

MEGATRON_SLACK = 0.05
"""``delta`` of Megatron-Core's ``next_hdp_group``: stop when the work is within 5%."""


@dataclass(frozen=True)
class Priced:
    """A method's schedule and its predicted step time."""

    method: str
    schedule: Schedule
    step_us: int
    detail: str = ""


def group_time_us(table: ScatterTable, rows_of: Sequence[int], group: Group) -> int:
    j = table.sizes.index(group[0])
    return sum(table.time_us[rows_of[i]][j] for i in group[1])


def group_memory(table: ScatterTable, rows_of: Sequence[int], group: Group) -> int:
    """Per-GPU memory of the group's sequences packed together."""
    j = table.sizes.index(group[0])
    return sum(table.memory[rows_of[i]][j] for i in group[1])


def synchronised_step_us(table: ScatterTable, rows_of: Sequence[int], schedule: Schedule) -> int:
    """Micro-batches one after another, each as long as its slowest group."""
    return sum(max(group_time_us(table, rows_of, group) for group in micro) for micro in schedule)


def expand(
    table: ScatterTable, rows_of: Sequence[int], batch: Sequence[int], packing: Packing
) -> list[Group]:
    """Sequence indices for a packing of counts per row over the micro-batch ``batch``."""
    waiting: dict[int, list[int]] = {}
    for i in sorted(batch, key=lambda i: -table.lengths[rows_of[i]]):
        waiting.setdefault(rows_of[i], []).append(i)
    groups = []
    for j, counts in packing:
        members = [waiting[r].pop() for r, c in enumerate(counts) for _ in range(c)]
        groups.append((table.sizes[j], tuple(sorted(members))))
    if any(waiting.values()):
        raise ValueError("the packing does not hold every sequence of the micro-batch")
    return groups


def best_fit_decreasing_schedule(table: ScatterTable, rows_of: Sequence[int]) -> Priced:
    """(c): blaster, then best-fit-decreasing per micro-batch."""
    schedule = []
    for batch in blast(table, rows_of):
        packing = best_fit_decreasing(ScatterProblem(table, counts_of(table, rows_of, batch)))
        assert packing is not None  # the blaster kept only micro-batches it packs
        schedule.append(expand(table, rows_of, batch, packing))
    return Priced("best_fit_decreasing", schedule, synchronised_step_us(table, rows_of, schedule))


def static_degree(table: ScatterTable, rows_of: Sequence[int], j: int) -> Priced | None:
    """(a) at degree ``sizes[j]``, or None when its groups cannot hold the longest."""
    if any(not table.fits(r, j) for r in set(rows_of)):
        return None
    size = table.sizes[j]
    longest = max(table.lengths[r] for r in rows_of)
    bins: list[list[int]] = []
    tokens: list[int] = []
    memory: list[int] = []
    for i in sorted(range(len(rows_of)), key=lambda i: (-table.lengths[rows_of[i]], i)):
        r = rows_of[i]
        k = next(
            (
                k
                for k in range(len(bins))
                if tokens[k] + table.lengths[r] <= longest
                and memory[k] + table.memory[r][j] <= table.capacity
            ),
            None,
        )
        if k is None:
            bins.append([])
            tokens.append(0)
            memory.append(0)
            k = len(bins) - 1
        bins[k].append(i)
        tokens[k] += table.lengths[r]
        memory[k] += table.memory[r][j]
    replicas = table.gpus // size
    loads = [0] * replicas
    dealt: list[list[list[int]]] = [[] for _ in range(replicas)]
    bin_time = [sum(table.time_us[rows_of[i]][j] for i in b) for b in bins]
    for k in sorted(range(len(bins)), key=lambda k: -bin_time[k]):
        g = min(range(replicas), key=lambda g: (loads[g], g))
        dealt[g].append(bins[k])
        loads[g] += bin_time[k]
    depth = max(len(d) for d in dealt)
    schedule = [
        [(size, tuple(sorted(d[step]))) for d in dealt if step < len(d)] for step in range(depth)
    ]
    return Priced(f"static_sp{size}", schedule, max(loads), f"degree {size}, {replicas} groups")


def best_static_degree(table: ScatterTable, rows_of: Sequence[int]) -> Priced:
    """(a): the fastest static degree whose groups hold every sequence."""
    candidates = [static_degree(table, rows_of, j) for j in range(len(table.sizes))]
    found = [c for c in candidates if c is not None]
    if not found:
        raise ValueError("no static degree holds the longest sequence")
    return min(found, key=lambda priced: priced.step_us)


def megatron_hybrid_cp(table: ScatterTable, rows_of: Sequence[int]) -> Priced:
    """(b): Megatron-Core's greedy hybrid-CP scheduler (module docstring)."""
    need = {r: table.smallest_fit(r) for r in set(rows_of)}
    if any(j is None for j in need.values()):
        raise ValueError("a sequence fits no group size")
    remaining = sorted(range(len(rows_of)), key=lambda i: (-table.lengths[rows_of[i]], i))
    schedule: Schedule = []
    while remaining:
        groups, remaining = _next_execution_group(table, rows_of, need, remaining)
        schedule.append(groups)
    return Priced("megatron_hybrid_cp", schedule, synchronised_step_us(table, rows_of, schedule))


def _work(table: ScatterTable, row: int, size: int) -> float:
    return table.lengths[row] ** 2 / size


def _next_execution_group(
    table: ScatterTable, rows_of: Sequence[int], need: dict, remaining: list[int]
) -> tuple[list[Group], list[int]]:
    free = table.gpus
    sizes: list[int] = []
    members: list[list[int]] = []
    work: list[float] = []
    left: list[int] = []
    previous, balancing = None, False
    for position, i in enumerate(remaining):
        r = rows_of[i]
        size = table.sizes[need[r]]
        same = [g for g in range(len(sizes)) if sizes[g] == size]
        best = min(same, key=lambda g: work[g]) if same else None
        if size <= free and (best is None or work[best] > 0):
            sizes.append(size)
            members.append([])
            work.append(0.0)
            free -= size
            best = len(sizes) - 1
        if best is None:
            left.append(i)
            continue
        members[best].append(i)
        work[best] += _work(table, r, size)
        previous = size if previous is None else previous
        balancing = balancing or size < previous
        rank_work = [*work, 0.0] if free else work
        later = left or position + 1 < len(remaining)
        slack = max(rank_work) - min(rank_work)
        if balancing and later and slack <= MEGATRON_SLACK * max(rank_work):
            left.extend(remaining[position + 1 :])
            break
    while free:
        small = [g for g in range(len(sizes)) if sizes[g] <= free and 2 * sizes[g] in table.sizes]
        if not small:
            break  # Megatron asserts here; the GPUs stay idle in this micro-batch
        g = min(small, key=lambda g: (sizes[g], g))
        free -= sizes[g]
        sizes[g] *= 2
    return [(sizes[g], tuple(sorted(members[g]))) for g in range(len(sizes))], left
