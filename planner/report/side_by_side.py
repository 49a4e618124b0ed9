"""Two plans side by side: what differs, by how much, and whether the model can tell.

``side_by_side(a, b)`` takes two plans as ``autopar plan --json`` (or ``autopar estimate
--json``) writes them, parsed into ``PlanView`` (``planner.report.inputs``), and returns
a ``SideBySide``: the knobs of both layouts, the peak memory of every pipeline stage,
each part of the step-time breakdown, step time and throughput, each pair of numbers with
its difference and whether that difference is **inside the model's error**.

A difference is inside the error when the two predictions' error bands
(``planner.accuracy.prediction_band``: step time +/-10% on a GPU's own measured rates,
+/-20% on rates borrowed from another GPU; peak memory +/-3%) overlap: the model cannot
say which of the two is larger, only a measurement can. The wider of the two plans' bands
is used for both (a plan on borrowed rates makes the comparison as uncertain as itself).
Memory compares per stage at the same stage index; where one plan has more pipeline
stages than the other, the extra stages have nothing to compare with. The step time is
compared only when both plans run the same job (model, sequence length, global batch);
otherwise the throughput per GPU is what the verdict compares.

Pure: no files, no printing (``planner.cli.compare`` reads the files and draws the table).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from planner.accuracy import Band, prediction_band
from planner.report.inputs import PlanView

SAME_JOB_FIELDS = ("model", "seq_len", "global_batch")
"""A step-time comparison needs the same work per step: these fields equal."""


class Pair(BaseModel):
    """One predicted quantity of both plans."""

    model_config = ConfigDict(frozen=True)

    name: str
    unit: str
    a: float | None
    b: float | None
    delta_pct: float | None
    """(b - a) / a in percent; None where either is missing or a is zero."""
    inside_error: bool | None
    """Whether the two values' error bands overlap (None: nothing to compare)."""


class Knob(BaseModel):
    """One layout knob of both plans."""

    model_config = ConfigDict(frozen=True)

    name: str
    a: object
    b: object
    differs: bool


class SideBySide(BaseModel):
    """The comparison ``side_by_side`` returns (module docstring)."""

    model_config = ConfigDict(frozen=True)

    a_label: str
    b_label: str
    a_layout: str
    b_layout: str
    same_job: bool
    job_differences: dict[str, tuple[object, object]]
    band_basis: str
    time_band: float
    memory_band: float
    knobs: list[Knob]
    headline: list[Pair]
    """Step time, tokens/s per GPU, MFU, peak memory, headroom."""
    stages: list[Pair]
    """Peak memory of each pipeline stage's GPU."""
    breakdown: list[Pair]
    """Each part of the step-time breakdown (``TimeReport.breakdown_s``)."""
    verdict: str


def _relative_overlap(a: float, b: float, band: float) -> bool:
    """Whether [a(1-band), a(1+band)] and [b(1-band), b(1+band)] overlap."""
    return a * (1 - band) <= b * (1 + band) and b * (1 - band) <= a * (1 + band)


def _pair(
    name: str,
    unit: str,
    a: float | None,
    b: float | None,
    band: float | None,
    *,
    relative: bool = True,
) -> Pair:
    """``band`` None: no error comparison; ``relative`` False: no percentage either (a
    difference of two predictions, such as the headroom, has no band of its own)."""
    delta = None
    if relative and a is not None and b is not None and a != 0:
        delta = 100 * (b - a) / abs(a)
    inside = None
    if a is not None and b is not None and band is not None:
        inside = _relative_overlap(a, b, band)
    return Pair(name=name, unit=unit, a=a, b=b, delta_pct=delta, inside_error=inside)


def wider_band(a: PlanView, b: PlanView) -> Band:
    """The wider of the two plans' prediction bands (module docstring)."""
    bands = [prediction_band(rates_source=p.time.rates_source) for p in (a, b)]
    return max(bands, key=lambda band: (band.time, band.memory))


def side_by_side(a: PlanView, b: PlanView, *, a_label: str = "A", b_label: str = "B") -> SideBySide:
    """Compare plan ``a`` with plan ``b`` (module docstring)."""
    band = wider_band(a, b)
    job_a, job_b = a.config.model_dump(), b.config.model_dump()
    job_differences = {
        name: (job_a[name], job_b[name])
        for name in ("model", "gpu", "num_gpus", "seq_len", "global_batch", "precision",
                     "framework")
        if job_a[name] != job_b[name]
    }  # fmt: skip
    same_job = not any(name in job_differences for name in SAME_JOB_FIELDS)
    knobs_a, knobs_b = a.config.knobs(), b.config.knobs()
    knobs = [
        Knob(name=name, a=knobs_a[name], b=knobs_b[name], differs=knobs_a[name] != knobs_b[name])
        for name in knobs_a
    ]
    step = _pair(
        "step time", "s", a.time.step_time_s, b.time.step_time_s, band.time if same_job else None
    )
    per_gpu = _pair(
        "tokens/s per GPU", "tokens/s", a.time.tokens_per_s_per_gpu,
        b.time.tokens_per_s_per_gpu, band.time,
    )  # fmt: skip
    headline = [
        step,
        per_gpu,
        _pair("MFU", "", a.time.mfu, b.time.mfu, band.time),
        _pair("peak memory", "GiB", a.memory.peak_gib, b.memory.peak_gib, band.memory),
        _pair(
            "headroom", "GiB", a.memory.headroom_gib, b.memory.headroom_gib, None, relative=False
        ),
    ]
    return SideBySide(
        a_label=a_label,
        b_label=b_label,
        a_layout=a.config.layout_label(),
        b_layout=b.config.layout_label(),
        same_job=same_job,
        job_differences=job_differences,
        band_basis=band.basis,
        time_band=band.time,
        memory_band=band.memory,
        knobs=knobs,
        headline=headline,
        stages=_stage_pairs(a, b, band),
        breakdown=_breakdown_pairs(a, b, band),
        verdict=_verdict(a_label, b_label, step if same_job else per_gpu, a, b, band),
    )


def _stage_pairs(a: PlanView, b: PlanView, band: Band) -> list[Pair]:
    totals_a = {s.stage: s.total_gib for s in a.memory.stages}
    totals_b = {s.stage: s.total_gib for s in b.memory.stages}
    return [
        _pair(f"stage {stage}", "GiB", totals_a.get(stage), totals_b.get(stage), band.memory)
        for stage in sorted(set(totals_a) | set(totals_b))
    ]


def _breakdown_pairs(a: PlanView, b: PlanView, band: Band) -> list[Pair]:
    parts_a, parts_b = a.time.breakdown_s, b.time.breakdown_s
    names = list(parts_a) + [name for name in parts_b if name not in parts_a]
    return [_pair(name, "s", parts_a.get(name), parts_b.get(name), band.time) for name in names]


def _verdict(
    a_label: str, b_label: str, compared: Pair, a: PlanView, b: PlanView, band: Band
) -> str:
    """One sentence: which is faster, and whether the model can tell."""
    assert compared.a is not None and compared.b is not None
    what = "step time" if compared.name == "step time" else "throughput per GPU"
    delta = compared.delta_pct or 0.0
    if compared.name == "step time":
        direction = "longer" if delta > 0 else "shorter"
    else:
        direction = "higher" if delta > 0 else "lower"
    fits = [label for label, p in ((a_label, a), (b_label, b)) if not p.memory.fits]
    verb = "do" if len(fits) > 1 else "does"
    memory = f"; {' and '.join(fits)} {verb} not fit in memory" if fits else ""
    if compared.a == compared.b:
        return f"the same predicted {what}{memory}."
    said = f"{b_label}'s predicted {what} is {abs(delta):.1f}% {direction} than {a_label}'s"
    if compared.inside_error:
        return (
            f"{said}, inside the model's error (+/-{band.time:.0%}): the two cannot be told "
            f"apart by prediction, only by a measurement{memory}."
        )
    return f"{said}, outside the model's error (+/-{band.time:.0%}){memory}."
