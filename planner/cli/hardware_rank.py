"""``autopar plan ... --refine-on-hardware K``: measure the top K plans on this machine."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from planner.cli.output import console
from planner.errors import SpecError
from planner.plan import PlanResult
from planner.refine.hardware import HardwareRanking, measure_candidates
from planner.search.driver import layout_label
from planner.specs.hardware import ClusterSpec
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec

RefineOnHardwareOption = Annotated[
    int,
    typer.Option(
        "--refine-on-hardware",
        min=0,
        help="Measure the top K plans with short real training steps on this machine's "
        "GPUs (plain PyTorch, benchmarks/measure) and rank them by measured step time.",
    ),
]
MeasureDeviceOption = Annotated[
    str, typer.Option("--measure-device", help="cuda (default) or cpu (tiny models, tests).")
]
MeasureStepsOption = Annotated[
    int, typer.Option("--measure-steps", min=3, help="Optimizer steps per measurement (2 untimed).")
]


def rank_on_hardware(
    result: PlanResult,
    *,
    top: int,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    framework: str,
    device: str,
    steps: int,
) -> HardwareRanking:
    """Measure the ``top`` plans of ``result`` (needs ``--framework pytorch``)."""
    if framework != "pytorch":
        raise SpecError(
            "--refine-on-hardware measures plain PyTorch training steps: plan with "
            "--framework pytorch so the candidates are layouts that software runs"
        )
    if device not in ("cuda", "cpu"):
        raise SpecError(f"--measure-device: '{device}' is not cuda or cpu")
    configs = [entry.config for entry in result.plans[:top]]
    return measure_candidates(
        configs, model=model, cluster=cluster, workload=workload, device=device, steps=steps
    )


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
