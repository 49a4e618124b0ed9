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
   differences the memory model cannot resolve do not decide;
4. the objective itself (the predicted step time or cost), best first.

The CP-SAT search still proves the throughput (or cost) optimum; this module only
reorders the top ``pool_size`` plans it returns (K larger than the plans shown, so that
the conventional plans inside the band are among them). ``risk="neutral"`` keeps the
solver's order: with ``--objective throughput`` that is pure throughput.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner.accuracy import MEMORY_BAND, Band, regime, time_band
from planner.predict import Estimate

RISKS = ("averse", "neutral")
CP_PAYS_FROM_TOKENS = 16_384
"""Context parallelism is conventional from this sequence length (16K tokens) up; below,
a layout with CP breaks a convention (module docstring)."""
POOL_SIZE = 24
"""Plans the solver returns for the robust re-ranking, at least (module docstring)."""


def pool_size(top_k: int, risk: str) -> int:
    """How many plans to ask the solver for: the shown ``top_k``, and with ``averse`` risk
    enough more that the plans within the band are among them."""
    return top_k if risk == "neutral" else max(top_k, POOL_SIZE)


@dataclass(frozen=True)
class Robustness:
    """What makes a plan safer to launch, for ordering and for the explanation."""

    broken: tuple[str, ...]
    """Conventions the layout breaks, in words."""
    axes: int
    headroom_gib: float
    headroom_steps: int
    """Headroom in whole steps of the memory band (ties below the model's resolution)."""

    def key(self) -> tuple[int, int, int]:
        return (len(self.broken), self.axes, -self.headroom_steps)


def robustness(estimate: Estimate) -> Robustness:
    """The robustness of one plan (module docstring: the criteria)."""
    c = estimate.config
    broken = []
    if c.cp > 1 and c.seq_len < CP_PAYS_FROM_TOKENS:
        broken.append(
            f"cp {c.cp} at {c.seq_len} tokens ({c.seq_len // c.cp} per rank; CP is run from "
            f"{CP_PAYS_FROM_TOKENS} tokens)"
        )
    if c.tp > c.gpus_per_node:
        broken.append(f"tp {c.tp} across nodes of {c.gpus_per_node} GPUs")
    if c.ep > 1 and c.ep * c.tp > c.gpus_per_node:
        broken.append(f"ep {c.ep} x tp {c.tp} across nodes of {c.gpus_per_node} GPUs")
    axes = sum(getattr(c, axis) > 1 for axis in ("tp", "cp", "pp", "ep", "dp"))
    free = estimate.memory.headroom_gib
    step = MEMORY_BAND * estimate.memory.capacity_gib
    return Robustness(
        broken=tuple(broken),
        axes=axes,
        headroom_gib=free,
        headroom_steps=math.floor(free / step) if step > 0 else 0,
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
    gain = (mine_value - best) / mine_value if mine_value > 0 else 0.0
    better = "cheaper" if objective_word == "cheapest" else "faster"
    reasons = []
    if len(mine.broken) < len(theirs.broken):
        reasons.append("the " + objective_word + " plan breaks " + "; ".join(theirs.broken))
    if mine.axes < theirs.axes:
        reasons.append(f"{mine.axes} parallel axes instead of {theirs.axes}")
    if mine.headroom_steps > theirs.headroom_steps:
        reasons.append(f"{mine.headroom_gib:.2f} GiB free instead of {theirs.headroom_gib:.2f} GiB")
    from planner.search.explain import layout_label  # explain imports this module

    return (
        f"The {objective_word} plan "
        f"({layout_label(fastest.config)}, {fastest.time.step_time_s:.3f} s per step) is "
        f"predicted {gain:.1%} {better}, inside the model's step-time band {band.basis} for a "
        f"{name} step, so the safer layout leads: {', '.join(reasons) or 'more robust'} "
        "(--risk neutral ranks by the prediction alone)."
    )
