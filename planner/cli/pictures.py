"""Small pictures in the terminal: per-stage memory bars, the step-time split, progress.

The bars are drawn from the same numbers as the HTML report (``planner.report``), as rich
text: one line per pipeline stage, a block per part, scaled to the GPU's capacity.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from planner.report.inputs import PlanView
from planner.report.memory_chart import PARTS, stage_bars
from planner.report.waterfall_chart import LABELS, waterfall_parts
from planner.search.progress import Progress as SearchProgress
from planner.search.progress import ProgressCallback

BAR_WIDTH = 50
STYLES = {
    "weights": "blue",
    "gradients": "dark_orange",
    "optimizer": "red",
    "activations": "cyan",
    "transients": "yellow",
    "reserve": "grey50",
}
SHOW_AFTER_S = 1.0
"""A progress bar appears only once a command has run this long."""


def memory_lines(plan: PlanView) -> list[Text]:
    """One bar per stage (``#`` blocks by part, ``.`` free up to capacity) and a legend."""
    capacity = plan.memory.capacity_gib
    scale = BAR_WIDTH / max(capacity, max(s.total_gib for s in plan.memory.stages))
    lines = []
    for bar in stage_bars(plan):
        line = Text(f"stage {bar.stage:>3} ")
        used = 0
        for part in PARTS:
            cells = round(bar.parts[part] * scale)
            line.append("#" * cells, style=STYLES[part])
            used += cells
        line.append("." * max(0, round(capacity * scale) - used), style="grey30")
        line.append(f" {bar.total_gib:.1f}/{capacity:.1f} GiB")
        lines.append(line)
    legend = Text("         ")
    for part in PARTS:
        legend.append("# ", style=STYLES[part])
        legend.append(f"{part}  ")
    lines.append(legend)
    return lines


def time_line(plan: PlanView) -> Text:
    """The step time as one bar split by part, with the parts named."""
    parts = waterfall_parts(plan)
    total = sum(value for _, value in parts) or 1.0
    palette = ("blue", "magenta", "green", "red", "yellow", "cyan", "dark_orange", "grey50")
    line = Text("step      ")
    words = []
    for index, (name, value) in enumerate(parts):
        style = palette[index % len(palette)]
        line.append("#" * max(1 if value > 0 else 0, round(value / total * BAR_WIDTH)), style=style)
        words.append((f"{LABELS.get(name, name)} {value / total:.0%}", style))
    line.append(f" {plan.time.step_time_s:.3f} s\n          ")
    for word, style in words:
        line.append("# ", style=style)
        line.append(f"{word}  ")
    return line


def print_plan_pictures(plan: PlanView, out: Console) -> None:
    """The memory bars and the time split of one plan."""
    out.print("Memory per GPU of each stage (GiB, capacity to the right):")
    for line in memory_lines(plan):
        out.print(line)
    out.print(time_line(plan))


@contextmanager
def search_progress(enabled: bool) -> Iterator[ProgressCallback | None]:
    """A progress callback for ``plan(progress=...)`` drawing on stderr after a second.

    Nothing is drawn when ``enabled`` is false or stderr is not a terminal (pipes, --json).
    """
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    started = time.monotonic()
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task("search", total=None, counts="")
    shown = False

    def report(state: SearchProgress) -> None:
        nonlocal shown
        if not shown:
            if time.monotonic() - started < SHOW_AFTER_S:
                return
            bar.start()
            shown = True
        bar.update(
            task,
            description=state.phase,
            total=state.total or None,
            completed=state.evaluated,
            counts=f"{state.evaluated}/{state.total} layouts, {state.timed} timed",
        )

    try:
        yield report
    finally:
        if shown:
            bar.stop()
