"""The pipeline schedule as a timeline: one row per pipeline rank, one box per op.

The boxes are the ops of ``planner.cost.timeline.simulate`` run on the per-stage times the
plan JSON carries (``time.pipeline``): the very simulation the time model ran, replayed.
Idle time inside the pipeline (the bubble) is the shaded row background between boxes.
After the last op come the phases the breakdown puts after the pipeline: the exposed
data-parallel communication and the optimizer step. A schedule of more than
``MAX_DRAWN_OPS`` ops is drawn with its first and last micro-batches only (warm-up and
cool-down, where the bubble is) and the caption says how many were left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.cost.timeline import OpTiming, PipelineTimes, simulate
from planner.report import svg
from planner.report.inputs import PlanView

MAX_DRAWN_OPS = 6000
"""Above this many ops the steady middle is left out of the drawing (it repeats)."""

FORWARD_COLOURS = ("#4e79a7", "#76b7b2", "#59a14f", "#9c755f")
BACKWARD_COLOURS = ("#f28e2b", "#e15759", "#b07aa1", "#ff9da7")


@dataclass(frozen=True)
class Timeline:
    """The simulated ops to draw and what was left out."""

    ops: tuple[OpTiming, ...]
    pipeline_s: float
    after: tuple[tuple[str, float], ...]
    """(phase, seconds) run after the pipeline: exposed DP communication, optimizer."""
    pp: int
    microbatches: int
    left_out: int
    gap_s: tuple[float, float] | None = None
    """The stretch of time whose ops were left out (the steady middle), if any."""


def plan_timeline(plan: PlanView) -> Timeline | None:
    """The timeline of ``plan``; None when its JSON has no pipeline block (older files)."""
    schedule = plan.time.pipeline
    if schedule is None:
        return None
    times = PipelineTimes(
        pp=schedule.pp,
        vpp=schedule.vpp,
        microbatches=schedule.microbatches,
        forward_s=tuple(schedule.forward_s),
        backward_s=tuple(schedule.backward_s),
        p2p_s=schedule.p2p_s,
        microbatch_group=schedule.microbatch_group,
    )
    simulated = simulate(times)
    ops = simulated.ops
    left_out = 0
    gap: tuple[float, float] | None = None
    if len(ops) > MAX_DRAWN_OPS:
        keep = max(1, MAX_DRAWN_OPS // (4 * schedule.pp * schedule.vpp))
        last = schedule.microbatches - keep
        drawn = tuple(op for op in ops if op.microbatch < keep or op.microbatch >= last)
        left_out = len(ops) - len(drawn)
        ops = drawn
        early_end = max(op.end_s for op in ops if op.microbatch < keep)
        late_start = min(op.start_s for op in ops if op.microbatch >= last)
        if late_start > early_end:
            gap = (early_end, late_start)
    breakdown = plan.time.breakdown_s
    after = tuple(
        (phase, breakdown.get(phase, 0.0))
        for phase in ("dp_comm", "optimizer")
        if breakdown.get(phase, 0.0) > 0
    )
    return Timeline(
        ops=ops,
        pipeline_s=simulated.step_s,
        after=after,
        pp=schedule.pp,
        microbatches=schedule.microbatches,
        left_out=left_out,
        gap_s=gap,
    )


def timeline_chart(plan: PlanView) -> str | None:
    """The SVG timeline, or None when the plan JSON carries no schedule."""
    timeline = plan_timeline(plan)
    if timeline is None:
        return None
    total = timeline.pipeline_s + sum(seconds for _, seconds in timeline.after)
    left, plot_width, row, top = 70.0, 900.0, 26.0, 10.0
    scale = plot_width / total if total > 0 else 0.0
    body: list[str] = []
    for rank in range(timeline.pp):
        y = top + rank * row
        body.append(
            svg.rect(
                left,
                y,
                timeline.pipeline_s * scale,
                row - 6,
                fill="#e8e8e8",
                class_="bubble-row",
                data_rank=rank,
                title=f"rank {rank}: idle (bubble)",
            )
        )
        body.append(
            svg.text(left - 8, y + row / 2, f"rank {rank}", text_anchor="end", font_size=11)
        )
    for op in timeline.ops:
        colours = FORWARD_COLOURS if op.phase == "F" else BACKWARD_COLOURS
        body.append(
            svg.rect(
                left + op.start_s * scale,
                top + op.rank * row,
                (op.end_s - op.start_s) * scale,
                row - 6,
                fill=colours[op.chunk % len(colours)],
                class_="op",
                data_rank=op.rank,
                data_phase=op.phase,
                data_mb=op.microbatch,
                data_chunk=op.chunk,
                data_start=repr(op.start_s),
                data_end=repr(op.end_s),
                title=(
                    f"rank {op.rank} {'forward' if op.phase == 'F' else 'backward'} "
                    f"micro-batch {op.microbatch} chunk {op.chunk}: "
                    f"{op.start_s * 1e3:.2f}-{op.end_s * 1e3:.2f} ms"
                ),
            )
        )
    if timeline.gap_s is not None:
        begin, end = timeline.gap_s
        body.append(
            svg.rect(
                left + begin * scale,
                top - 2,
                (end - begin) * scale,
                timeline.pp * row,
                fill="#ffffff",
                stroke="#999",
                stroke_dasharray="3 3",
                class_="elided",
                title=f"steady state: {timeline.left_out} ops not drawn",
            )
        )
        body.append(
            svg.text(
                left + (begin + end) / 2 * scale,
                top + timeline.pp * row / 2,
                f"steady state, {timeline.left_out} ops not drawn",
                text_anchor="middle",
                font_size=11,
            )
        )
    start = timeline.pipeline_s
    for phase, seconds in timeline.after:
        for rank in range(timeline.pp):
            body.append(
                svg.rect(
                    left + start * scale,
                    top + rank * row,
                    seconds * scale,
                    row - 6,
                    fill="#555" if phase == "optimizer" else "#9467bd",
                    class_="after",
                    data_phase=phase,
                    data_seconds=repr(seconds),
                    title=f"{phase.replace('_', ' ')}: {seconds * 1e3:.2f} ms",
                )
            )
        start += seconds
    axis_y = top + timeline.pp * row + 4
    body.append(svg.line(left, axis_y, left + plot_width, axis_y, stroke="#333"))
    for k in range(6):
        at = total * k / 5
        body.append(
            svg.text(
                left + at * scale, axis_y + 14, f"{at:.3g} s", text_anchor="middle", font_size=10
            )
        )
    return svg.svg(
        left + plot_width + 20,
        axis_y + 24,
        body,
        label=f"Pipeline schedule of {timeline.pp} ranks and {timeline.microbatches} micro-batches",
        class_="chart timeline-chart",
    )
