"""The top plans side by side: what differs, and whether the difference is real.

Two predicted step times whose error bands (``planner.accuracy``) overlap cannot be told
apart by the model: the report says so instead of calling one faster.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.accuracy import prediction_band
from planner.report.inputs import PlanView


@dataclass(frozen=True)
class Comparison:
    """One runner-up against the best plan."""

    rank: int
    differing: dict[str, tuple[object, object]]
    """knob -> (best plan's value, this plan's value), only the knobs that differ."""
    step_delta_pct: float
    inside_band: bool


def compare_to_best(plans: list[PlanView]) -> list[Comparison]:
    """Each plan after the first, against the first."""
    if not plans:
        return []
    best = plans[0]
    band = prediction_band(rates_source=best.time.rates_source)
    mine = best.config.knobs()
    comparisons = []
    for rank, plan in enumerate(plans[1:], start=2):
        theirs = plan.config.knobs()
        differing = {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}
        delta = (plan.time.step_time_s - best.time.step_time_s) / best.time.step_time_s
        comparisons.append(
            Comparison(
                rank=rank,
                differing=differing,
                step_delta_pct=100 * delta,
                inside_band=band.overlaps(best.time.step_time_s, plan.time.step_time_s),
            )
        )
    return comparisons


def comparison_sentence(comparison: Comparison) -> str:
    """One line for a reader: what differs and whether the model can tell them apart."""
    changes = ", ".join(
        f"{knob} {theirs} instead of {mine}"
        for knob, (mine, theirs) in comparison.differing.items()
    )
    verdict = (
        "inside the model's error band: the two cannot be told apart by prediction"
        if comparison.inside_band
        else "outside the model's error band"
    )
    return (
        f"#{comparison.rank}: {changes or 'same layout'}; step time "
        f"{comparison.step_delta_pct:+.1f}%, {verdict}."
    )
