"""Pictures of a plan: a self-contained HTML report drawn from the plan's JSON alone.

``report_html(data)`` takes what ``autopar plan --json`` or ``autopar estimate --json``
prints (parsed) and returns the page: the prediction with its error band and the rates it
rests on, memory per stage, the pipeline timeline, the step-time waterfall and the top
plans side by side.
"""

from __future__ import annotations

from planner.report.inputs import PlanView, ReportInput, read_report_input
from planner.report.page import render_report


def report_html(data: object, *, title: str | None = None) -> str:
    """The HTML report of a parsed plan or estimate JSON, or of a scatter, expert-placement
    or memory-plan result (raises ``SpecError`` if malformed)."""
    from planner.report.specialist import specialist_page

    page = specialist_page(data, title=title)
    if page is not None:
        return page
    return render_report(read_report_input(data), title=title)


__all__ = ["PlanView", "ReportInput", "read_report_input", "render_report", "report_html"]
