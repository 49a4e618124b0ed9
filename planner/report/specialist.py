"""Reports of the specialist solvers' results: sequence scattering, expert placement and
memory plans, each drawn from its own ``--json`` output alone (as a plan's report is).

``specialist_page(data)`` recognises the three result shapes (the pydantic result types of
``planner.scattering``, ``planner.experts`` and ``planner.memplan`` validate them) and
returns the page, or None when ``data`` is none of them (a plan or an estimate).
"""

from __future__ import annotations

from html import escape

from pydantic import ValidationError

from planner.errors import SpecError
from planner.report import svg
from planner.report.page import STYLE

BAR_COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f")


def specialist_page(data: object, *, title: str | None = None) -> str | None:
    """The HTML page of a scatter, expert-placement or memory-plan result; else None."""
    if not isinstance(data, dict):
        return None
    try:
        if "batches" in data and "summary" in data:
            from planner.scattering import ScatterResult

            scatter = ScatterResult.model_validate(data)
            heading = title or f"sequence scattering: {scatter.model} on {scatter.gpus} GPUs"
            return _page(heading, _scatter_sections(scatter))
        if "phy2log" in data and "layers" in data:
            from planner.experts import ExpertPlacementResult

            fields = {key: value for key, value in data.items() if key != "files"}
            placement = ExpertPlacementResult.model_validate(fields)
            heading = title or f"expert placement: {placement.model}, ep {placement.ep}"
            return _page(heading, _placement_sections(placement))
        if "stages" in data and "source" in data:
            from planner.memplan import MemoryPlan

            plan = MemoryPlan.model_validate(data)
            return _page(title or "memory plan", _memplan_sections(plan))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "result"
        raise SpecError(f"result file: {where}: {first['msg']}") from None
    return None


def _page(heading: str, sections: list[str]) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>autopar report: {escape(heading)}</title><style>{STYLE}</style></head>"
        f"<body><h1>autopar report: {escape(heading)}</h1>{''.join(sections)}</body></html>"
    )


def bar_chart(
    rows: list[tuple[str, list[float]]], series: list[str], *, label: str, unit: str
) -> str:
    """Grouped horizontal bars: one group per row, one bar per series (``data-*`` values)."""
    top = max([value for _, values in rows for value in values] + [1e-12])
    left, width, bar, gap = 170.0, 560.0, 12.0, 10.0
    body: list[str] = []
    y = 8.0
    for name, values in rows:
        body.append(
            svg.text(left - 8, y + bar * len(values) / 2 + 4, name, text_anchor="end", font_size=11)
        )
        for index, value in enumerate(values):
            body.append(
                svg.rect(
                    left,
                    y,
                    value / top * width,
                    bar - 2,
                    fill=BAR_COLOURS[index % 5],
                    class_="bar",
                    data_row=name,
                    data_series=series[index],
                    data_value=repr(value),
                    title=f"{name}, {series[index]}: {value:.4g} {unit}",
                )
            )
            body.append(
                svg.text(left + value / top * width + 4, y + bar - 3, f"{value:.3g}", font_size=9)
            )
            y += bar
        y += gap
    legend_x = left
    for index, name in enumerate(series):
        body.append(svg.rect(legend_x, y, 10, 10, fill=BAR_COLOURS[index % 5]))
        body.append(svg.text(legend_x + 14, y + 9, name, font_size=11))
        legend_x += 14 + 8 * len(name) + 16
    return svg.svg(left + width + 60, y + 20, body, label=label, class_="chart bar-chart")


def _table(caption: str, head: list[str], rows: list[list[str]]) -> str:
    header = "".join(f"<th>{escape(cell)}</th>" for cell in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><caption>{escape(caption)}</caption><tr>{header}</tr>{body}</table>"


def _scatter_sections(result) -> list[str]:
    names = [baseline.name for baseline in result.batches[0].baselines]
    series = ["scatter", *names]
    rows = [
        (f"batch {batch.index}", [batch.step_time_s, *(b.step_time_s for b in batch.baselines)])
        for batch in result.batches
    ]
    table_rows = [[name, *(f"{value:.4f}" for value in values)] for name, values in rows]
    sections = [
        "<h2>Step time per batch: scattering against the baselines</h2><figure>",
        bar_chart(rows, series, label="Predicted step time per batch", unit="s"),
        _table("The figure's numbers (seconds)", ["batch", *series], table_rows),
        "</figure>",
    ]
    for batch in result.batches[:4]:
        groups = [
            [str(k), str(g.size), g.placement, g.exchange, str(len(g.sequences)),
             f"{g.tokens:,}", f"{g.time_s:.4f}", f"{g.memory_per_gpu_gib:.1f}"]
            for k, micro in enumerate(batch.micro_batches)
            for g in micro.groups
        ]  # fmt: skip
        sections.append(
            f"<h2>Batch {batch.index}: sequence-parallel groups ({batch.method})</h2>"
            + _table(
                "Groups of each micro-batch",
                [
                    "micro-batch",
                    "GPUs",
                    "where",
                    "exchange",
                    "sequences",
                    "tokens",
                    "time s",
                    "GiB/GPU",
                ],
                groups,
            )
        )
    return sections


def _placement_sections(result) -> list[str]:
    shown = result.layers[:16]
    rows = [(f"layer {layer.layer}", [layer.max_load, layer.mean_load]) for layer in shown]
    baselines = [
        [b.name, f"{b.straggler_tokens:,.0f}", f"{b.balancedness:.3f}"] for b in result.baselines
    ]
    table_rows = [
        [str(layer.layer), f"{layer.max_load:,.0f}", f"{layer.mean_load:,.0f}",
         f"{layer.balancedness:.3f}", f"{layer.gain_vs_contiguous:.3f}",
         f"{layer.gain_vs_greedy_global:.3f}"]
        for layer in shown
    ]  # fmt: skip
    return [
        f"<p>Status {escape(result.status)}, gap {result.gap:.2%}, solved in "
        f"{result.solve_s:.2f} s; routing: {escape(result.routing_source)}.</p>",
        "<h2>Busiest and mean GPU load per layer</h2><figure>",
        bar_chart(rows, ["busiest GPU", "mean GPU"], label="GPU load per layer", unit="tokens"),
        _table(
            "The figure's numbers (tokens)",
            ["layer", "busiest", "mean", "balancedness", "gain vs contiguous", "gain vs greedy"],
            table_rows,
        ),
        "</figure><h2>Against the baselines</h2>",
        _table("Summed over layers", ["placement", "straggler tokens", "balancedness"], baselines),
    ]


def _memplan_sections(plan) -> list[str]:
    series = ["live (bound)", "allocator", "expandable", "planned"]
    rows = [
        (
            f"stage {stage.stage}",
            [stage.peaks.live_gib, stage.peaks.allocator_gib,
             stage.peaks.allocator_expandable_gib, stage.peaks.planned_gib],
        )
        for stage in plan.stages
    ]  # fmt: skip
    table_rows = [[name, *(f"{v:.2f}" for v in values)] for name, values in rows]
    return [
        "<h2>Peak memory per stage: live bytes, the caching allocator, our placement</h2>",
        "<figure>",
        bar_chart(rows, series, label="Peak memory per stage", unit="GiB"),
        _table("The figure's numbers (GiB)", ["stage", *series], table_rows),
        "</figure>",
    ]
