"""Layers (and the embedding and output layer) to pipeline stages, recomputation per layer.

Minimise the slowest pipeline stage's time per micro-batch under every stage's memory
limit, choosing jointly where the stage boundaries fall and which recompute option each
layer uses. In the steady state of 1F1B the pipeline advances at the pace of its slowest
stage, so this is the critical path per micro-batch (the warm-up and cool-down bubbles,
which also scale with the stage times, are left to the cost model that scores the plan).

Units: time in integer microseconds (``_us``), memory in integer MiB (``_mib``). CP-SAT takes
integers only; the planner rounds its cost model into these units when it builds a problem.

Data
    L layers in order, given as runs j = 0..J-1 of c_j identical layers of kind k(j); run j
    occupies the layer indices [a_j, a_j + c_j), a_j = c_0 + ... + c_{j-1}.
    For kind k and recompute option r = 0..R-1 (0 = none, then e.g. selective, full; the
    solver assumes no order among options): t_{k,r} forward + backward time of one
    micro-batch through one layer, u_{k,r} its activation memory per in-flight micro-batch;
    w_k the layer's static memory on one GPU (weights, gradients, optimizer states).
    p stages s = 0..p-1; f_s >= 1 micro-batches stage s holds at its peak (1F1B:
    min(p - s, m)); M_s its memory capacity.
    E^t_0, E^m_0: embedding time and memory on stage 0; E^m_0 is the embedding's static
    memory plus its activations already multiplied by f_0. E^t_L, E^m_L: output layer and
    loss on stage p-1 (activations likewise already times f_{p-1}). With p = 1 both land on
    stage 0. Write E^t_s, E^m_s for the extras stage s carries (zero on middle stages).
    k_min >= 1: the fewest layers a stage may hold.

Decision variables
    b_s in [0, L], s = 1..p-1     stage boundaries: stage s holds layers [b_s, b_{s+1}),
                                  with b_0 = 0 and b_p = L fixed.
    C_{s,j} in [0, c_j]           layers of run j before boundary s (C_{0,j} = 0, C_{p,j} = c_j).
    n_{s,j} in [0, c_j]           layers of run j on stage s.
    y_{s,j,r} in [0, c_j]         of those, how many use recompute option r.
    z                             the slowest stage's time.

    Identical layers of a run on one stage are interchangeable, so only counts are decided:
    the model has O(p J R) variables whatever L is (domains grow with L, not the model).

Constraints
    (1) b_{s+1} - b_s >= k_min                        ordered, contiguous, none too small.
    (2) C_{s,j} = min(c_j, max(0, b_s - a_j)),         = |[0, b_s) ∩ run j| (one CP-SAT max
        n_{s,j} = C_{s+1,j} - C_{s,j}                  and one min equality per pair);
                                                       n_{s,j} = |[b_s, b_{s+1}) ∩ run j|.
    (3) sum_r y_{s,j,r} = n_{s,j}                      every layer gets exactly one option.
    (4) sum_j w_{k(j)} n_{s,j} + f_s sum_{j,r} u_{k(j),r} y_{s,j,r} + E^m_s <= M_s.
    (5) z >= T_s = sum_{j,r} t_{k(j),r} y_{s,j,r} + E^t_s.
    Optional restrictions, to what Megatron-LM can run (its uneven split only sizes the
    first and last stages; its "block" recomputation recomputes the first N layers of
    every stage, N one number):
    (6) ``uniform_middle``: N_s = N_1 for s = 2..p-2, N_s = sum_j n_{s,j}.
    (7) ``block_option`` r*: a shared N* in [0, L] with sum_j y_{s,j,r*} = min(N*, N_s)
        (``add_min_equality``), and y_{s,j,r} = 0 for r not in {0, r*}: the first N*
        layers of each stage use r*, the rest option 0. Which layers come first matters
        only through their kind, so this needs a single kind of layer (validated).

Objective
    minimise z. (No tie-break: among equally slow plans any is returned.)

Tabulated and pruned
    Nothing is linearised; per-option times and memories are the tabulated data. An option
    r of kind k is dominated when another option r' is no slower and no larger
    (t_{k,r'} <= t_{k,r} and u_{k,r'} <= u_{k,r}; exact duplicates keep the lowest index).
    Swapping a layer from r to r' keeps (4) and (5), so an optimum exists without dominated
    options and their y are fixed to 0: this breaks the symmetry between equal options and
    prunes the search (not under (7), where the counts per option are imposed). A greedy
    plan (even split; fastest option, moved to the most memory-saving option run by run
    until the stage fits) is given as the hint.

Result
    :func:`solve` returns the split, the option counts and each stage's time and memory.
    When nothing fits, ``binding`` says why from the data: too few layers for the stages,
    or a stage whose smallest possible share (k_min layers, every one on its most
    memory-saving option) already exceeds its capacity, and by how many MiB.

The module runs past the house's ~400 lines because the validation of the data and the
explanation of infeasibility belong next to the formulation they check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from ortools.sat.python import cp_model

from solvers._cpsat import Incumbent, SolveOptions, SolveStatus, solve_model


def _check_int(field: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{field} must be at least {minimum}, got {value}")


def _as_tuple(obj: object, field: str) -> None:
    """Store a sequence field as a tuple, so problems stay hashable and immutable."""
    object.__setattr__(obj, field, tuple(getattr(obj, field)))


@dataclass(frozen=True)
class LayerKind:
    """One kind of layer; option r of ``time_us`` and ``activation_mib`` go together."""

    time_us: tuple[int, ...]
    """Forward + backward time of one micro-batch through one layer, per recompute option."""
    activation_mib: tuple[int, ...]
    """Activation memory per in-flight micro-batch, per recompute option."""
    static_mib: int
    """Weights, gradients and optimizer states of one layer on one GPU."""

    def __post_init__(self) -> None:
        _as_tuple(self, "time_us")
        _as_tuple(self, "activation_mib")
        if not self.time_us:
            raise ValueError("time_us needs at least one recompute option")
        if len(self.activation_mib) != len(self.time_us):
            raise ValueError(
                f"activation_mib has {len(self.activation_mib)} options but time_us has "
                f"{len(self.time_us)}: both list the same recompute options"
            )
        for r, value in enumerate(self.time_us):
            _check_int(f"time_us[{r}]", value, 0)
        for r, value in enumerate(self.activation_mib):
            _check_int(f"activation_mib[{r}]", value, 0)
        _check_int("static_mib", self.static_mib, 0)


@dataclass(frozen=True)
class LayerRun:
    """``count`` consecutive identical layers of ``kinds[kind]``."""

    kind: int
    count: int

    def __post_init__(self) -> None:
        _check_int("kind", self.kind, 0)
        _check_int("count", self.count, 1)


@dataclass(frozen=True)
class StagePartitionProblem:
    """The data of the module docstring; see there for every symbol."""

    kinds: tuple[LayerKind, ...]
    runs: tuple[LayerRun, ...]
    stages: int
    inflight: tuple[int, ...]
    capacity_mib: tuple[int, ...]
    first_extra_time_us: int = 0
    first_extra_mib: int = 0
    """Embedding on stage 0: static memory plus activations already times ``inflight[0]``."""
    last_extra_time_us: int = 0
    last_extra_mib: int = 0
    """Output layer and loss on the last stage, activations already times its in-flight count."""
    min_layers_per_stage: int = 1
    uniform_middle: bool = False
    """Constraint (6): every stage but the first and the last holds as many layers."""
    block_option: int | None = None
    """Constraint (7): the first N* layers of every stage use this option, the rest 0."""

    def __post_init__(self) -> None:
        for name in ("kinds", "runs", "inflight", "capacity_mib"):
            _as_tuple(self, name)
        if not self.kinds:
            raise ValueError("kinds needs at least one layer kind")
        options = len(self.kinds[0].time_us)
        for k, kind in enumerate(self.kinds):
            if len(kind.time_us) != options:
                raise ValueError(
                    f"kinds: every kind lists the same recompute options; kinds[0] has "
                    f"{options}, kinds[{k}] has {len(kind.time_us)}"
                )
        if not self.runs:
            raise ValueError("runs needs at least one run of layers")
        for j, run in enumerate(self.runs):
            if run.kind >= len(self.kinds):
                raise ValueError(
                    f"runs[{j}].kind is {run.kind} but there are only {len(self.kinds)} kinds"
                )
        _check_int("stages", self.stages, 1)
        for name in ("inflight", "capacity_mib"):
            values = getattr(self, name)
            if len(values) != self.stages:
                raise ValueError(f"{name} has {len(values)} entries for {self.stages} stages")
        for s, value in enumerate(self.inflight):
            _check_int(f"inflight[{s}]", value, 1)
        for s, value in enumerate(self.capacity_mib):
            _check_int(f"capacity_mib[{s}]", value, 0)
        for name in ("first_extra_time_us", "first_extra_mib", "last_extra_time_us"):
            _check_int(name, getattr(self, name), 0)
        _check_int("last_extra_mib", self.last_extra_mib, 0)
        _check_int("min_layers_per_stage", self.min_layers_per_stage, 1)
        if self.block_option is not None:
            _check_int("block_option", self.block_option, 0)
            if self.block_option >= options:
                raise ValueError(
                    f"block_option is {self.block_option} but there are only {options} options"
                )
            if len({run.kind for run in self.runs}) > 1:
                raise ValueError(
                    "block_option needs a single kind of layer: which layers come first in "
                    "a stage would decide their kinds"
                )

    @property
    def layers(self) -> int:
        return sum(run.count for run in self.runs)

    @property
    def options(self) -> int:
        return len(self.kinds[0].time_us)

    def run_starts(self) -> tuple[int, ...]:
        """a_j: index of the first layer of each run."""
        starts, at = [], 0
        for run in self.runs:
            starts.append(at)
            at += run.count
        return tuple(starts)

    def extra_time_us(self, stage: int) -> int:
        """E^t_s: embedding and output-layer time on ``stage``."""
        first = self.first_extra_time_us if stage == 0 else 0
        return first + (self.last_extra_time_us if stage == self.stages - 1 else 0)

    def extra_mib(self, stage: int) -> int:
        """E^m_s: embedding and output-layer memory on ``stage``."""
        first = self.first_extra_mib if stage == 0 else 0
        return first + (self.last_extra_mib if stage == self.stages - 1 else 0)


@dataclass(frozen=True)
class StagePartitionSolution:
    """What :func:`solve` found; the per-stage tuples are empty when there is no plan."""

    status: SolveStatus
    layers_per_stage: tuple[int, ...]
    recompute_counts: tuple[tuple[tuple[int, ...], ...], ...]
    """stage -> run -> how many of that run's layers on that stage use each option."""
    stage_time_us: tuple[int, ...]
    stage_memory_mib: tuple[int, ...]
    max_stage_time_us: int | None
    wall_s: float
    binding: str | None = None
    """For INFEASIBLE: why nothing fits, with the MiB that are missing."""
    incumbents: tuple[Incumbent, ...] = ()
    block_layers: int | None = None
    """N* of constraint (7) (None without ``block_option``)."""


@dataclass(frozen=True)
class StagePartitionModel:
    """The CP-SAT model of a problem and its variables, keyed as in the module docstring."""

    model: cp_model.CpModel
    boundary: dict[int, cp_model.IntVar]
    """b_s for s = 1..p-1."""
    clipped: dict[tuple[int, int], cp_model.IntVar]
    """(s, j) -> max(0, b_s - a_j), the inner term of constraint (2)."""
    before: dict[tuple[int, int], cp_model.IntVar]
    """(s, j) -> C_{s,j} for s = 1..p-1."""
    on_stage: dict[tuple[int, int], cp_model.IntVar]
    """(s, j) -> n_{s,j}."""
    option_count: dict[tuple[int, int, int], cp_model.IntVar]
    """(s, j, r) -> y_{s,j,r}."""
    slowest: cp_model.IntVar
    """z."""
    block: cp_model.IntVar | None = None
    """N* of constraint (7)."""


def _stage_time_us(problem: StagePartitionProblem, stage: int, counts: Sequence[Sequence]) -> int:
    """T_s of constraint (5) for option counts ``counts[j][r]`` on ``stage``."""
    total = problem.extra_time_us(stage)
    for run, per_option in zip(problem.runs, counts, strict=True):
        times = problem.kinds[run.kind].time_us
        total += sum(t * y for t, y in zip(times, per_option, strict=True))
    return total


def _stage_memory_mib(
    problem: StagePartitionProblem, stage: int, counts: Sequence[Sequence]
) -> int:
    """Left-hand side of constraint (4) for option counts ``counts[j][r]`` on ``stage``."""
    total = problem.extra_mib(stage)
    for run, per_option in zip(problem.runs, counts, strict=True):
        kind = problem.kinds[run.kind]
        total += kind.static_mib * sum(per_option)
        acts = kind.activation_mib
        total += problem.inflight[stage] * sum(u * y for u, y in zip(acts, per_option, strict=True))
    return total


def _useful_options(kind: LayerKind) -> list[int]:
    """Options not dominated by another (see "Tabulated and pruned")."""
    pairs = list(zip(kind.time_us, kind.activation_mib, strict=True))

    def dominated(r: int) -> bool:
        return any(
            pairs[q][0] <= pairs[r][0]
            and pairs[q][1] <= pairs[r][1]
            and (pairs[q] != pairs[r] or q < r)
            for q in range(len(pairs))
            if q != r
        )

    return [r for r in range(len(pairs)) if not dominated(r)]


def build_model(problem: StagePartitionProblem) -> StagePartitionModel:
    """The CP-SAT model of the module docstring, with the greedy plan as its hint."""
    model = cp_model.CpModel()
    p, layers, k_min = problem.stages, problem.layers, problem.min_layers_per_stage
    starts = problem.run_starts()
    runs = range(len(problem.runs))
    boundary = {s: model.new_int_var(0, layers, f"b[{s}]") for s in range(1, p)}
    ends: list[cp_model.LinearExprT] = [0, *boundary.values(), layers]
    for s in range(p):  # (1)
        model.add(ends[s + 1] - ends[s] >= k_min)

    clipped, before = {}, {}
    for s, b in boundary.items():  # (2), C_{s,j}
        for j in runs:
            count = problem.runs[j].count
            clipped[s, j] = model.new_int_var(0, layers, f"clip[{s},{j}]")
            model.add_max_equality(clipped[s, j], [0, b - starts[j]])
            before[s, j] = model.new_int_var(0, count, f"C[{s},{j}]")
            model.add_min_equality(before[s, j], [count, clipped[s, j]])

    def cumulative(s: int, j: int) -> cp_model.LinearExprT:
        return 0 if s == 0 else problem.runs[j].count if s == p else before[s, j]

    on_stage, option_count = {}, {}
    slowest_bound = max(problem.extra_time_us(s) for s in range(p)) + sum(
        run.count * max(problem.kinds[run.kind].time_us) for run in problem.runs
    )
    slowest = model.new_int_var(0, slowest_bound, "z")
    block_option = problem.block_option
    allowed = {0, block_option} if block_option is not None else None
    block = model.new_int_var(0, layers, "N*") if block_option is not None else None
    for s in range(p):
        for j in runs:  # (2), n_{s,j}
            count = problem.runs[j].count
            on_stage[s, j] = model.new_int_var(0, count, f"n[{s},{j}]")
            model.add(on_stage[s, j] == cumulative(s + 1, j) - cumulative(s, j))
            useful = _useful_options(problem.kinds[problem.runs[j].kind])
            for r in range(problem.options):  # dominated options fixed to 0 (docstring)
                keep = r in allowed if allowed is not None else r in useful
                option_count[s, j, r] = model.new_int_var(
                    0, count if keep else 0, f"y[{s},{j},{r}]"
                )
            model.add(  # (3)
                cp_model.LinearExpr.sum([option_count[s, j, r] for r in range(problem.options)])
                == on_stage[s, j]
            )
        counts = [[option_count[s, j, r] for r in range(problem.options)] for j in runs]
        model.add(_stage_memory_mib(problem, s, counts) <= problem.capacity_mib[s])  # (4)
        model.add(slowest >= _stage_time_us(problem, s, counts))  # (5)
        if block is not None and block_option is not None and block_option != 0:  # (7)
            size = model.new_int_var(0, layers, f"N[{s}]")
            model.add(size == cp_model.LinearExpr.sum([on_stage[s, j] for j in runs]))
            first = model.new_int_var(0, layers, f"first[{s}]")
            model.add_min_equality(first, [block, size])
            model.add(
                cp_model.LinearExpr.sum([option_count[s, j, block_option] for j in runs]) == first
            )
    if problem.uniform_middle:  # (6)
        sizes = [cp_model.LinearExpr.sum([on_stage[s, j] for j in runs]) for s in range(p)]
        for s in range(2, p - 1):
            model.add(sizes[s] == sizes[1])
    model.minimize(slowest)

    built = StagePartitionModel(
        model, boundary, clipped, before, on_stage, option_count, slowest, block
    )
    _add_greedy_hint(problem, built)
    return built


def _overlap(lo: int, hi: int, start: int, count: int) -> int:
    """|[lo, hi) ∩ [start, start + count)|."""
    return max(0, min(hi, start + count) - max(lo, start))


def _fastest_and_leanest(kind: LayerKind) -> tuple[int, int]:
    """The quickest option (ties: less memory) and the smallest (ties: less time)."""
    useful = _useful_options(kind)
    fastest = min(useful, key=lambda r: (kind.time_us[r], kind.activation_mib[r]))
    leanest = min(useful, key=lambda r: (kind.activation_mib[r], kind.time_us[r]))
    return fastest, leanest


def _greedy_counts(problem: StagePartitionProblem) -> tuple[list[int], list[list[list[int]]]]:
    """Even split; every layer on its fastest option, then, run by run, as many layers moved
    to the most memory-saving option as the stage needs to fit (it may still not fit)."""
    p, layers = problem.stages, problem.layers
    cuts = [s * layers // p for s in range(p + 1)]
    starts = problem.run_starts()
    plan = []
    for s in range(p):
        counts, choices = [], []
        for run, start in zip(problem.runs, starts, strict=True):
            fastest, leanest = _fastest_and_leanest(problem.kinds[run.kind])
            row = [0] * problem.options
            row[fastest] = _overlap(cuts[s], cuts[s + 1], start, run.count)
            counts.append(row)
            choices.append((run, fastest, leanest))
        excess = _stage_memory_mib(problem, s, counts) - problem.capacity_mib[s]
        for row, (run, fastest, leanest) in zip(counts, choices, strict=True):
            acts = problem.kinds[run.kind].activation_mib
            saving = problem.inflight[s] * (acts[fastest] - acts[leanest])
            if excess <= 0 or saving <= 0:
                continue
            moved = min(row[fastest], -(-excess // saving))
            row[fastest] -= moved
            row[leanest] += moved
            excess -= moved * saving
        plan.append(counts)
    return cuts, plan


def _add_greedy_hint(problem: StagePartitionProblem, built: StagePartitionModel) -> None:
    """Hint every variable with the greedy plan (a complete hint, feasible or not); under
    (6) or (7) only the split, which the greedy plan may not meet."""
    if problem.uniform_middle or problem.block_option is not None:
        return
    cuts, plan = _greedy_counts(problem)
    starts = problem.run_starts()
    model = built.model
    for s, b in built.boundary.items():
        model.add_hint(b, cuts[s])
        for j, run in enumerate(problem.runs):
            clipped = max(0, cuts[s] - starts[j])
            model.add_hint(built.clipped[s, j], clipped)
            model.add_hint(built.before[s, j], min(run.count, clipped))
    for (s, j), n in built.on_stage.items():
        model.add_hint(n, sum(plan[s][j]))
    for (s, j, r), y in built.option_count.items():
        model.add_hint(y, plan[s][j][r])
    slowest = max(_stage_time_us(problem, s, plan[s]) for s in range(problem.stages))
    model.add_hint(built.slowest, slowest)


def _min_stage_memory_mib(problem: StagePartitionProblem) -> tuple[int, ...]:
    """The least memory stage s needs in any split: its cheapest window of k_min layers
    among the positions the other stages leave it, every layer on its most memory-saving
    option, plus its extras. Needs L >= p k_min.

    The window's cost is piecewise linear in its start, with breaks where either end
    crosses a run boundary, so only the range's ends and those breaks are evaluated."""
    p, layers, k = problem.stages, problem.layers, problem.min_layers_per_stage
    starts = problem.run_starts()
    edges = [*starts, layers]
    needs = []
    for s in range(p):
        lo, hi = s * k, layers - (p - s) * k
        per_layer = [
            problem.kinds[run.kind].static_mib
            + problem.inflight[s] * min(problem.kinds[run.kind].activation_mib)
            for run in problem.runs
        ]
        candidates = {lo, hi} | {min(hi, max(lo, e - d)) for e in edges for d in (0, k)}
        needs.append(
            problem.extra_mib(s)
            + min(
                sum(
                    unit * _overlap(a, a + k, start, run.count)
                    for unit, start, run in zip(per_layer, starts, problem.runs, strict=True)
                )
                for a in candidates
            )
        )
    return tuple(needs)


def _explain_infeasible(problem: StagePartitionProblem) -> str:
    """Why no plan exists, in numbers a user can act on."""
    p, layers, k = problem.stages, problem.layers, problem.min_layers_per_stage
    if layers < p * k:
        return (
            f"{layers} layers cannot fill {p} stages of at least {k} layers each "
            f"(min_layers_per_stage): {p} x {k} = {p * k}"
        )
    needs = _min_stage_memory_mib(problem)
    short = [
        f"stage {s} needs at least {need} MiB (its smallest share, {k} layer(s) on the most "
        f"memory-saving recompute option with {problem.inflight[s]} micro-batch(es) in "
        f"flight, plus {problem.extra_mib(s)} MiB of embedding/output layer) but has "
        f"{problem.capacity_mib[s]} MiB: short by {need - problem.capacity_mib[s]} MiB"
        for s, need in enumerate(needs)
        if need > problem.capacity_mib[s]
    ]
    if short:
        return "; ".join(short)
    fewest = min(problem.inflight)
    total_need = sum(
        run.count
        * (
            problem.kinds[run.kind].static_mib
            + fewest * min(problem.kinds[run.kind].activation_mib)
        )
        for run in problem.runs
    )
    room = sum(problem.capacity_mib[s] - problem.extra_mib(s) for s in range(p))
    if total_need > room:
        return (
            f"the {layers} layers need at least {total_need} MiB together (each on its most "
            f"memory-saving recompute option, at the fewest micro-batches in flight, "
            f"{fewest}) but the stages hold {room} MiB beside the embedding and output "
            f"layer: short by {total_need - room} MiB"
        )
    tightest = min(range(p), key=lambda s: problem.capacity_mib[s] - needs[s])
    return (
        f"every stage fits its smallest share alone, but no contiguous split of the "
        f"{layers} layers fits all {p} stages at once; the tightest is stage {tightest} "
        f"(at least {needs[tightest]} MiB of {problem.capacity_mib[tightest]} MiB)"
    )


_DEFAULT_OPTIONS = SolveOptions()


def solve(
    problem: StagePartitionProblem, options: SolveOptions = _DEFAULT_OPTIONS
) -> StagePartitionSolution:
    """The split and recompute options minimising the slowest stage (module docstring)."""
    built = build_model(problem)
    run = solve_model(built.model, options)
    if not run.has_solution:
        binding = _explain_infeasible(problem) if run.status is SolveStatus.INFEASIBLE else None
        return StagePartitionSolution(
            run.status, (), (), (), (), None, run.wall_s, binding, run.incumbents
        )
    value = run.solver.value
    cuts = [0, *(value(b) for b in built.boundary.values()), problem.layers]
    counts = tuple(
        tuple(
            tuple(value(built.option_count[s, j, r]) for r in range(problem.options))
            for j in range(len(problem.runs))
        )
        for s in range(problem.stages)
    )
    times = tuple(_stage_time_us(problem, s, counts[s]) for s in range(problem.stages))
    return StagePartitionSolution(
        status=run.status,
        layers_per_stage=tuple(b - a for a, b in pairwise(cuts)),
        recompute_counts=counts,
        stage_time_us=times,
        stage_memory_mib=tuple(
            _stage_memory_mib(problem, s, counts[s]) for s in range(problem.stages)
        ),
        max_stage_time_us=max(times),
        wall_s=run.wall_s,
        incumbents=run.incumbents,
        block_layers=value(built.block) if built.block is not None else None,
    )
