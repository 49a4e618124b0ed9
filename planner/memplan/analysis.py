"""Peak memory of an allocation trace four ways: live bytes, the caching allocator with and
without expandable segments, and our planned placement.

* Live bytes: the largest sum of the sizes (rounded to the allocator's 512-byte blocks)
  alive at one moment: a lower bound on any allocator's peak.
* Allocator: ``planner.memplan.allocator`` replays the trace; its fragmentation is the
  share of the reserved peak that is not live at the live peak: (reserved - live) / reserved.
* Planned: ``solvers.memory_placement`` places every tensor knowing all lifetimes in
  advance (offline), in 512-byte units: what a static plan (``torch.cuda.MemPool`` or a
  pluggable allocator that follows it) would need.

Advice: expandable segments when they reserve less than the default allocator.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from planner.memplan.allocator import MIN_BLOCK, AllocatorResult, simulate
from planner.memplan.trace import TraceEvent, lifetimes, live_curve
from solvers import PlacementProblem, SolveOptions, SolveStatus, Tensor, solve_memory_placement

GIB = 2**30


@dataclass(frozen=True)
class TraceAnalysis:
    live_peak: int
    default: AllocatorResult
    expandable: AllocatorResult
    planned_peak: int
    plan_status: str
    plan_gap: float
    """(planned - best proven bound) / planned."""
    plan_bound: int
    warm_start_peak: int
    solve_s: float
    tensors: int


def analyse(
    events: tuple[TraceEvent, ...],
    *,
    chains: tuple[tuple[int, ...], ...] = (),
    ties: tuple[tuple[int, int], ...] = (),
    time_limit_s: float = 10.0,
) -> TraceAnalysis:
    """The four peaks of ``events``. The placement is solved first with every tensor free;
    when that is not proven optimal in half the time, again with ``chains``/``ties``
    (allocation keys) as rigid groups, keeping the smaller arena and the free problem's
    bound (the rigid problem's bound holds only for its restricted placements)."""
    spans = lifetimes(events)
    index = {span.key: i for i, span in enumerate(spans)}
    tensors = tuple(
        Tensor(-(-max(span.size, 1) // MIN_BLOCK), span.start, span.end) for span in spans
    )
    started = time.perf_counter()
    solution = solve_memory_placement(
        PlacementProblem(tensors), SolveOptions(time_limit_s=time_limit_s / 2, workers=2)
    )
    if solution.status is not SolveStatus.OPTIMAL and (chains or ties):
        rigid = solve_memory_placement(
            PlacementProblem(
                tensors,
                chains=tuple(tuple(index[k] for k in chain) for chain in chains),
                ties=tuple((index[a], index[b]) for a, b in ties),
            ),
            SolveOptions(time_limit_s=time_limit_s / 2, workers=2),
        )
        if rigid.arena < solution.arena:  # the free problem's bound stays the valid one
            solution = replace(rigid, lower_bound=solution.lower_bound)
    solve_s = time.perf_counter() - started
    live = int(live_curve(events, rounding=MIN_BLOCK).max(initial=0))
    return TraceAnalysis(
        live_peak=live,
        default=simulate(events, expandable_segments=False),
        expandable=simulate(events, expandable_segments=True),
        planned_peak=solution.arena * MIN_BLOCK,
        plan_status=solution.status.value,
        plan_gap=solution.gap,
        plan_bound=solution.lower_bound * MIN_BLOCK,
        warm_start_peak=solution.warm_start_arena * MIN_BLOCK,
        solve_s=solve_s,
        tensors=len(spans),
    )


def fragmentation(reserved: int, live: int) -> float:
    return 0.0 if reserved <= 0 else max(0.0, (reserved - live) / reserved)


def allocator_advice(analysis: TraceAnalysis) -> str:
    default, expandable = analysis.default.peak_reserved, analysis.expandable.peak_reserved
    if expandable < default:
        saved = (default - expandable) / GIB
        return (
            f"set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True: the simulated allocator "
            f"reserves {saved:.2f} GiB less with it"
        )
    return "the default allocator settings reserve no more than expandable segments here"
