"""``autopar plan``: the fastest layouts that fit, ranked, with why the best one wins."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from planner.accuracy import HOST_BOUND_TIME_BAND, borrowed_rates_note
from planner.cli.compare import render as render_side_by_side
from planner.cli.emit import TORCHTITAN_FORMATS, write_emitted
from planner.cli.files import ensure_dir
from planner.cli.hardware_rank import (
    MeasureDeviceOption,
    MeasureStepsOption,
    RefineOnHardwareOption,
    render_hardware,
)
from planner.cli.inputs import (
    TOKEN_SUFFIX_HELP,
    ClusterOption,
    FrameworkOption,
    GlobalBatchOption,
    GlobalBatchTokensOption,
    GpusOption,
    JsonOption,
    MemplanOption,
    ModelOption,
    NodesOption,
    PrecisionOption,
    SeqLenOption,
    check_framework,
    load_inputs,
    parse_tokens,
)
from planner.cli.layout_options import (
    CrossEntropyLossFusionOption,
    ExpandableSegmentsOption,
    GradientAccumulationFusionOption,
    GradReduceInBf16Option,
    LayerSpecOption,
    run_settings,
)
from planner.cli.output import console, print_json
from planner.cli.pictures import print_plan_pictures, search_progress
from planner.cli.refine import (
    RefineObjectivesOption,
    RefineOption,
    RefineProgress,
    StorageOption,
    StudyNameOption,
    render_refinement,
)
from planner.cli.report import write_report
from planner.emit import emitter_names, load_emitters
from planner.errors import SpecError
from planner.experts import RoutingStats, read_routing, synthetic_stats
from planner.memplan.fits import MEMPLAN_TIME_LIMIT_S, PLAN_TOP, entry_with_simulated
from planner.plan import (
    DEFAULT_TIME_LIMIT_S,
    HardwareRankOptions,
    LengthsOption,
    PlanOutcome,
    PlanRequest,
    PlanResult,
    RefineOptions,
    check_refine_with_lengths,
    plan,
)
from planner.report.inputs import PlanView
from planner.report.side_by_side import side_by_side
from planner.scattering import ScatterSummary, read_lengths_file
from planner.search.candidates import coerce_knobs
from planner.search.driver import OBJECTIVES, layout_label
from planner.search.robust import RISKS
from planner.specs import ModelSpec
from planner.specs import limits as L


def parse_knobs(text: str | None, *, option: str) -> dict[str, Any]:
    """'tp=8,cp=2' -> {'tp': 8, 'cp': 2}; names and values checked against ParallelConfig."""
    if text is None:
        return {}
    raw: dict[str, str] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise SpecError(f"{option}: '{item.strip()}' is not knob=value (e.g. tp=8,cp=2)")
        if name in raw:
            raise SpecError(f"{option}: knob '{name}' is given twice")
        raw[name] = value
    return coerce_knobs(raw, option=option)


def lengths_option(length_dist: str | None, seq_lengths: Path | None) -> LengthsOption | None:
    """--length-dist / --seq-lengths as the request's ``lengths`` (None without either)."""
    if length_dist is not None and seq_lengths is not None:
        raise SpecError("--length-dist, --seq-lengths: give one of them, not both")
    if length_dist is not None:
        return LengthsOption(distribution=length_dist)
    if seq_lengths is not None:
        return LengthsOption(batches=read_lengths_file(seq_lengths), source=f"file {seq_lengths}")
    return None


def check_torchtitan_version(version: str | None, *, framework: str) -> None:
    """--torchtitan-version: a known version, and only with --framework torchtitan."""
    if version is None:
        return
    if version not in TORCHTITAN_FORMATS:
        known = ", ".join(TORCHTITAN_FORMATS)
        raise SpecError(f"--torchtitan-version: unknown '{version}'; known: {known}")
    if framework != "torchtitan":
        raise SpecError(f"--torchtitan-version: only with --framework torchtitan (not {framework})")


def check_emit(emit: str | None, out: Path | None, *, framework: str | None = None) -> Path | None:
    """--emit and --out, checked before any search: the directory for the launch files
    (created now, so that an unwritable one is reported at once), or None without --emit.
    With ``framework``, the format must be that framework's (torchtitan-toml is torchtitan's):
    a plan searched for one framework's knobs and memory does not launch on another."""
    if emit is None:
        if out is not None:
            raise SpecError("--out: only with --emit (the directory for the launch files)")
        return None
    load_emitters()
    if emit not in emitter_names():
        raise SpecError(f"--emit: unknown format '{emit}'; known: {', '.join(emitter_names())}")
    emitted_framework = "torchtitan" if emit.startswith("torchtitan") else emit
    if framework is not None and emitted_framework != framework:
        raise SpecError(
            f"--emit: format '{emit}' is {emitted_framework}'s, but --framework is {framework}; "
            f"plan with --framework {emitted_framework} or --emit {framework}"
        )
    return ensure_dir(out or Path("run"), option="--out")


def plan_routing(
    routing: Path | None, synthetic: str | None, model: ModelSpec
) -> RoutingStats | None:
    """--routing / --synthetic for an MoE model's plan (neither: balanced routing)."""
    if routing is None and synthetic is None:
        return None
    flag = "--routing" if routing is not None else "--synthetic"
    if routing is not None and synthetic is not None:
        raise SpecError("--routing: give at most one of --routing STATS and --synthetic SPEC")
    if model.moe is None:
        raise SpecError(
            f"{flag}: {model.name} has no MoE layers; routing statistics apply to MoE models only"
        )
    if routing is not None:
        return read_routing(routing)
    assert synthetic is not None
    return synthetic_stats(
        synthetic, layers=model.num_moe_layers, experts=model.moe.num_experts, top_k=model.moe.top_k
    )


def plan_command(
    model: ModelOption,
    cluster: ClusterOption,
    seq_len: SeqLenOption,
    nodes: NodesOption = None,
    gpus: GpusOption = None,
    global_batch: GlobalBatchOption = None,
    global_batch_tokens: GlobalBatchTokensOption = None,
    precision: PrecisionOption = "bf16",
    framework: FrameworkOption = "megatron",
    # run-time settings every layout is priced with (as autopar estimate takes them)
    expandable_segments: ExpandableSegmentsOption = None,
    grad_reduce_in_bf16: GradReduceInBf16Option = None,
    layer_spec: LayerSpecOption = None,
    cross_entropy_loss_fusion: CrossEntropyLossFusionOption = None,
    gradient_accumulation_fusion: GradientAccumulationFusionOption = None,
    objective: Annotated[
        str,
        typer.Option(
            help="throughput (shortest step) | cost (cheapest token budget, needs "
            "--price-per-gpu-hour and --token-budget) | min-gpus (fewest GPUs for the "
            "budget, needs --token-budget and --deadline-hours); cost and min-gpus search "
            "cluster sizes up to the cluster given."
        ),
    ] = "throughput",
    price_per_gpu_hour: Annotated[
        float | None,
        typer.Option("--price-per-gpu-hour", min=0.0, help="Price of one GPU for an hour."),
    ] = None,
    token_budget: Annotated[
        str | None,
        typer.Option(
            "--token-budget", help=f"Tokens to train on: 15T, 2.5B, 300M ({TOKEN_SUFFIX_HELP})."
        ),
    ] = None,
    deadline_hours: Annotated[
        float | None,
        typer.Option("--deadline-hours", min=0.0, help="Hours the token budget must fit in."),
    ] = None,
    fix: Annotated[str | None, typer.Option("--fix", help="Pin knobs, e.g. tp=8,cp=2.")] = None,
    maximum: Annotated[
        str | None, typer.Option("--max", help="Bound knobs, e.g. tp=8,pp=4.")
    ] = None,
    headroom_gib: Annotated[
        float | None,
        typer.Option(
            "--headroom-gib",
            min=0.0,
            help="GiB to leave free on every GPU; 0 keeps none. [default: the framework's "
            "worst validated peak-memory error of the capacity, e.g. 3.41% for megatron]",
        ),
    ] = None,
    risk: Annotated[
        str,
        typer.Option(
            help="averse: among plans whose predicted gain is inside the model's error band, "
            "prefer the robust layout (conventions kept, fewer axes, more headroom); "
            "neutral: rank by the prediction alone."
        ),
    ] = "averse",
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Plans to show.")] = 5,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="After the table, set the best plan side by side with each next one "
            "(autopar compare's tables): the knobs that differ, memory per stage, the time "
            "breakdown, and which differences are inside the model's error.",
        ),
    ] = False,
    time_limit: Annotated[
        float,
        typer.Option(
            "--time-limit",
            help=f"Seconds for the whole search, {L.MIN_TIME_LIMIT_S:g} to "
            f"{L.MAX_TIME_LIMIT_S:g}: past it the best plans found are shown, labelled not "
            "proven optimal.",
        ),
    ] = DEFAULT_TIME_LIMIT_S,
    emit: Annotated[
        str | None,
        typer.Option(
            help="Also write launch files for the best plan: megatron | deepspeed | torchtitan."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Directory for --emit's files. [default: run]")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Also draw the plans as a self-contained HTML file."),
    ] = None,
    torchtitan_version: Annotated[
        str | None,
        typer.Option(
            "--torchtitan-version",
            help="With --framework torchtitan: current (0.3.0 recipe) or 0.2 (TOML job file, "
            "up to v0.2.2); the search keeps to what that release runs (its CP algorithms, "
            "expert TP) and --emit torchtitan writes its format. [default: current]",
        ),
    ] = None,
    memplan: MemplanOption = False,
    as_json: JsonOption = False,
    # Optuna refinement of the solver's plans (planner/cli/refine.py)
    refine: RefineOption = 0,
    refine_objectives: RefineObjectivesOption = "throughput",
    study_name: StudyNameOption = None,
    storage: StorageOption = None,
    # empirical re-ranking on this machine's GPUs (planner/cli/hardware_rank.py)
    refine_on_hardware: RefineOnHardwareOption = 0,
    measure_device: MeasureDeviceOption = "cuda",
    measure_steps: MeasureStepsOption = 6,
    # variable sequence lengths: scattering on the best plan (planner/scattering/for_plan.py)
    length_dist: Annotated[
        str | None,
        typer.Option(
            "--length-dist",
            help="Also scatter batches sampled from a shipped length distribution "
            "(wikipedia-flexsp, code-files, uniform, fixed) over SP groups of different sizes "
            "on the best plan's cluster, against the best static degree; documents are cut at "
            "--seq-len.",
        ),
    ] = None,
    seq_lengths: Annotated[
        Path | None,
        typer.Option(
            "--seq-lengths",
            help="As --length-dist, with your own lengths: one per line, or JSON (a list of "
            "lengths or of batches).",
        ),
    ] = None,
    routing: Annotated[
        Path | None,
        typer.Option(
            help="MoE routing statistics ([layers, experts] loads: .json/.npy/.pt, or an "
            "autopar routing-stats file): each EP degree is timed with its solved expert "
            "placement. Without it (or --synthetic) routing is assumed balanced."
        ),
    ] = None,
    synthetic: Annotated[
        str | None,
        typer.Option(
            help="Synthetic MoE routing instead of --routing: zipf:S[,seed:K][,tokens:T]."
        ),
    ] = None,
) -> None:
    """Search every layout for the best that fit in memory, and explain the best."""
    check_framework(framework)
    check_torchtitan_version(torchtitan_version, framework=framework)
    runtime, spec = run_settings(
        framework=framework,
        expandable_segments=expandable_segments,
        grad_reduce_in_bf16=grad_reduce_in_bf16,
        layer_spec=layer_spec,
        cross_entropy_loss_fusion=cross_entropy_loss_fusion,
        gradient_accumulation_fusion=gradient_accumulation_fusion,
    )
    out = check_emit(emit, out, framework=framework)
    if objective not in OBJECTIVES:
        raise SpecError(f"--objective: unknown '{objective}'; known: {', '.join(OBJECTIVES)}")
    if risk not in RISKS:
        raise SpecError(f"--risk: unknown '{risk}'; known: {', '.join(RISKS)}")
    if compare and as_json:
        raise SpecError(
            "--compare: the side-by-side tables are for the terminal; with --json, give the "
            "file to autopar compare (autopar compare plans.json --rank-b 3)"
        )
    fixed = parse_knobs(fix, option="--fix")
    maxima = parse_knobs(maximum, option="--max")
    for name, bound in maxima.items():
        if isinstance(bound, bool) or not isinstance(bound, int):
            raise SpecError(f"--max: {name}={bound} is not a whole-number knob")
    model_spec, cluster_spec, workload = load_inputs(
        model=model, cluster=cluster, nodes=nodes, gpus=gpus, seq_len=seq_len,
        global_batch=global_batch, global_batch_tokens=global_batch_tokens, precision=precision,
    )  # fmt: skip
    routing_stats = plan_routing(routing, synthetic, model_spec)
    if nodes is None and gpus is None:
        note = one_node_note(cluster_spec.num_gpus)
        typer.echo(note, err=True) if as_json else console().print(note)
    request = PlanRequest(
        model=model_spec,
        cluster=cluster_spec,
        workload=workload,
        framework=framework,
        framework_version=torchtitan_version,
        objective=objective,
        fixed=fixed,
        maxima=maxima,
        headroom_gib=headroom_gib,
        risk=risk,
        top_k=top_k,
        time_limit_s=time_limit,
        price_per_gpu_hour=price_per_gpu_hour,
        token_budget=None
        if token_budget is None
        else float(parse_tokens(token_budget, option="--token-budget")),
        deadline_hours=deadline_hours,
        refine=RefineOptions(
            trials=refine, objectives=refine_objectives, study_name=study_name, storage=storage
        )
        if refine
        else None,
        hardware=HardwareRankOptions(
            top=refine_on_hardware, device=measure_device, steps=measure_steps
        )
        if refine_on_hardware
        else None,
        lengths=lengths_option(length_dist, seq_lengths),
        routing=routing_stats,
        runtime=runtime,
        layer_spec=spec,
    )
    check_refine_with_lengths(request)  # before the progress bars start
    bar = RefineProgress(refine, quiet=as_json)
    with bar, search_progress(not as_json) as progress:
        result = plan(request, progress=progress, refine_callbacks=[bar] if refine else ())
    if memplan:
        result = _simulated(result, request)
    if emit is not None and out is not None:  # the solver's best, or the refined best
        if emit == "torchtitan":
            emit = TORCHTITAN_FORMATS[torchtitan_version or "current"]
        write_emitted(result.best_entry(), format=emit, out=out, quiet=as_json)
    if report is not None:
        write_report(result.model_dump(mode="json"), report)
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    render_plan(result)
    if compare:
        render_comparisons(result)
    render_routing(result)
    _render_simulated(result)
    if result.refinement is not None:
        render_refinement(result.refinement)
    if result.hardware is not None:
        render_hardware(result.hardware)


def render_comparisons(result: PlanResult) -> None:
    """``--compare``: plan 1 beside each later plan, in ``autopar compare``'s tables."""
    views = [PlanView.model_validate(entry.model_dump(mode="json")) for entry in result.plans]
    out = console()
    if len(views) < 2:
        out.print("Compare: only one plan, nothing to set beside it (--top-k 2 or more).")
        return
    for rank, view in enumerate(views[1:], start=2):
        out.print(f"\nPlan 1 beside plan {rank}:")
        render_side_by_side(side_by_side(views[0], view, a_label="plan 1", b_label=f"plan {rank}"))


def one_node_note(gpus: int) -> str:
    """What a plan without --nodes or --gpus is for."""
    return (
        f"Note: neither --nodes nor --gpus given: planning for one node ({gpus} GPUs); "
        "pass --nodes N or --gpus N for more."
    )


def _simulated(result: PlanOutcome, request: PlanRequest) -> PlanOutcome:
    """The best ``PLAN_TOP`` plans with their memory sections simulated (``--memplan``)."""
    plans = [
        entry_with_simulated(
            entry, model=request.model, cluster=request.cluster, workload=request.workload,
            time_limit_s=MEMPLAN_TIME_LIMIT_S,
        )
        if rank < PLAN_TOP
        else entry
        for rank, entry in enumerate(result.plans)
    ]  # fmt: skip
    return result.model_copy(update={"plans": plans})


def _render_simulated(result: PlanResult) -> None:
    out = console()
    for rank, entry in enumerate(result.plans, start=1):
        if entry.memory.simulated is None:
            continue
        peaks = "; ".join(
            f"stage {peak.stage}: allocator {peak.allocator_gib:.2f}, expandable "
            f"{peak.allocator_expandable_gib:.2f}, planned {peak.planned_gib:.2f}"
            for peak in entry.memory.simulated
        )
        out.print(f"#{rank} simulated (GiB per GPU) {peaks}. {entry.memory.fits_basis}")


def render_plan(result: PlanResult) -> None:
    """The ranked table, the best plan's explanation and how the search went."""
    first = result.plans[0].config
    table = Table(
        title=(
            f"{first.model} on {first.num_gpus} x {first.gpu}, seq {first.seq_len}, "
            f"batch {first.global_batch} ({first.framework})"
        )
    )
    budget = result.plans[0].training is not None
    sized = len(result.search.gpus_searched) > 1
    columns = ["#", *(["GPUs"] if sized else []), "layout", "step s", "tokens/s", "MFU"]
    columns += ["peak GiB", "headroom GiB"]
    if budget:
        columns += ["hours"] + (["cost"] if "cost" in result.plans[0].training else [])
    for column in columns:
        table.add_column(column, justify="left" if column == "layout" else "right")
    table.add_column("dominant cost")
    for rank, entry in enumerate(result.plans, start=1):
        timing, memory = entry.time, entry.memory
        name, seconds = max(timing.breakdown_s.items(), key=lambda item: item[1])
        cells = [str(rank), *([str(entry.config.num_gpus)] if sized else [])]
        cells += [
            layout_label(entry.config),
            f"{timing.step_time_s:.3f}",
            f"{timing.tokens_per_s:,.0f}",
            f"{timing.mfu:.1%}",
            f"{memory.peak_gib:.2f}",
            f"{memory.headroom_gib:.2f}",
        ]
        if entry.training is not None:
            cells.append(f"{entry.training['hours']:,.1f}")
            if "cost" in entry.training:
                cells.append(f"{entry.training['cost']:,.0f}")
        table.add_row(*cells, f"{name.replace('_', ' ')} {seconds:.3f} s")
    out = console()
    out.print(table)
    info = result.search
    out.print(f"Memory: {info.headroom_words}.")
    borrowed = borrowed_rates_note(result.plans[0].time.rates_source)
    if borrowed is not None:
        out.print(f"Note: {borrowed}: the step-time band is wider (+/-{HOST_BOUND_TIME_BAND:.0%}).")
    print_plan_pictures(PlanView.model_validate(result.plans[0].model_dump(mode="json")), out)
    out.print(result.plans[0].explanation)
    if result.plans[0].scattering is not None:
        render_scattering(result.plans[0].scattering)
    verdict = "optimal" if info.optimal else "NOT proven optimal (time limit)"
    sizes = f" over {len(info.gpus_searched)} cluster sizes" if sized else ""
    split_count = info.layouts_split_solver
    out.print(
        f"Search: {info.objective}{sizes}, {info.layouts_considered} layouts considered, "
        f"{info.layouts_legal} legal"
        + (f" ({split_count} from the split solver)" if split_count else "")
        + f", {info.layouts_feasible} fit"
        + f"; {info.solver} {verdict} in {info.wall_s:.2f} s."
    )


def render_scattering(summary: ScatterSummary) -> None:
    """One paragraph: the verdict on the best plan's layout over the lengths (the search's,
    when it priced them), and the per-batch scattering solver against the best static
    degree on the best plan's GPUs."""
    verdict = "WINS" if summary.wins else "does not win"
    solver = (
        f"{summary.step_time_s:.3f} s vs {summary.static_step_time_s:.3f} s for the best static "
        f"degree (Megatron hybrid CP {summary.megatron_hybrid_cp_step_time_s:.3f} s)"
    )
    lengths = (
        f"{summary.batches} batch(es) on {summary.gpus} GPUs, documents cut at "
        f"{summary.max_seq_len} tokens; lengths: {summary.lengths_source}"
    )
    if summary.decided_by == "search":
        console().print(
            f"Lengths ({lengths}): every layout was priced over them; hybrid context parallel "
            f"{verdict}: {summary.reason} ({solver}, on the solver's own cost model: ZeRO-3 "
            "with Ulysses or ring, not the plan's)."
        )
        return
    console().print(
        f"Scattering ({lengths}): {verdict}: {solver} ({summary.speedup_over_static:.2f}x); "
        f"{summary.reason}. Step times are the scattering cost model's (ZeRO-3 with Ulysses "
        "or ring), not the plan's."
    )


def render_routing(result: PlanOutcome) -> None:
    """The expert placement each plan was timed with, or that routing was assumed balanced."""
    out = console()
    if result.routing_note is not None:
        out.print(f"Note: {result.routing_note}.")
    for rank, entry in enumerate(result.plans, start=1):
        p = entry.expert_placement
        if p is None:
            continue
        out.print(
            f"Plan {rank}: experts placed on ep {p.ep} by the {p.method} ({p.status}, gap "
            f"{p.gap:.1%}, {p.solve_s:.2f} s): balancedness {p.balancedness:.3f}, busiest GPU "
            f"{p.max_imbalance:.3f}x the mean, {p.cross_node_fraction:.1%} of the all-to-all "
            f"bytes cross nodes (routing: {p.routing_source})."
        )
