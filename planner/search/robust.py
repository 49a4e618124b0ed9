"""Robust choice: among plans the cost model cannot tell apart, prefer the safer layout.

A predicted step time is a point inside an error band (``planner.accuracy.time_band``:
per framework and per regime, compute-, communication- or host-bound, from the
validation benchmarks' worst errors). When the fastest plan's predicted lead over
another is inside that band, the model does not know which is faster; what it does know
is which layout is more likely to run as planned. With ``risk="averse"`` (the default)
the plans whose objective is within the band of the best are therefore ordered by
robustness, and the rest follow in objective order:

1. conventions broken, fewest first: context parallelism below ``CP_PAYS_FROM_TOKENS``
   tokens (CP shortens the attention of long sequences; at a few hundred tokens per rank
   its ring transfers and smaller kernels cost more than they save, and nobody runs it
   there), a TP group or an expert-parallel group wider than a node (their collectives
   then cross the slower inter-node network on every layer). Where every layout that fits
   breaks one (CP needed to fit), the one breaking fewest still wins;
2. parallel axes in use (tp, cp, pp, ep, dp above 1), fewest first: each axis is another
   communication pattern the cost model may misjudge and another thing to debug;
3. headroom, most first, counted in steps of the memory band (3% of capacity), so that
   differences the memory model cannot resolve do not decide, and only up to
   ``COMFORTABLE_HEADROOM`` of capacity: the worst peak-memory error the model has shown
   on an implementation at its first measurement
   (``planner.accuracy.UNMEASURED_IMPLEMENTATION_MEMORY_WORST``); free memory beyond it
   guards against no error the model has been seen to make, so 30 GiB free does not beat 20 GiB
   free at the price of speed;
4. the objective itself (the predicted step time or cost), best first.

The CP-SAT search still proves the throughput (or cost) optimum; this module only
reorders the plans it returns: the solver's top ``pool_size`` (K larger than the plans
shown) and the ``CONVENTIONAL_KEPT`` best conventional layouts (no convention broken),
found by :func:`best_conventional` over every layout the search tabulated that fits
(the enumerated layouts and the stage-partition solver's splits of the search's leading
layouts), with the lower-bound pruning the search uses, so that the top K being
variants of one exotic family (a layer split, a CP algorithm) cannot hide the
conventional plan inside the band. The split solver refines the search's leaders and,
here, the best conventional layouts (``with_conventional``'s ``split``), one split per
layout family as in the search (``benchmarks/plan_robustness.py --check`` compares the
conventional step with a search restricted to conventional layouts).

A gain is measured as ``order`` measures it: the other plan's objective over the best's,
less one (a plan 10% slower than the best is at the edge of a 10% band).
``risk="neutral"`` keeps the solver's order: with ``--objective throughput`` that is
pure throughput.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from planner.accuracy import (
    MEMORY_BAND,
    UNMEASURED_IMPLEMENTATION_MEMORY_WORST,
    Band,
    regime,
    time_band,
)
from planner.predict import Estimate
from planner.search.length_pricing import FIXED_LENGTH, Timer
from planner.search.results import RobustChoice, Uncertainty
from planner.search.tabulate import Row, bound_order

RISKS = ("averse", "neutral")
CP_PAYS_FROM_TOKENS = 16_384
"""Context parallelism is conventional from this sequence length (16K tokens) up; below,
a layout with CP breaks a convention (module docstring)."""
POOL_SIZE = 8
"""Plans the solver returns for the robust re-ranking, at least (module docstring). Each
one more is a few more layouts timed (on Llama 3.1 70B on 64 H100s, 12 instead of 8 timed
156 layouts instead of 147, 5 timed 120: the neutral search times 117); the conventional
layouts come from their own bounded pass, so K need not be large for them."""
CONVENTIONAL_KEPT = 3
"""Best conventional layouts added to the solver's plans for the re-ranking."""


def pool_size(top_k: int, risk: str) -> int:
    """How many plans to ask the solver for: the shown ``top_k``, and with ``averse`` risk
    enough more that the plans within the band are among them."""
    return top_k if risk == "neutral" else max(top_k, POOL_SIZE)


COMFORTABLE_HEADROOM = UNMEASURED_IMPLEMENTATION_MEMORY_WORST
"""Share of capacity beyond which more free memory does not make a plan safer (module
docstring, criterion 3)."""

COMFORTABLE_STEPS = math.ceil(COMFORTABLE_HEADROOM / MEMORY_BAND)
"""``COMFORTABLE_HEADROOM`` in whole steps of the memory band, rounded up."""


@dataclass(frozen=True)
class Robustness:
    """What makes a plan safer to launch, for ordering and for the explanation."""

    broken: tuple[str, ...]
    """Conventions the layout breaks, in words."""
    axes: int
    headroom_gib: float
    headroom_steps: int
    """Headroom in whole steps of the memory band (ties below the model's resolution),
    at most ``COMFORTABLE_STEPS``."""

    def key(self) -> tuple[int, int, int]:
        return (len(self.broken), self.axes, -self.headroom_steps)


def broken_conventions(
    *, tp: int, cp: int, ep: int, seq_len: int, gpus_per_node: int
) -> tuple[str, ...]:
    """The conventions a layout breaks, in words (module docstring, criterion 1)."""
    broken = []
    if cp > 1 and seq_len < CP_PAYS_FROM_TOKENS:
        broken.append(
            f"cp {cp} at {seq_len} tokens ({seq_len // cp} per rank; CP is run from "
            f"{CP_PAYS_FROM_TOKENS} tokens)"
        )
    if tp > gpus_per_node:
        broken.append(f"tp {tp} across nodes of {gpus_per_node} GPUs")
    if ep > 1 and ep * tp > gpus_per_node:
        broken.append(f"ep {ep} x tp {tp} across nodes of {gpus_per_node} GPUs")
    return tuple(broken)


def row_is_conventional(row: Row) -> bool:
    """Whether a tabulated layout breaks no convention."""
    layout = row.layout
    return not broken_conventions(
        tp=layout.tp, cp=layout.cp, ep=layout.ep, seq_len=row.prepared.workload.seq_len,
        gpus_per_node=row.cluster.gpus_per_node,
    )  # fmt: skip


def best_conventional(
    rows: list[Row],
    *,
    key: Callable[[Row, float], float],
    admits: Callable[[Row], bool],
    keep: int = CONVENTIONAL_KEPT,
    timer: Timer = FIXED_LENGTH,
) -> list[Row]:
    """The ``keep`` best conventional layouts that fit, best first: rows are timed (when
    tabulation did not) in the order of their objective's lower bound, until the next
    bound exceeds the ``keep``-th best found, so the answer is exact under the cost model."""
    fitting = [row for row in rows if row.fits and row_is_conventional(row)]

    def bound(row: Row) -> float:
        return key(row, row.step_s if row.time is not None else (row.step_bound_s or 0.0))

    best: list[tuple[float, int, Row]] = []
    for position, row in enumerate(bound_order(fitting, bound)):  # ``sorted``'s order
        if len(best) >= keep and bound(row) > best[-1][0]:
            break
        if row.time is None:  # ``timer``: the fixed length, or a distribution's mix
            row.time = timer.time(row.prepared)
            row.deferred = False
        if admits(row):
            best = sorted([*best, (key(row, row.step_s), position, row)])[:keep]
    return [row for _, _, row in best]


def with_conventional(
    solved: list[Row],
    rows: list[Row],
    *,
    key: Callable[[Row, float], float],
    admits: Callable[[Row], bool],
    same_gpus: bool = False,
    split: Callable[[list[Row]], list[Row]] | None = None,
    timer: Timer = FIXED_LENGTH,
) -> list[Row]:
    """The solver's plans and the best conventional layouts not among them, in objective
    order (stable: the solver's tie order kept). ``same_gpus``: only layouts on the best
    plan's GPU count (the min-gpus objective's answer is the count). ``split``: the
    stage-partition solver's variants of some layouts of one cluster size; the best
    conventional layouts are refined with it as the search refines its leaders, so that
    they compete with the leaders' splits on equal terms."""
    if not solved:
        return solved
    gpus = solved[0].cluster.num_gpus
    pool = [row for row in rows if not same_gpus or row.cluster.num_gpus == gpus]
    conventional = best_conventional(pool, key=key, admits=admits, timer=timer)
    if split is not None:
        variants: list[Row] = []
        for size in sorted({row.cluster.num_gpus for row in conventional}):
            variants += split([row for row in conventional if row.cluster.num_gpus == size])
        if variants:
            conventional = best_conventional([*conventional, *variants], key=key, admits=admits)
    seen = {(row.cluster.num_gpus, row.layout) for row in solved}
    extra = [row for row in conventional if (row.cluster.num_gpus, row.layout) not in seen]
    merged = [*solved, *extra]
    return sorted(merged, key=lambda row: key(row, row.step_s))


def conventional(estimate: Estimate) -> bool:
    """Whether a plan breaks no convention."""
    return not robustness(estimate).broken


def robustness(estimate: Estimate) -> Robustness:
    """The robustness of one plan (module docstring: the criteria)."""
    c = estimate.config
    broken = list(
        broken_conventions(
            tp=c.tp, cp=c.cp, ep=c.ep, seq_len=c.seq_len, gpus_per_node=c.gpus_per_node
        )
    )
    axes = sum(getattr(c, axis) > 1 for axis in ("tp", "cp", "pp", "ep", "dp"))
    free = estimate.memory.headroom_gib
    step = MEMORY_BAND * estimate.memory.capacity_gib
    return Robustness(
        broken=tuple(broken),
        axes=axes,
        headroom_gib=free,
        headroom_steps=min(COMFORTABLE_STEPS, math.floor(free / step)) if step > 0 else 0,
    )


def best_band(estimate: Estimate) -> tuple[Band, str]:
    """The time band of the best plan's prediction and its regime."""
    time = estimate.time
    name = regime(time.breakdown_s)
    band = time_band(
        framework=estimate.config.framework, regime_name=name, rates_source=time.rates_source
    )
    return band, name


def order(
    estimates: list[Estimate], values: list[float], *, risk: str, same_gpus: bool = False
) -> list[int]:
    """Indices of ``estimates`` (given best first by ``values``, the objective) in the
    order to show them: unchanged for ``neutral``; for ``averse`` those within the best's
    band by robustness, then the rest. ``same_gpus``: only plans on the best plan's GPU
    count may move ahead of it (the min-gpus objective)."""
    if risk not in RISKS:
        raise ValueError(f"risk: unknown '{risk}'; known: {', '.join(RISKS)}")
    indices = list(range(len(estimates)))
    if risk == "neutral" or len(estimates) < 2:
        return indices
    band, _ = best_band(estimates[0])
    best, gpus = values[0], estimates[0].config.num_gpus
    inside = [
        i
        for i in indices
        if values[i] <= best * (1 + band.time)
        and (not same_gpus or estimates[i].config.num_gpus == gpus)
    ]
    ranked = sorted(inside, key=lambda i: (robustness(estimates[i]).key(), values[i], i))
    return ranked + [i for i in indices if i not in inside]


def chosen_note(
    chosen: Estimate, fastest: Estimate, *, values: tuple[float, float], objective_word: str
) -> str:
    """Why the robust choice is not the objective's best plan ``fastest``, in words;
    ``values``: the objective of the chosen plan and of the best."""
    band, name = best_band(fastest)
    mine, theirs = robustness(chosen), robustness(fastest)
    mine_value, best = values
    gain = (mine_value - best) / best if best > 0 else 0.0  # as ``order`` measures it
    better = "cheaper" if objective_word == "cheapest" else "faster"
    reasons = []
    if len(mine.broken) < len(theirs.broken):
        reasons.append("the " + objective_word + " plan breaks " + "; ".join(theirs.broken))
    if mine.axes < theirs.axes:
        reasons.append(f"{mine.axes} parallel axes instead of {theirs.axes}")
    if mine.headroom_steps > theirs.headroom_steps:
        reasons.append(f"{mine.headroom_gib:.2f} GiB free instead of {theirs.headroom_gib:.2f} GiB")
    return (
        f"The {objective_word} plan "
        f"({layout_label_of(fastest)}, {fastest.time.step_time_s:.3f} s per step) is "
        f"predicted {gain:.1%} {better}, inside the model's step-time band {band.basis} for a "
        f"{name} step, so the safer layout leads: {', '.join(reasons) or 'more robust'} "
        "(--risk neutral ranks by the prediction alone)."
    )


def kept_note(
    best: Estimate,
    conventional: tuple[Estimate, float] | None,
    *,
    value: float,
    objective_word: str,
) -> str:
    """Why the objective's best plan stays first although it breaks a convention: the
    best conventional layout is behind by more than the band, or none fits."""
    broken = "; ".join(robustness(best).broken)
    if conventional is None:
        return (
            f"It breaks a convention ({broken}), but no layout that keeps them fits, so it "
            "stays first."
        )
    band, name = best_band(best)
    other, other_value = conventional
    gap = (other_value - value) / value if value > 0 else 0.0  # as ``order`` measures it
    worse = "dearer" if objective_word == "cheapest" else "slower"
    return (
        f"It breaks a convention ({broken}); the best conventional layout "
        f"({layout_label_of(other)}, {other.time.step_time_s:.3f} s per step) is predicted "
        f"{gap:.1%} {worse}, beyond the model's step-time band {band.basis} for a {name} "
        "step, so the gain is kept."
    )


def layout_label_of(estimate: Estimate) -> str:
    from planner.search.explain import layout_label  # explain imports this module

    return layout_label(estimate.config)


def uncertainty(estimate: Estimate) -> Uncertainty:
    """The plan's step-time band, for its JSON (``PlanEntry.uncertainty``)."""
    band, name = best_band(estimate)
    low, high = band.step_range_s(estimate.time.step_time_s)
    return Uncertainty(
        regime=name,
        step_time_band=band.time,
        step_time_range_s=(round(low, 6), round(high, 6)),
        basis=band.basis,
    )


def choice(
    best: tuple[Estimate, float], conventional: tuple[Estimate, float] | None
) -> RobustChoice:
    """The search's record of the robust choice (``SearchInfo.robust``)."""
    band, name = best_band(best[0])
    return RobustChoice(
        best_layout=layout_label_of(best[0]),
        best_step_s=best[0].time.step_time_s,
        best_value=best[1],
        conventional_layout=None if conventional is None else layout_label_of(conventional[0]),
        conventional_step_s=None if conventional is None else conventional[0].time.step_time_s,
        conventional_value=None if conventional is None else conventional[1],
        band=band.time,
        regime=name,
    )
