"""``autopar report``: draw a plan (or an estimate) as one self-contained HTML file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from planner.cli.files import write_text
from planner.cli.output import console
from planner.errors import SpecError


def read_plan_file(path: Path, *, command: str) -> object:
    """The parsed JSON of a plan or estimate file, or a one-line error naming the file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{command}: plan file not found: {path}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError, OSError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise SpecError(f"{command}: cannot read {path}: {reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise SpecError(
            f"{command}: {path} is not valid JSON: {error.msg} (line {error.lineno})"
        ) from None


def write_report(data: object, out: Path, *, title: str | None = None) -> None:
    """Render ``data`` and write the page to ``out``, OS errors as one-line messages."""
    from planner.report import report_html

    write_text(out, report_html(data, title=title), option="--report/--out")


def report_command(
    plan: Annotated[
        Path, typer.Argument(help="autopar plan --json or autopar estimate --json output.")
    ],
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path(
        "report.html"
    ),
    title: Annotated[str | None, typer.Option("--title", help="The page's heading.")] = None,
) -> None:
    """Draw a plan as one HTML file that needs no network (memory, timeline, step time).

    The page holds the prediction with its error band and the rates it rests on, memory
    per pipeline stage, the pipeline timeline, the step-time waterfall and the top plans
    side by side.

    Example:

        autopar plan --model llama-3.1-70b --cluster dgx-h100 --nodes 8 --seq-len 8192
            --global-batch 512 --json > plan.json
        autopar report plan.json --out report.html
    """
    data = read_plan_file(plan, command="report")
    write_report(data, out, title=title)
    console().print(f"wrote {out}")
