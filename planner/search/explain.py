"""Words for the search's results: layout labels, why the best plan wins, why none fits."""

from __future__ import annotations

from typing import Any

from planner.predict import Estimate
from planner.search import robust
from planner.search.candidates import Enumeration
from planner.search.objectives import Objective
from planner.search.tabulate import Row
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import ParallelConfig
from planner.specs.workload import WorkloadSpec

KNOB_LABELS = {
    "tp": "tp",
    "cp": "cp",
    "pp": "pp",
    "dp": "dp",
    "ep": "ep",
    "vpp": "vpp",
    "mbs": "mbs",
    "recompute": "recompute",
    "recompute_method": "recompute method",
    "recompute_num_layers": "recompute layers",
    "first_stage_layers": "first-stage layers",
    "last_stage_layers": "last-stage layers",
    "zero_stage": "ZeRO stage",
    "sequence_parallel": "sequence parallel",
    "cp_comm_type": "cp comm",
    "hierarchical_cp_sizes": "cp groups",
    "num_gpus": "GPUs",
}


BEST_WORD = {"throughput": "Fastest", "cost": "Cheapest", "min-gpus": "Fewest GPUs"}


def layout_label(layout: ParallelConfig) -> str:
    """'tp 8 pp 4 dp 2 cp 1 mbs 1 vpp 2 recompute selective' (ep, cp algorithm, uneven
    stages and recompute groups only where they apply); ``layout`` may be a plan's
    ``ResolvedConfig``."""
    c = layout
    parts = [f"tp {c.tp}", f"pp {c.pp}", f"dp {c.dp}", f"cp {c.cp}"]
    if c.cp > 1 and c.cp_comm_type == "a2a+p2p" and c.hierarchical_cp_sizes is not None:
        a2a, ring = c.hierarchical_cp_sizes
        parts.append(f"(a2a {a2a} x p2p {ring})")
    elif c.cp > 1 and c.cp_comm_type != "p2p":
        parts.append(f"({c.cp_comm_type})")
    if c.ep > 1:
        parts.append(f"ep {c.ep}")
    parts.append(f"mbs {c.mbs}")
    if c.vpp:
        parts.append(f"vpp {c.vpp}")
    if c.first_stage_layers or c.last_stage_layers:
        parts.append(f"stages {c.first_stage_layers or '='}/{c.last_stage_layers or '='}")
    parts.append(f"recompute {c.recompute}")
    if c.recompute == "full" and c.recompute_method == "block":
        parts.append(f"(first {c.recompute_num_layers} per stage)")
    return " ".join(parts)


def knob_words(knob: str, value: Any) -> str:
    """One knob's value in words: 'vpp 4' reads 'interleaved with 4 virtual stages',
    unset values say what unset means."""
    if knob == "vpp":
        return (
            f"interleaved with {value} virtual stages" if value and value > 1 else "not interleaved"
        )
    if knob in ("first_stage_layers", "last_stage_layers") and value is None:
        return f"{KNOB_LABELS[knob]} even"
    if knob == "recompute_num_layers" and value is None:
        return "recompute layers none"
    if knob == "cp_comm_type" and value is None:
        return "cp comm default"
    if knob == "hierarchical_cp_sizes":
        return "cp groups none" if value is None else f"cp groups a2a {value[0]} x p2p {value[1]}"
    if isinstance(value, bool):
        return f"{KNOB_LABELS[knob]} {'on' if value else 'off'}"
    return f"{KNOB_LABELS[knob]} {value}"


def _instead(knob: str, mine: Any, theirs: Any) -> str:
    """'tp 2 instead of 4'; knobs whose words carry the value name it once per side."""
    mine_words, theirs_words = knob_words(knob, mine), knob_words(knob, theirs)
    label = f"{KNOB_LABELS[knob]} "
    if mine_words.startswith(label) and theirs_words.startswith(label):
        theirs_words = theirs_words[len(label) :]
    return f"{mine_words} instead of {theirs_words}"


MEMORY_SHOWN_GIB = 0.05
"""Peak-memory differences below this (0.0 when printed to one decimal) are not shown."""


def compare(better: Estimate, other: Estimate) -> str:
    """Which knobs differ and the biggest breakdown and memory differences, better vs other."""
    mine = {k: getattr(better.config, k) for k in KNOB_LABELS}
    theirs = {k: getattr(other.config, k) for k in KNOB_LABELS}
    # the recompute method and layer count follow from the recompute mode when it differs
    derived = (
        {"recompute_method", "recompute_num_layers"}
        if mine["recompute"] != theirs["recompute"]
        else set()
    )
    if mine["cp_comm_type"] != theirs["cp_comm_type"]:  # the groups follow the algorithm
        derived.add("hierarchical_cp_sizes")
    knobs = [
        _instead(k, mine[k], theirs[k])
        for k in KNOB_LABELS
        if mine[k] != theirs[k] and k not in derived
    ]
    deltas = {
        name: better.time.breakdown_s.get(name, 0.0) - other.time.breakdown_s.get(name, 0.0)
        for name in {*better.time.breakdown_s, *other.time.breakdown_s}
    }
    biggest = sorted((d for d in deltas.items() if abs(d[1]) >= 5e-4), key=lambda d: -abs(d[1]))
    timing = [f"{name.replace('_', ' ')} {delta:+.3f} s" for name, delta in biggest[:3]]
    peak = better.memory.peak_gib - other.memory.peak_gib
    activations = max(s.activations_gib for s in better.memory.stages) - max(
        s.activations_gib for s in other.memory.stages
    )
    memory = (
        f"peak memory {abs(peak):.1f} GiB {'lower' if peak < 0 else 'higher'}"
        if abs(peak) >= MEMORY_SHOWN_GIB
        else "same peak memory"
    )
    if abs(activations) >= MEMORY_SHOWN_GIB:
        memory += f" (activations {activations:+.1f} GiB)"
    return f"{', '.join(knobs) or 'same knobs'}: {'; '.join(timing) or 'same time'}; {memory}"


def explain(
    rank: int,
    rows: list[Row],
    estimates: list[Estimate],
    goal: Objective,
    *,
    fitting: int,
    best: tuple[Estimate, float] | None = None,
    conventional: tuple[Estimate, float] | None = None,
) -> str:
    """Why plan ``rank`` is where it is: the best against the runner-up, others against it.

    ``fitting``: how many layouts fit (the search's count). With ``--risk averse``:
    ``best``, the objective's own best plan and its objective value (the robust order may
    have put another plan first), and ``conventional``, the best layout that breaks no
    convention (None when none fits)."""
    result, step = estimates[rank], estimates[rank].time.step_time_s
    what = goal.describe(rows[rank])
    if rank == 0:
        robust_note = ""
        if best is not None and best[0].config != result.config:
            value = goal.key(rows[0], rows[0].step_s)
            robust_note = " " + robust.chosen_note(
                result,
                best[0],
                values=(value, best[1]),
                objective_word=BEST_WORD[goal.name].lower(),
            )
        elif best is not None and robust.robustness(result).broken:
            robust_note = " " + robust.kept_note(
                result, conventional, value=best[1], objective_word=BEST_WORD[goal.name].lower()
            )
        chosen = best is not None and best[0].config != result.config
        word = "Chosen for robustness (--risk averse)" if chosen else BEST_WORD[goal.name]
        if len(estimates) == 1:
            if fitting <= 1:
                return f"The only layout that fits: {layout_label(result.config)}, {what}."
            return (
                f"{word} ({fitting} layouts fit): {layout_label(result.config)}, "
                f"{what}.{robust_note}"
            )
        runner = estimates[1]
        if chosen:
            return (
                f"{word}: {what}.{robust_note} Against the runner-up "
                f"({layout_label(runner.config)}): {compare(result, runner)}."
            )
        lead = _lead(goal, rows[0], rows[1], step, runner.time.step_time_s)
        if lead is None:
            peak = result.memory.peak_gib - runner.memory.peak_gib
            tie = (
                "chosen for its lower peak memory"
                if peak <= -MEMORY_SHOWN_GIB
                else "(the order among ties is the solver's)"
            )
            return (
                f"{word}: {what}, tied with the runner-up ({layout_label(runner.config)}) "
                f"{tie}. {compare(result, runner)}.{robust_note}"
            )
        return (
            f"{word}: {what}, {lead} the runner-up ({layout_label(runner.config)}). "
            f"{compare(result, runner)}.{robust_note}"
        )
    lead = _lead(goal, rows[0], rows[rank], estimates[0].time.step_time_s, step)
    versus = compare(estimates[0], result)
    if lead:
        behind = f"The best is {lead} this"
    elif _value(goal, rows[rank]) < _value(goal, rows[0]):
        better = "Cheaper" if goal.name == "cost" else "Faster"
        behind = f"{better} by prediction than the chosen plan, which is more robust"
    else:
        behind = "Tied with the best"
    return f"{behind} ({what}). Best vs this: {versus}."


def _value(goal: Objective, row: Row) -> float:
    return goal.key(row, row.step_s)


def _lead(
    goal: Objective, best: Row, other: Row, best_step: float, other_step: float
) -> str | None:
    """How far ``best`` is ahead of ``other`` in the objective's terms; None for a tie."""
    if goal.name == "cost":
        gap = goal.train_cost(other) - goal.train_cost(best)
        return f"{gap:,.0f} cheaper than" if gap > 0 else None
    if goal.stops_at_first_fit and other.cluster.num_gpus != best.cluster.num_gpus:
        return f"{other.cluster.num_gpus - best.cluster.num_gpus} GPUs fewer than"
    gap = other_step - best_step
    return f"{gap:.3f} s per step ahead of" if gap > 0 else None


def no_layout_message(space: Enumeration, cluster: ClusterSpec) -> str:
    if not space.considered:
        return (
            f"no layout: the knob domains, fixed values and maxima leave no combination of "
            f"tp x cp x pp x dp for {cluster.num_gpus} GPUs"
        )
    rules = "; ".join(
        f"{rule.text} removed {count} (e.g. {space.examples[rule]})"
        for rule, count in space.dropped.most_common()
    )
    return (
        f"no layout passes the framework rules: all {space.considered} candidates break "
        f"one: {rules}. Try another GPU count, batch or sequence length, or fewer fixed knobs"
    )


def memory_message(
    *,
    considered: int,
    legal: int,
    dropped: str,
    closest: Row,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    headroom_gib: float,
    fixed: dict[str, Any],
    moe: bool,
    more_gpus: str,
    states_alone: bool = False,
) -> str:
    """Nothing fits in memory: where the closest layout overflows and what would change it.

    ``more_gpus``: the "more GPUs" suggestion with the smallest size that fits
    (``planner.search.grow``); ``states_alone``: the weights, gradients and optimizer
    states overflow every layout by themselves, so what shrinks activations (recompute,
    a shorter sequence, a smaller micro-batch) is not suggested."""
    layout = closest.layout
    suggestions = [more_gpus]
    if not states_alone:
        if layout.recompute != "full":
            suggestions.append(
                "full recomputation" + (" (recompute is fixed)" if "recompute" in fixed else "")
            )
        suggestions.append(f"a shorter sequence than {workload.seq_len}")
        if layout.mbs > 1:
            suggestions.append(f"a smaller micro-batch than {layout.mbs}")
    if 0 < closest.excess_gib <= headroom_gib:  # it fits without the margin
        suggestions.append(f"less headroom than {headroom_gib:g} GiB (--headroom-gib)")
    suggestions.append("optimizer offload")
    if moe and "ep" not in fixed:
        suggestions.append(
            "expert parallelism across nodes (--fix ep=N; by default expert groups stay "
            "inside a node)"
        )
    return (
        f"no layout fits in memory: of {considered} candidates {legal} pass the rules"
        + (f" (removed per rule: {dropped})" if dropped else "")
        + f" and none fits in {closest.capacity_gib:.2f} GiB per GPU"
        + (f" less {headroom_gib:g} GiB headroom" if headroom_gib else "")
        + f". Closest: {layout_label(layout)} needs {closest.peak_gib:.2f} GiB on "
        f"stage {closest.worst_stage}, {closest.excess_gib:.2f} GiB over"
        + (
            " (the model states alone, before any activation, overflow every layout)"
            if states_alone
            else ""
        )
        + ". Would change it: "
        + ", ".join(suggestions)
        + "."
    )


def deadline_message(goal: Objective, fastest: Row, sizes: list[int]) -> str:
    """Layouts fit, but none trains the budget within the deadline."""
    hours = goal.train_hours(fastest)
    return (
        f"no layout trains {goal.token_budget:,.0f} tokens within {goal.deadline_hours:g} h on "
        f"{', '.join(str(s) for s in sizes)} GPUs: the fastest, "
        f"{layout_label(fastest.layout)} on {fastest.cluster.num_gpus} GPUs, "
        f"needs {hours:,.1f} h. Would change it: more GPUs, a later deadline or a smaller "
        f"token budget."
    )
