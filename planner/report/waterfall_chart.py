"""Where the step time goes: a waterfall of the breakdown's parts, adding up to the step.

The parts are the estimate's ``time.breakdown_s`` (compute, exposed tensor/context/expert
parallel communication, pipeline bubble, pipeline transfers, exposed data-parallel
communication, optimizer), each a bar starting where the previous ended.
"""

from __future__ import annotations

from planner.report import svg
from planner.report.inputs import PlanView

LABELS = {
    "compute": "compute",
    "tp_comm": "TP comm (exposed)",
    "cp_comm": "CP comm (exposed)",
    "ep_comm": "EP comm (exposed)",
    "pipeline_bubble": "pipeline bubble",
    "pipeline_p2p": "pipeline p2p",
    "dp_comm": "DP comm (exposed)",
    "optimizer": "optimizer",
}


def waterfall_parts(plan: PlanView) -> list[tuple[str, float]]:
    """(part, seconds) in the breakdown's order, zero parts left out."""
    return [(name, value) for name, value in plan.time.breakdown_s.items() if value > 0]


def waterfall_chart(plan: PlanView) -> str:
    parts = waterfall_parts(plan)
    total = sum(value for _, value in parts) or 1.0
    left, plot_width, row, top = 150.0, 620.0, 22.0, 8.0
    scale = plot_width / total
    body: list[str] = []
    start = 0.0
    for index, (name, value) in enumerate(parts):
        y = top + index * row
        body.append(
            svg.text(left - 8, y + 14, LABELS.get(name, name), text_anchor="end", font_size=11)
        )
        body.append(
            svg.rect(
                left + start * scale,
                y,
                value * scale,
                row - 6,
                fill="#4e79a7",
                class_="waterfall-part",
                data_part=name,
                data_seconds=repr(value),
                title=f"{LABELS.get(name, name)}: {value:.4f} s ({value / total:.1%})",
            )
        )
        body.append(
            svg.text(left + (start + value) * scale + 4, y + 13, f"{value:.3f} s", font_size=10)
        )
        start += value
    y = top + len(parts) * row
    body.append(
        svg.text(left - 8, y + 14, "step", text_anchor="end", font_size=11, font_weight="bold")
    )
    body.append(
        svg.rect(
            left,
            y,
            total * scale,
            row - 6,
            fill="#333",
            class_="waterfall-total",
            data_seconds=repr(plan.time.step_time_s),
        )
    )
    body.append(
        svg.text(left + plot_width + 4, y + 13, f"{plan.time.step_time_s:.3f} s", font_size=10)
    )
    return svg.svg(
        left + plot_width + 80,
        y + row + 6,
        body,
        label="Step time by part",
        class_="chart waterfall-chart",
    )
