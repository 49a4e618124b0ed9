"""Per-stage memory of one GPU as stacked bars against the GPU's capacity.

One bar per pipeline stage, stacked bottom to top: weights, gradients, optimizer states,
activations (split into the (micro-batch, chunk) pairs the schedule keeps in flight at the
stage's peak), transient buffers, and the reserve (fragmentation, CUDA context, NCCL).
The plan JSON gives every part except the split of ``other_gib`` into transients and
reserve, which is ``total - allocated`` (the reserve is what ``max_memory_allocated``
does not see) and the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.cost.schedule import peak_in_flight
from planner.report import svg
from planner.report.inputs import PlanView

PARTS = ("weights", "gradients", "optimizer", "activations", "transients", "reserve")
COLOURS = {
    "weights": "#4e79a7",
    "gradients": "#f28e2b",
    "optimizer": "#e15759",
    "activations": "#76b7b2",
    "transients": "#edc948",
    "reserve": "#bab0ac",
}


@dataclass(frozen=True)
class StageBar:
    """The GiB of each part of one stage's peak, bottom to top, and its in-flight count."""

    stage: int
    parts: dict[str, float]
    total_gib: float
    in_flight: float
    peak_moment: str


def stage_bars(plan: PlanView) -> list[StageBar]:
    """The bars of ``plan``, first stage first, from its JSON alone."""
    job = plan.config
    bars = []
    for stage in plan.memory.stages:
        reserve = max(0.0, stage.total_gib - stage.allocated_gib)
        in_flight = peak_in_flight(
            rank=stage.stage, pp=job.pp, vpp=job.vpp or 1, microbatches=job.microbatches,
            group=job.microbatch_group_size_per_vp_stage,
        )  # fmt: skip
        bars.append(
            StageBar(
                stage=stage.stage,
                parts={
                    "weights": stage.weights_gib,
                    "gradients": stage.gradients_gib,
                    "optimizer": stage.optimizer_gib,
                    "activations": stage.activations_gib,
                    "transients": max(0.0, stage.other_gib - reserve),
                    "reserve": reserve,
                },
                total_gib=stage.total_gib,
                in_flight=in_flight,
                peak_moment=stage.peak_moment,
            )
        )
    return bars


def memory_chart(plan: PlanView, *, headroom_gib: float = 0.0) -> str:
    """The SVG: a bar per stage, the capacity line and, if asked, the kept headroom."""
    bars = stage_bars(plan)
    capacity = plan.memory.capacity_gib
    top = max([capacity, *(bar.total_gib for bar in bars)]) * 1.08
    width_per_bar, gap, left, height, bottom = 46.0, 18.0, 56.0, 260.0, 30.0
    plot_right = left + len(bars) * (width_per_bar + gap)
    width = plot_right + 270
    scale = height / top

    def y(gib_value: float) -> float:
        return 10 + height - gib_value * scale

    body: list[str] = []
    for tick in _ticks(top):
        body.append(svg.line(left - 4, y(tick), plot_right, y(tick), stroke="#ddd"))
        body.append(svg.text(left - 8, y(tick) + 4, f"{tick:g}", text_anchor="end", font_size=10))
    for index, bar in enumerate(bars):
        x = left + gap / 2 + index * (width_per_bar + gap)
        base = 0.0
        for part in PARTS:
            value = bar.parts[part]
            title = f"stage {bar.stage} {part}: {value:.2f} GiB"
            if part == "activations" and bar.in_flight:
                title += f" ({bar.in_flight:g} micro-batch x chunk pairs in flight)"
            body.append(
                svg.rect(
                    x,
                    y(base + value),
                    width_per_bar,
                    value * scale,
                    fill=COLOURS[part],
                    class_="mem-part",
                    data_stage=bar.stage,
                    data_part=part,
                    data_gib=f"{value:.3f}",
                    title=title,
                )
            )
            if part == "activations" and 1 < bar.in_flight <= 64:
                slice_gib = value / bar.in_flight
                for k in range(1, int(bar.in_flight)):
                    level = y(base + k * slice_gib)
                    body.append(svg.line(x, level, x + width_per_bar, level, stroke="#ffffff80"))
            base += value
        body.append(
            svg.text(
                x + width_per_bar / 2,
                10 + height + 16,
                f"stage {bar.stage}",
                text_anchor="middle",
                font_size=11,
            )
        )
    body.append(
        svg.line(
            left - 4,
            y(capacity),
            plot_right,
            y(capacity),
            stroke="#c00",
            stroke_width=2,
            class_="capacity",
            data_gib=f"{capacity:.3f}",
        )
    )
    body.append(
        svg.text(plot_right + 4, y(capacity) + 4, f"capacity {capacity:.1f} GiB", font_size=11)
    )
    if headroom_gib > 0:
        limit = capacity - headroom_gib
        body.append(
            svg.line(
                left - 4,
                y(limit),
                plot_right,
                y(limit),
                stroke="#c00",
                stroke_dasharray="4 3",
                class_="headroom",
                data_gib=f"{limit:.3f}",
            )
        )
        body.append(
            svg.text(plot_right + 4, y(limit) + 4, f"headroom {headroom_gib:.1f} GiB", font_size=11)
        )
    legend_y = 14
    for part in PARTS:
        body.append(svg.rect(plot_right + 150, legend_y, 10, 10, fill=COLOURS[part]))
        body.append(svg.text(plot_right + 165, legend_y + 9, part, font_size=11))
        legend_y += 16
    return svg.svg(
        width,
        height + bottom + 10,
        body,
        label="Peak memory of one GPU per pipeline stage",
        class_="chart memory-chart",
    )


def _ticks(top: float) -> list[float]:
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500) if top / s <= 8)
    return [k * step for k in range(int(top // step) + 1)]
