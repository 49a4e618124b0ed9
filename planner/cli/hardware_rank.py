"""``autopar plan ... --refine-on-hardware K``: measure the top K plans on this machine."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from planner.cli.output import console
from planner.refine.hardware import HardwareRanking
from planner.search.driver import layout_label
from planner.specs.limits import MAX_MEASURE_STEPS, MAX_TOP_K

RefineOnHardwareOption = Annotated[
    int,
    typer.Option(
        "--refine-on-hardware",
        min=0,
        max=MAX_TOP_K,
        help="Measure the top K plans with short real training steps on this machine's "
        "GPUs (plain PyTorch, benchmarks/measure) and rank them by measured step time.",
    ),
]
MeasureDeviceOption = Annotated[
    str, typer.Option("--measure-device", help="cuda (default) or cpu (tiny models, tests).")
]
MeasureStepsOption = Annotated[
    int,
    typer.Option(
        "--measure-steps",
        min=3,
        max=MAX_MEASURE_STEPS,
        help="Optimizer steps per measurement (2 untimed).",
    ),
]


def render_hardware(ranking: HardwareRanking) -> None:
    table = Table(title=f"Measured on this machine ({ranking.device})")
    for column in ("predicted #", "layout", "predicted s", "measured s", "measured #", "note"):
        table.add_column(column, justify="left" if column in ("layout", "note") else "right")
    for c in ranking.candidates:
        table.add_row(
            str(c.rank_predicted + 1),
            layout_label(c.config),
            f"{c.predicted_step_s:.4f}",
            "" if c.measured_step_s is None else f"{c.measured_step_s:.4f}",
            "" if c.rank_measured is None else str(c.rank_measured + 1),
            c.note,
        )
    console.print(table)
    if ranking.kendall_tau is not None:
        verdict = "the predicted order" if ranking.same_order else "not the predicted order"
        console.print(
            f"{ranking.measured} measured: {verdict} (Kendall's tau {ranking.kendall_tau:+.2f})"
        )
