"""``scatter()``: place each batch's sequences on sequence-parallel groups, and compare.

Per batch:
1. the per-sequence cost (``planner.scattering.cost``) gives two tables for the solver
   (``solvers.scatter.ScatterTable``): an exact one, one row per distinct length, on which
   every method is priced, and a bucketed one (at most ``buckets`` rows, log-spaced in
   length; memory of the bucket's longest, time the mean of its members) the solver
   runs on;
2. the sequence blaster splits the batch into the fewest micro-batches that pack;
3. CP-SAT places each micro-batch (the batch's time limit shared among them), warm-started
   from the best greedy packing; the buckets' shares go to actual sequences slowest first
   onto the least loaded group, then single moves and swaps shorten the slowest group on
   the exact table (``solvers.scatter_greedy.rebalance``);
4. the plan is priced on the exact table, as are the baselines (a) best static degree,
   (b) Megatron-Core's hybrid-CP scheduler, (c) best-fit-decreasing
   (``solvers.scatter_baselines``). When (a) or (c) is faster than the solver's plan the
   batch keeps it (both are plans the same runtime runs) and says so in ``method``.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter
from collections.abc import Sequence

from planner.errors import SpecError
from planner.scattering.cost import CpAlgo, SequenceCost, sequence_cost
from planner.scattering.lengths import cut
from planner.scattering.result import (
    Baseline,
    BatchResult,
    CostInfo,
    MicroBatch,
    ScatterResult,
    SPGroup,
    Summary,
)
from planner.specs.hardware import ClusterSpec
from planner.specs.model import ModelSpec
from solvers import SolveOptions, SolveStatus
from solvers.scatter import ScatterProblem, ScatterTable, solve
from solvers.scatter_baselines import (
    Priced,
    Schedule,
    best_fit_decreasing_schedule,
    best_static_degree,
    megatron_hybrid_cp,
    synchronised_step_us,
)
from solvers.scatter_greedy import blast, counts_of, rebalance

DEFAULT_TIME_LIMIT_S = 1.0
DEFAULT_BUCKETS = 16
SOLVER_SHARE = 0.8
"""Of each micro-batch's share of the time limit, what the solver (greedy + CP-SAT) may
use; the rebalancing on exact costs gets what is left."""
REBALANCE_FLOOR = 0.15
"""The rebalancing gets at least this share of a micro-batch's time even when the greedy
overran (it is cheap and recovers most of what bucketing loses), so a batch may exceed
its time limit by up to this share."""
GIB = 2**30
KIB = 1024
US = 1e-6


def build_table(cost: SequenceCost, lengths: Sequence[int]) -> ScatterTable:
    """Rows at ``lengths``; sizes the chosen exchange allows; times in us, memory in KiB,
    both rounded up (module docstring of ``solvers.scatter``)."""
    sizes = tuple(s for s in cost.sizes if s == 1 or cost.algos(s))
    times = []
    memory = []
    for length in lengths:
        times.append(tuple(math.ceil(cost.time_s(length, s)[0] / US) for s in sizes))
        memory.append(tuple(math.ceil(cost.memory_bytes(length, s) / KIB) for s in sizes))
    return ScatterTable(
        gpus=cost.cluster.num_gpus,
        sizes=sizes,
        lengths=tuple(lengths),
        time_us=tuple(times),
        memory=tuple(memory),
        capacity=int(cost.room_bytes // KIB),
    )


def bucket_lengths(distinct: Sequence[int], buckets: int) -> list[int]:
    """For each distinct length (ascending), its bucket's longest length: ``buckets``
    log-spaced buckets between the shortest and the longest; all of them when few."""
    if len(distinct) <= buckets:
        return list(distinct)
    low, high = math.log(distinct[0]), math.log(distinct[-1])
    width = (high - low) / buckets
    index = [min(buckets - 1, int((math.log(n) - low) / width)) for n in distinct]
    top: dict[int, int] = {}
    for k, n in zip(index, distinct, strict=True):
        top[k] = max(top.get(k, 0), n)
    return [top[k] for k in index]


def _check_lengths(cost: SequenceCost, lengths: Sequence[int], batch: int) -> None:
    most = cost.tokens_per_gpu * cost.sizes[-1]
    for i, length in enumerate(lengths):
        if length > most:
            raise SpecError(
                f"seq_lengths: batch {batch} sequence {i} has {length:,} tokens; the "
                f"{cost.cluster.num_gpus} GPUs hold at most {most:,} tokens of one sequence "
                f"({cost.tokens_per_gpu:,} per GPU)"
            )


def bucket_table(
    exact: ScatterTable, rows_of: Sequence[int], buckets: int
) -> tuple[ScatterTable, list[int]]:
    """The solver's table: exact rows merged into at most ``buckets`` log-spaced buckets.

    A bucket's memory is its longest member's (so every packing the solver finds fits),
    its time the mean of its members' (rounded up), so that the time a bucket adds to the
    groups in total is its members' total, whichever members go where."""
    tops = bucket_lengths(list(exact.lengths), buckets)
    top_rows = sorted(set(tops))
    bucket_of = [top_rows.index(t) for t in tops]
    members = Counter(rows_of)
    times = []
    memory = []
    for k in range(len(top_rows)):
        rows = [r for r in range(exact.rows) if bucket_of[r] == k]
        weight = sum(members[r] for r in rows)
        times.append(
            tuple(
                math.ceil(sum(exact.time_us[r][j] * members[r] for r in rows) / weight)
                for j in range(len(exact.sizes))
            )
        )
        memory.append(tuple(max(exact.memory[r][j] for r in rows) for j in range(len(exact.sizes))))
    table = ScatterTable(
        gpus=exact.gpus,
        sizes=exact.sizes,
        lengths=tuple(top_rows),
        time_us=tuple(times),
        memory=tuple(memory),
        capacity=exact.capacity,
    )
    return table, [bucket_of[r] for r in rows_of]


def _solve_batch(
    exact: ScatterTable, rows_of: list[int], time_limit_s: float, buckets: int
) -> tuple[Schedule, str, float, int]:
    bucketed, bucket_rows = bucket_table(exact, rows_of, buckets)
    started = time.perf_counter()
    micro = blast(bucketed, bucket_rows)
    schedule: Schedule = []
    statuses = []
    for done, batch in enumerate(micro):
        left = time_limit_s - (time.perf_counter() - started)
        share = max(0.01, left / (len(micro) - done))
        problem = ScatterProblem(bucketed, counts_of(bucketed, bucket_rows, batch))
        options = SolveOptions(time_limit_s=SOLVER_SHARE * share, workers=1)
        solution = solve(problem, options)
        if not solution.groups:
            raise SpecError(
                f"seq_lengths: no placement found for a micro-batch ({solution.status.value})"
            )
        packing = [(bucketed.sizes.index(g.size), g.counts) for g in solution.groups]
        placed = _members(exact, rows_of, bucket_rows, batch, packing)
        spent = time.perf_counter() - started
        planned = time_limit_s * (done + 1) / len(micro) - spent
        budget = max(REBALANCE_FLOOR * time_limit_s / len(micro), planned)
        schedule.append(rebalance(exact, rows_of, placed, time_limit_s=budget))
        statuses.append(solution.status)
    optimal = all(s is SolveStatus.OPTIMAL for s in statuses)
    status = "optimal" if optimal else SolveStatus.FEASIBLE.value
    return schedule, status, time.perf_counter() - started, bucketed.rows


def _members(
    exact: ScatterTable,
    rows_of: Sequence[int],
    bucket_rows: Sequence[int],
    batch: Sequence[int],
    packing: list[tuple[int, tuple[int, ...]]],
) -> list[tuple[int, tuple[int, ...]]]:
    """Which sequences fill each group's share of each bucket: slowest first, each to the
    group with the least exact time so far among those with room left in its bucket (any
    member fits where the bucket's longest does). One heap per bucket; an entry is used
    only while it shows its group's current time."""
    left = [list(counts) for _, counts in packing]
    busy = [0] * len(packing)
    members: list[list[int]] = [[] for _ in packing]
    heaps: dict[int, list[tuple[int, int]]] = {}
    for g, (_, counts) in enumerate(packing):
        for k, c in enumerate(counts):
            if c:
                heaps.setdefault(k, []).append((0, g))
    slowest_first = sorted(batch, key=lambda i: (-exact.lengths[rows_of[i]], i))
    for i in slowest_first:
        k = bucket_rows[i]
        heap = heaps[k]
        while True:  # entries are stale when the group's time moved or its share ran out
            load, g = heapq.heappop(heap)
            if load == busy[g] and left[g][k] > 0:
                break
        left[g][k] -= 1
        busy[g] += exact.time_us[rows_of[i]][packing[g][0]]
        members[g].append(i)
        for k2, c in enumerate(left[g]):
            if c:
                heapq.heappush(heaps[k2], (busy[g], g))
    return [(exact.sizes[j], tuple(sorted(m))) for (j, _), m in zip(packing, members, strict=True)]


def _groups(
    cost: SequenceCost, table: ScatterTable, rows_of: list[int], lengths: list[int], micro: list
) -> MicroBatch:
    groups = []
    for size, members in micro:
        j = table.sizes.index(size)
        tokens = sum(lengths[i] for i in members)
        placement = cost.placement(size)
        groups.append(
            SPGroup(
                size=size,
                placement="inside node" if placement.intra_node else "across nodes",
                nodes=placement.nodes,
                exchange=cost.time_s(max(lengths[i] for i in members), size)[1],
                sequences=list(members),
                lengths=[lengths[i] for i in members],
                tokens=tokens,
                time_s=sum(table.time_us[rows_of[i]][j] for i in members) * US,
                memory_per_gpu_gib=(cost.fixed_bytes + cost.bytes_per_token * tokens / size) / GIB,
            )
        )
    groups.sort(key=lambda g: (-g.size, -g.time_s))
    return MicroBatch(
        groups=groups,
        tokens=sum(g.tokens for g in groups),
        time_s=max(g.time_s for g in groups),
    )


def _batch(
    cost: SequenceCost, index: int, lengths: list[int], time_limit_s: float, buckets: int
) -> BatchResult:
    _check_lengths(cost, lengths, index)
    distinct = sorted(set(lengths))
    exact = build_table(cost, distinct)
    rows_of = _rows(distinct, lengths)
    schedule, status, solve_s, rows = _solve_batch(exact, rows_of, time_limit_s, buckets)
    ours = Priced("scatter", schedule, synchronised_step_us(exact, rows_of, schedule))
    static = best_static_degree(exact, rows_of)
    hybrid = megatron_hybrid_cp(exact, rows_of)
    greedy = best_fit_decreasing_schedule(exact, rows_of)
    chosen = min((ours, static, greedy), key=lambda p: p.step_us)
    baselines = [
        Baseline(
            name=name,
            step_time_s=priced.step_us * US,
            micro_batches=len(priced.schedule),
            detail=priced.detail or priced.method,
            speedup=priced.step_us / chosen.step_us,
        )
        for name, priced in (
            ("static", static),
            ("megatron_hybrid_cp", hybrid),
            ("best_fit_decreasing", greedy),
        )
    ]
    return BatchResult(
        index=index,
        sequences=len(lengths),
        tokens=sum(lengths),
        longest=max(lengths),
        method=chosen.method,
        step_time_s=chosen.step_us * US,
        micro_batches=[_groups(cost, exact, rows_of, lengths, m) for m in chosen.schedule],
        status=status,
        solve_s=solve_s,
        buckets=rows,
        baselines=baselines,
    )


def _rows(distinct: list[int], lengths: list[int]) -> list[int]:
    where = {n: r for r, n in enumerate(distinct)}
    return [where[n] for n in lengths]


def scatter(
    *,
    model: ModelSpec,
    cluster: ClusterSpec,
    batches: Sequence[Sequence[int]],
    max_seq_len: int | None = None,
    cp_algo: CpAlgo = "auto",
    precision: str = "bf16",
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    buckets: int = DEFAULT_BUCKETS,
    lengths_source: str = "given lengths",
) -> ScatterResult:
    """Scatter every batch of sequence lengths over ``cluster`` (module docstring).

    ``time_limit_s`` is the solver's budget per batch. Raises ``SpecError`` naming the
    field for a length that is not positive or that the whole cluster cannot hold.
    """
    if not batches:
        raise SpecError("seq_lengths: no batch given")
    if time_limit_s <= 0:
        raise SpecError(f"time_limit_s: must be positive, got {time_limit_s}")
    if buckets < 1:
        raise SpecError(f"buckets: must be at least 1, got {buckets}")
    if max_seq_len is not None and max_seq_len < 1:
        raise SpecError(f"max_seq_len: must be positive, got {max_seq_len}")
    for b, batch in enumerate(batches):
        if not batch:
            raise SpecError(f"seq_lengths: batch {b} is empty")
        for i, n in enumerate(batch):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise SpecError(
                    f"seq_lengths: batch {b} item {i} must be a positive whole number, got {n!r}"
                )
    cost = sequence_cost(model=model, cluster=cluster, precision=precision, cp_algo=cp_algo)
    results = [
        _batch(cost, b, cut(list(batch), max_seq_len), time_limit_s, buckets)
        for b, batch in enumerate(batches)
    ]
    ours = sum(r.step_time_s for r in results)
    names = [b.name for b in results[0].baselines]
    totals = {
        n: sum(next(x for x in r.baselines if x.name == n).step_time_s for r in results)
        for n in names
    }
    return ScatterResult(
        model=model.name,
        cluster=cluster.name,
        gpu=cluster.gpu.id,
        gpus=cluster.num_gpus,
        gpus_per_node=cluster.gpus_per_node,
        lengths_source=lengths_source,
        max_seq_len=max_seq_len,
        cost=CostInfo(
            cp_algo=cp_algo,
            alpha1_s=cost.alpha1_s,
            alpha2_s=cost.alpha2_s,
            bytes_per_token=cost.bytes_per_token,
            fixed_gib=cost.fixed_bytes / GIB,
            capacity_gib=cost.capacity_bytes / GIB,
            tokens_per_gpu=cost.tokens_per_gpu,
            time_source=cost.time_source,
            memory_source=cost.memory_source,
        ),
        batches=results,
        summary=Summary(
            step_time_s=ours,
            baselines=totals,
            speedups={n: t / ours for n, t in totals.items()},
            solve_s=sum(r.solve_s for r in results),
            solve_max_s=max(r.solve_s for r in results),
            optimal_batches=sum(r.status == "optimal" for r in results),
            fallback_batches=sum(r.method != "scatter" for r in results),
        ),
    )
