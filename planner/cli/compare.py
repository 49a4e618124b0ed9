"""``autopar compare``: two plans side by side, and which differences the model can tell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from planner.cli.output import console, print_json
from planner.cli.report import read_plan_file
from planner.errors import SpecError
from planner.report.inputs import PlanView, read_report_input
from planner.report.side_by_side import Pair, SideBySide, side_by_side


def pick_plan(path: Path, rank: int, *, option: str) -> PlanView:
    """Plan number ``rank`` (1 = best) of the plan or estimate file ``path``."""
    if rank < 1:
        raise SpecError(f"{option}: {rank} must be at least 1 (1 is the best plan)")
    plans = read_report_input(read_plan_file(path, command="compare")).plans
    if rank > len(plans):
        raise SpecError(
            f"{option}: {rank} is past the {len(plans)} plan(s) in {path} "
            "(autopar plan --top-k N keeps more)"
        )
    return plans[rank - 1]


def compare_command(
    plan_a: Annotated[
        Path, typer.Argument(help="autopar plan --json (or autopar estimate --json) output.")
    ],
    plan_b: Annotated[
        Path | None,
        typer.Argument(help="A second such file (default: PLAN_A again, another rank)."),
    ] = None,
    rank_a: Annotated[int, typer.Option("--rank-a", help="Which plan of PLAN_A (1 = best).")] = 1,
    rank_b: Annotated[
        int | None,
        typer.Option("--rank-b", help="Which plan of PLAN_B (default: 1, or 2 with one file)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON and nothing else.")] = False,
) -> None:
    """Show two plans side by side: memory per stage, time breakdown, what is inside the error.

    With one file, its plans --rank-a and --rank-b (the best and the runner-up by
    default) are compared; with two, the best of each (or the ranks given). A difference
    is inside the model's error when the two predictions' error bands overlap (step time
    +/-10%, +/-20% on borrowed rates; peak memory +/-3%).

    Example:

        autopar plan --model llama-3.1-70b --cluster dgx-h100 --gpus 64 --seq-len 8192
            --global-batch 512 --top-k 5 --json > plans.json
        autopar compare plans.json --rank-b 3
    """
    second = plan_a if plan_b is None else plan_b
    rank_b = rank_b if rank_b is not None else (2 if plan_b is None else 1)
    if second.resolve() == plan_a.resolve() and rank_b == rank_a:
        raise SpecError(
            f"--rank-b: plan {rank_b} of {plan_a} is the same plan as --rank-a; "
            "give another rank or a second file"
        )
    a = pick_plan(plan_a, rank_a, option="--rank-a")
    b = pick_plan(second, rank_b, option="--rank-b")
    result = side_by_side(a, b, a_label=f"{plan_a.name} #{rank_a}",
                          b_label=f"{second.name} #{rank_b}")  # fmt: skip
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    render(result)


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s" if abs(value) >= 0.01 or value == 0 else f"{value * 1e3:.2f} ms"
    if unit == "GiB":
        return f"{value:.1f} GiB"
    if unit == "tokens/s":
        return f"{value:,.0f}"
    return f"{value:.1%}" if unit == "" else f"{value:g} {unit}"


def _rows(table: Table, pairs: list[Pair]) -> None:
    for pair in pairs:
        delta = "" if pair.delta_pct is None else f"{pair.delta_pct:+.1f}%"
        if pair.inside_error is None:
            verdict = ""
        else:
            verdict = "inside error" if pair.inside_error else "[bold]outside error[/bold]"
        table.add_row(
            pair.name, _number(pair.a, pair.unit), _number(pair.b, pair.unit), delta, verdict
        )


def render(result: SideBySide) -> None:
    """The comparison as rich tables: layout, headline numbers, memory per stage, time."""
    out = console()
    out.print(f"A: {result.a_label}: {result.a_layout}")
    out.print(f"B: {result.b_label}: {result.b_layout}")
    if result.job_differences:
        differing = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in result.job_differences.items())
        out.print(f"different jobs: {differing}")
    knobs = Table()
    for column in ("knob", "A", "B"):
        knobs.add_column(column)
    for knob in result.knobs:
        if knob.differs:
            knobs.add_row(knob.name, str(knob.a), str(knob.b))
    if knobs.row_count:
        out.print("Knobs that differ:")
        out.print(knobs)
    else:
        out.print("same layout knobs")
    for title, pairs in (
        ("Prediction", result.headline),
        ("Peak memory per GPU of each pipeline stage", result.stages),
        ("Step time breakdown (busiest rank)", result.breakdown),
    ):
        table = Table(title=title)
        for column, justify in (("", "left"), ("A", "right"), ("B", "right"),
                                ("B vs A", "right"), ("", "left")):  # fmt: skip
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        _rows(table, pairs)
        out.print(table)
    out.print(f"Error bands: {result.band_basis}.")
    out.print(f"Verdict (A is {result.a_label}, B is {result.b_label}): {result.verdict}")
