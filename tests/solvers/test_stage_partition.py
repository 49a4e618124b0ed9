"""Stage partition with recomputation: a hand-solved instance, the brute force on random
small instances, the model's size against the layer count, and validation messages."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from solvers._cpsat import SolveOptions, SolveStatus
from solvers.reference import stage_partition_brute_force
from solvers.stage_partition import (
    LayerKind,
    LayerRun,
    StagePartitionProblem,
    StagePartitionSolution,
    build_model,
    solve,
)

OPTIONS = SolveOptions(time_limit_s=10.0, workers=1)

# One kind: no recompute takes 10 us and keeps 4 MiB per micro-batch; full recompute
# takes 13 us and keeps 1 MiB; 2 MiB of weights and optimizer state per layer.
LAYER = LayerKind(time_us=(10, 13), activation_mib=(4, 1), static_mib=2)


def _hand_problem(capacity_mib: tuple[int, ...]) -> StagePartitionProblem:
    """6 identical layers, 3 stages under 1F1B (3, 2, 1 micro-batches in flight)."""
    return StagePartitionProblem(
        kinds=(LAYER,),
        runs=(LayerRun(kind=0, count=6),),
        stages=3,
        inflight=(3, 2, 1),
        capacity_mib=capacity_mib,
    )


def test_hand_solved_instance_recomputes_one_layer_on_the_tight_first_stage() -> None:
    # Capacities 20, 100, 100 MiB. Stage 0 (3 in flight) with x layers, y of them on full
    # recompute, needs 2x + 3 (4 (x - y) + y) MiB:
    #   x = 1: 14 MiB without recompute, fits, 10 us;
    #   x = 2: y = 0 -> 28 MiB (too much), y = 1 -> 19 MiB (fits, 23 us), y = 2 -> 26 us;
    #   x >= 3: at least 30 us.
    # Stages 1 and 2 have room for anything, so their time is 10 us per layer.
    #   x = 1 leaves 5 layers to two stages: one holds >= 3, i.e. >= 30 us;
    #   x = 2 leaves 4: the split 2 + 2 gives 20 us each, and the plan's slowest is 23 us;
    #   every split has a stage with >= 2 layers (>= 20 us), and < 23 us would need stage
    #   0 to hold 2 layers without recompute (28 MiB > 20) or 1 layer (>= 30 us elsewhere).
    # Optimum: 23 us with layers (2, 2, 2), stage 0 running one of its two layers recomputed.
    problem = _hand_problem((20, 100, 100))
    solution = solve(problem, OPTIONS)
    assert solution.status is SolveStatus.OPTIMAL
    assert solution.max_stage_time_us == 23
    assert solution.layers_per_stage == (2, 2, 2)
    assert solution.recompute_counts[0] == ((1, 1),)
    assert solution.stage_time_us[0] == 23
    assert solution.stage_memory_mib[0] == 19
    assert stage_partition_brute_force(problem) == 23


def test_single_stage_carries_the_embedding_and_the_output_layer() -> None:
    # One stage, 1 in flight: 2 layers without recompute = 2 * 10 us + 5 us embedding
    # + 7 us output layer = 32 us; memory 2 * (2 + 4) + 3 + 4 = 19 MiB, which fits in 19.
    problem = StagePartitionProblem(
        kinds=(LAYER,),
        runs=(LayerRun(kind=0, count=2),),
        stages=1,
        inflight=(1,),
        capacity_mib=(19,),
        first_extra_time_us=5,
        first_extra_mib=3,
        last_extra_time_us=7,
        last_extra_mib=4,
    )
    solution = solve(problem, OPTIONS)
    assert (solution.max_stage_time_us, solution.stage_memory_mib) == (32, (19,))
    assert solution.recompute_counts == (((2, 0),),)


def test_infeasible_names_the_stage_that_cannot_fit_and_the_missing_mib() -> None:
    # Stage 0's smallest share is one layer on full recompute: 2 + 3 * 1 = 5 MiB > 4 MiB.
    solution = solve(_hand_problem((4, 100, 100)), OPTIONS)
    assert solution.status is SolveStatus.INFEASIBLE
    assert solution.layers_per_stage == () and solution.max_stage_time_us is None
    assert solution.binding is not None
    assert "stage 0 needs at least 5 MiB" in solution.binding
    assert "short by 1 MiB" in solution.binding
    assert "stage 1" not in solution.binding


def test_infeasible_when_each_stage_fits_alone_but_not_all_together() -> None:
    # 4 layers on 2 stages of 5 MiB with 1 in flight: a layer needs at least 2 + 1 = 3 MiB,
    # so each stage fits one layer but the four need 12 MiB of the 10 there are.
    problem = StagePartitionProblem(
        kinds=(LAYER,),
        runs=(LayerRun(kind=0, count=4),),
        stages=2,
        inflight=(1, 1),
        capacity_mib=(5, 5),
    )
    solution = solve(problem, OPTIONS)
    assert solution.status is SolveStatus.INFEASIBLE
    assert solution.binding is not None and "short by 2 MiB" in solution.binding


def test_infeasible_when_there_are_fewer_layers_than_stages_need() -> None:
    solution = solve(
        StagePartitionProblem(
            kinds=(LAYER,),
            runs=(LayerRun(kind=0, count=2),),
            stages=3,
            inflight=(1, 1, 1),
            capacity_mib=(100, 100, 100),
        ),
        OPTIONS,
    )
    assert solution.status is SolveStatus.INFEASIBLE
    assert solution.binding is not None and "2 layers cannot fill 3 stages" in solution.binding


# --- random small instances against the brute force -------------------------------------


@st.composite
def small_problems(draw: st.DrawFn) -> StagePartitionProblem:
    options = draw(st.integers(1, 3))
    per_option = st.lists(st.integers(0, 12), min_size=options, max_size=options)
    kinds = tuple(
        LayerKind(
            time_us=tuple(draw(per_option)),
            activation_mib=tuple(draw(per_option)),
            static_mib=draw(st.integers(0, 5)),
        )
        for _ in range(draw(st.integers(1, 3)))
    )
    layers = draw(st.integers(2, 8))
    runs_wanted = draw(st.integers(1, min(3, layers)))
    inner = draw(
        st.lists(
            st.integers(1, layers - 1),
            min_size=runs_wanted - 1,
            max_size=runs_wanted - 1,
            unique=True,
        )
    )
    cuts = [0, *sorted(inner), layers]
    runs = tuple(
        LayerRun(kind=draw(st.integers(0, len(kinds) - 1)), count=b - a) for a, b in pairwise(cuts)
    )
    stages = draw(st.integers(1, 3))
    return StagePartitionProblem(
        kinds=kinds,
        runs=runs,
        stages=stages,
        inflight=tuple(draw(st.integers(1, 3)) for _ in range(stages)),
        capacity_mib=tuple(draw(st.integers(0, 250)) for _ in range(stages)),
        first_extra_time_us=draw(st.integers(0, 10)),
        first_extra_mib=draw(st.integers(0, 8)),
        last_extra_time_us=draw(st.integers(0, 10)),
        last_extra_mib=draw(st.integers(0, 8)),
        min_layers_per_stage=draw(st.integers(1, 2)),
    )


def _check_plan(problem: StagePartitionProblem, solution: StagePartitionSolution) -> None:
    """Every constraint of the formulation, rechecked layer by layer from the data."""
    p = problem.stages
    layer_runs = [j for j, run in enumerate(problem.runs) for _ in range(run.count)]
    assert len(solution.layers_per_stage) == p
    assert sum(solution.layers_per_stage) == len(layer_runs)
    assert min(solution.layers_per_stage) >= problem.min_layers_per_stage
    start, times = 0, []
    for s, size in enumerate(solution.layers_per_stage):
        window = layer_runs[start : start + size]
        start += size
        time_us = problem.first_extra_time_us * (s == 0) + problem.last_extra_time_us * (s == p - 1)
        mib = problem.first_extra_mib * (s == 0) + problem.last_extra_mib * (s == p - 1)
        for j, run in enumerate(problem.runs):
            counts = solution.recompute_counts[s][j]
            assert len(counts) == problem.options and min(counts) >= 0
            assert sum(counts) == window.count(j)
            kind = problem.kinds[run.kind]
            mib += kind.static_mib * window.count(j)
            for r, y in enumerate(counts):
                time_us += kind.time_us[r] * y
                mib += problem.inflight[s] * kind.activation_mib[r] * y
        assert mib <= problem.capacity_mib[s]
        assert solution.stage_memory_mib[s] == mib
        assert solution.stage_time_us[s] == time_us
        times.append(time_us)
    assert solution.max_stage_time_us == max(times)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(small_problems())
def test_solver_matches_brute_force_on_small_instances(problem: StagePartitionProblem) -> None:
    expected = stage_partition_brute_force(problem)
    solution = solve(problem, OPTIONS)
    event("infeasible" if expected is None else "feasible")  # see --hypothesis-show-statistics
    if expected is None:
        assert solution.status is SolveStatus.INFEASIBLE
        assert solution.binding
    else:
        assert solution.status is SolveStatus.OPTIMAL
        assert solution.max_stage_time_us == expected
        _check_plan(problem, solution)


# --- the model's size does not grow with the layer count ---------------------------------


def _one_run(layers: int, stages: int = 4) -> StagePartitionProblem:
    return StagePartitionProblem(
        kinds=(LayerKind(time_us=(100, 130, 140), activation_mib=(40, 15, 2), static_mib=30),),
        runs=(LayerRun(kind=0, count=layers),),
        stages=stages,
        inflight=tuple(range(stages, 0, -1)),
        capacity_mib=(80 * layers,) * stages,
        first_extra_mib=500,
        last_extra_time_us=300,
    )


def test_model_size_does_not_grow_with_the_layer_count() -> None:
    small, large = build_model(_one_run(10)).model, build_model(_one_run(10_000)).model
    assert len(small.proto.variables) == len(large.proto.variables)
    assert len(small.proto.constraints) == len(large.proto.constraints)


def test_ten_thousand_layers_solve_like_ten() -> None:
    solution = solve(_one_run(10_000), OPTIONS)
    assert solution.status is SolveStatus.OPTIMAL
    assert sum(solution.layers_per_stage) == 10_000
    _check_plan(_one_run(10_000), solution)


# --- validation ----------------------------------------------------------------------------


def _problem(**changes: object) -> StagePartitionProblem:
    fields: dict[str, object] = {
        "kinds": (LAYER,),
        "runs": (LayerRun(kind=0, count=4),),
        "stages": 2,
        "inflight": (2, 1),
        "capacity_mib": (100, 100),
    }
    return StagePartitionProblem(**(fields | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: LayerKind(time_us=(), activation_mib=(), static_mib=0), "time_us"),
        (lambda: LayerKind(time_us=(1, 2), activation_mib=(1,), static_mib=0), "activation_mib"),
        (lambda: LayerKind(time_us=(1, -2), activation_mib=(1, 1), static_mib=0), "time_us[1]"),
        (lambda: LayerKind(time_us=(1,), activation_mib=(1.5,), static_mib=0), "activation_mib"),
        (lambda: LayerKind(time_us=(1,), activation_mib=(1,), static_mib=-1), "static_mib"),
        (lambda: LayerRun(kind=0, count=0), "count"),
        (lambda: LayerRun(kind=-1, count=1), "kind"),
        (lambda: _problem(kinds=()), "kinds"),
        (
            lambda: _problem(kinds=(LAYER, LayerKind((1,), (1,), 0))),
            "kinds",
        ),
        (lambda: _problem(runs=()), "runs"),
        (lambda: _problem(runs=(LayerRun(kind=1, count=2),)), "runs[0].kind"),
        (lambda: _problem(stages=0, inflight=(), capacity_mib=()), "stages"),
        (lambda: _problem(inflight=(1,)), "inflight"),
        (lambda: _problem(inflight=(1, 0)), "inflight[1]"),
        (lambda: _problem(capacity_mib=(100,)), "capacity_mib"),
        (lambda: _problem(capacity_mib=(100, -1)), "capacity_mib[1]"),
        (lambda: _problem(first_extra_mib=-1), "first_extra_mib"),
        (lambda: _problem(last_extra_time_us=True), "last_extra_time_us"),
        (lambda: _problem(min_layers_per_stage=0), "min_layers_per_stage"),
    ],
)
def test_validation_errors_name_the_field(build: Callable[[], object], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        build()


# --- Megatron's restrictions: equal middle stages, block recomputation -----------------


@st.composite
def megatron_problems(draw: st.DrawFn) -> StagePartitionProblem:
    """One kind of layer (block recomputation needs it), 2-4 stages, up to 10 layers."""
    options = draw(st.integers(2, 3))
    per_option = st.lists(st.integers(0, 12), min_size=options, max_size=options)
    kind = LayerKind(
        time_us=tuple(draw(per_option)),
        activation_mib=tuple(draw(per_option)),
        static_mib=draw(st.integers(0, 5)),
    )
    stages = draw(st.integers(2, 4))
    layers = draw(st.integers(stages, 10))
    block = draw(st.one_of(st.none(), st.integers(1, options - 1)))
    return StagePartitionProblem(
        kinds=(kind,),
        runs=(LayerRun(kind=0, count=layers),),
        stages=stages,
        inflight=tuple(draw(st.integers(1, 3)) for _ in range(stages)),
        capacity_mib=tuple(draw(st.integers(0, 250)) for _ in range(stages)),
        first_extra_time_us=draw(st.integers(0, 10)),
        first_extra_mib=draw(st.integers(0, 8)),
        last_extra_time_us=draw(st.integers(0, 10)),
        last_extra_mib=draw(st.integers(0, 8)),
        uniform_middle=draw(st.booleans()),
        block_option=block,
    )


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(megatron_problems())
def test_restricted_solver_matches_brute_force(problem: StagePartitionProblem) -> None:
    expected = stage_partition_brute_force(problem)
    solution = solve(problem, OPTIONS)
    event("infeasible" if expected is None else "feasible")
    if expected is None:
        assert solution.status is SolveStatus.INFEASIBLE
        return
    assert solution.status is SolveStatus.OPTIMAL
    assert solution.max_stage_time_us == expected
    _check_plan(problem, solution)
    sizes = solution.layers_per_stage
    if problem.uniform_middle:
        assert len(set(sizes[1:-1])) <= 1
    if problem.block_option is not None:
        block = solution.block_layers
        assert block is not None
        for s, size in enumerate(sizes):
            counts = solution.recompute_counts[s][0]
            assert counts[problem.block_option] == min(block, size)
            assert sum(counts) - counts[0] - counts[problem.block_option] == 0


def test_block_option_needs_one_kind_of_layer() -> None:
    kind = LayerKind(time_us=(10, 13), activation_mib=(4, 1), static_mib=2)
    with pytest.raises(ValueError, match="block_option needs a single kind"):
        StagePartitionProblem(
            kinds=(kind, kind),
            runs=(LayerRun(kind=0, count=2), LayerRun(kind=1, count=2)),
            stages=2,
            inflight=(2, 1),
            capacity_mib=(100, 100),
            block_option=1,
        )


def test_hand_solved_block_recompute_shares_one_count() -> None:
    # 6 layers, 3 stages (3, 2, 1 in flight), capacities 20, 100, 100 MiB, no extras; the
    # kind of the hand-solved instance above. With "block" recomputation every stage
    # recomputes its first N* layers. Split (2, 2, 2): stage 0 needs N* >= 1 (28 MiB
    # without), so N* = 1 gives 23 us on every stage (13 + 10): the slowest is 23 us, as
    # without the restriction, since every stage has room for one recomputed layer.
    problem = StagePartitionProblem(
        kinds=(LAYER,),
        runs=(LayerRun(kind=0, count=6),),
        stages=3,
        inflight=(3, 2, 1),
        capacity_mib=(20, 100, 100),
        uniform_middle=True,
        block_option=1,
    )
    solution = solve(problem, OPTIONS)
    assert solution.status is SolveStatus.OPTIMAL
    assert solution.max_stage_time_us == 23
    assert solution.layers_per_stage == (2, 2, 2)
    assert solution.block_layers == 1
    assert solution.stage_time_us == (23, 23, 23)
