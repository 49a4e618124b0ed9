"""The self-contained HTML report: inline styles, SVG figures, and each figure's table.

Nothing is fetched when the page opens (no scripts, fonts or styles from the network).
Every figure has a text alternative: the table it was drawn from, right below it.
"""

from __future__ import annotations

from html import escape

from planner.accuracy import prediction_band, rates_are_borrowed
from planner.report.compare import compare_to_best, comparison_sentence
from planner.report.inputs import PlanView, ReportInput
from planner.report.memory_chart import PARTS, memory_chart, stage_bars
from planner.report.timeline_chart import plan_timeline, timeline_chart
from planner.report.waterfall_chart import LABELS, waterfall_chart, waterfall_parts

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1100px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.differs { background: #fff3c4; }
table.summary td { text-align: left; }
.band { color: #555; } .warn { color: #a00; }
figure { margin: 0; } figcaption { font-size: 0.9em; color: #444; margin: 4px 0; }
details { margin: 4px 0 12px; }
"""


def render_report(report: ReportInput, *, title: str | None = None) -> str:
    """The HTML page for ``report`` (its first plan is the chosen one)."""
    best = report.plans[0]
    job = best.config
    heading = title or f"{job.model} on {job.num_gpus} x {job.gpu}"
    sections = [
        _summary(best, report),
        _memory_section(best),
        _timeline_section(best),
        _waterfall_section(best),
    ]
    if len(report.plans) > 1:
        sections.append(_comparison_section(report.plans))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>autopar report: {escape(heading)}</title><style>{STYLE}</style></head>"
        f"<body><h1>autopar report: {escape(heading)}</h1>{''.join(sections)}</body></html>"
    )


def _summary(best: PlanView, report: ReportInput) -> str:
    job, time, memory = best.config, best.time, best.memory
    band = prediction_band(rates_source=time.rates_source)
    low, high = band.step_range_s(time.step_time_s)
    rows = [
        ("job", f"{job.model}, {job.num_gpus} x {job.gpu} ({job.nodes} nodes of "
                f"{job.gpus_per_node}), seq {job.seq_len}, global batch {job.global_batch}, "
                f"{job.precision}, {job.framework}"),
        ("layout", job.layout_label()),
        ("step time", f"{time.step_time_s:.3f} s (band {low:.3f}-{high:.3f} s)"),
        ("tokens/s", f"{time.tokens_per_s:,.0f} ({time.tokens_per_s_per_gpu:,.0f} per GPU)"),
        ("MFU / HFU", f"{time.mfu:.1%} / {time.hfu:.1%}"),
        ("peak memory", f"{memory.peak_gib:.2f} of {memory.capacity_gib:.2f} GiB "
                        f"(headroom {memory.headroom_gib:.2f} GiB; "
                        f"{'fits' if memory.fits else 'does NOT fit'})"),
        ("rates", time.rates_source),
        ("memory reserve", memory.reserve_source),
    ]  # fmt: skip
    if report.search:
        search = report.search
        rows.append(
            (
                "search",
                f"{search.get('layouts_considered', '?')} layouts considered, "
                f"{search.get('layouts_feasible', '?')} fit; solver "
                f"{search.get('solver', '?')}, "
                f"{'optimal' if search.get('optimal') else 'not proven optimal'}",
            )
        )
    if best.explanation:
        rows.append(("why this plan", best.explanation))
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    warning = ""
    if rates_are_borrowed(time.rates_source):
        warning = (
            f'<p class="warn">The rates are borrowed from another GPU\'s profile and are '
            f"unvalidated on {escape(job.gpu)}.</p>"
        )
    return (
        f'<h2>Prediction</h2><table class="summary">{body}</table>{warning}'
        f'<p class="band">Error band: {escape(band.basis)}.</p>'
    )


def _memory_section(best: PlanView) -> str:
    bars = stage_bars(best)
    head = "".join(f"<th>{p}</th>" for p in PARTS)
    rows = "".join(
        f"<tr><td>{bar.stage}</td>"
        + "".join(f"<td>{bar.parts[p]:.2f}</td>" for p in PARTS)
        + f"<td>{bar.total_gib:.2f}</td><td>{bar.in_flight:g}</td>"
        f"<td>{escape(bar.peak_moment)}</td></tr>"
        for bar in bars
    )
    return (
        "<h2>Memory per pipeline stage (one GPU)</h2><figure>"
        + memory_chart(best)
        + "<figcaption>GiB at each stage's peak; red line: the GPU's usable capacity "
        f"({best.memory.capacity_gib:.2f} GiB).</figcaption>"
        '<table class="memory-table"><caption>The figure\'s numbers (GiB)</caption>'
        f"<tr><th>stage</th>{head}<th>total</th><th>in flight</th><th>peak at</th></tr>"
        f"{rows}</table></figure>"
    )


def _timeline_section(best: PlanView) -> str:
    chart = timeline_chart(best)
    if chart is None:
        return (
            "<h2>Pipeline schedule</h2><p>This plan file carries no pipeline schedule "
            "(written by an older autopar); estimate it again to draw one.</p>"
        )
    timeline = plan_timeline(best)
    assert timeline is not None
    busy = {rank: 0.0 for rank in range(timeline.pp)}
    counts = {rank: 0 for rank in range(timeline.pp)}
    for op in timeline.ops:
        busy[op.rank] += op.end_s - op.start_s
        counts[op.rank] += 1
    note = (
        f" The steady middle ({timeline.left_out} ops) is left out of the drawing."
        if timeline.left_out
        else ""
    )
    rows = "".join(
        f"<tr><td>{rank}</td><td>{counts[rank]}</td><td>{busy[rank]:.4f}</td>"
        f"<td>{timeline.pipeline_s - busy[rank]:.4f}</td></tr>"
        for rank in range(timeline.pp)
    ) if not timeline.left_out else ""  # fmt: skip
    after = ", ".join(f"{LABELS.get(p, p)} {s:.4f} s" for p, s in timeline.after) or "none"
    table = (
        '<table class="timeline-table"><caption>Ops drawn per rank, busy and idle seconds '
        f"in the pipeline</caption><tr><th>rank</th><th>ops</th><th>busy s</th><th>idle s</th>"
        f"</tr>{rows}</table>"
        if rows
        else ""
    )
    return (
        "<h2>Pipeline schedule</h2><figure>"
        + chart
        + f"<figcaption>Forward (blue/green) and backward (orange/red) of each micro-batch, "
        f"by virtual-stage chunk; grey: idle (bubble). Pipeline {timeline.pipeline_s:.4f} s, "
        f"then {escape(after)}.{note}</figcaption>{table}</figure>"
    )


def _waterfall_section(best: PlanView) -> str:
    parts = waterfall_parts(best)
    total = sum(v for _, v in parts) or 1.0
    rows = "".join(
        f"<tr><td>{escape(LABELS.get(name, name))}</td><td>{value:.4f}</td>"
        f"<td>{value / total:.1%}</td></tr>"
        for name, value in parts
    )
    return (
        "<h2>Where the step time goes</h2><figure>"
        + waterfall_chart(best)
        + '<table class="waterfall-table"><caption>The figure\'s numbers</caption>'
        f"<tr><th>part</th><th>seconds</th><th>share</th></tr>{rows}</table></figure>"
    )


def _comparison_section(plans: list[PlanView]) -> str:
    comparisons = compare_to_best(plans)
    differing = {knob for c in comparisons for knob in c.differing}
    knobs = plans[0].config.knobs()
    head = "".join(f"<th>#{rank}</th>" for rank in range(1, len(plans) + 1))
    rows = []
    for knob in knobs:
        opening = '<td class="differs">' if knob in differing else "<td>"
        cells = "".join(f"{opening}{escape(str(plan.config.knobs()[knob]))}</td>" for plan in plans)
        rows.append(f"<tr><td>{escape(knob)}</td>{cells}</tr>")
    for label, value in (
        ("step s", lambda p: f"{p.time.step_time_s:.3f}"),
        ("MFU", lambda p: f"{p.time.mfu:.1%}"),
        ("peak GiB", lambda p: f"{p.memory.peak_gib:.2f}"),
        ("headroom GiB", lambda p: f"{p.memory.headroom_gib:.2f}"),
    ):
        cells = "".join(f"<td>{value(plan)}</td>" for plan in plans)
        rows.append(f"<tr><th>{label}</th>{cells}</tr>")
    sentences = "".join(f"<li>{escape(comparison_sentence(c))}</li>" for c in comparisons)
    return (
        '<h2>Top plans side by side</h2><table class="compare-table">'
        f"<tr><th>knob</th>{head}</tr>{''.join(rows)}</table><ul>{sentences}</ul>"
    )
