"""solvers.degrees: a hand-solved instance, brute-force agreement, binding, validation."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solvers._cpsat import SolveOptions, SolveStatus
from solvers.degrees import (
    HINT_SCAN_LIMIT,
    AllowedTable,
    Axis,
    CostFactor,
    DegreesProblem,
    ProductConstraint,
    _greedy_hint,
    solve,
)
from solvers.reference_degrees import degrees_brute_force

FAST = SolveOptions(time_limit_s=5.0, workers=1)

POWERS = (1, 2, 4, 8)


def _world8(top_k: int = 1) -> DegreesProblem:
    """World of 8 GPUs, tp·dp = 8, a model with 4 heads (heads % tp == 0 forbids tp = 8).

    Cost per step in microseconds, tabulated for all 16 (tp, dp) pairs:
        compute 1600 / tp + tensor-parallel collectives 60·(tp - 1) + gradient all-reduce 100·dp.
    The four pairs that meet tp·dp = 8:
        (1, 8): 1600 +   0 + 800 = 2400
        (2, 4):  800 +  60 + 400 = 1260
        (4, 2):  400 + 180 + 200 =  780
        (8, 1):  200 + 420 + 100 =  720   <- cheapest, but 4 heads % 8 != 0
    so the optimum is tp = 4, dp = 2 at 780, then (2, 4) at 1260, then (1, 8) at 2400.
    """
    tp, dp = Axis("tp", POWERS), Axis("dp", POWERS)
    heads = 4
    return DegreesProblem(
        axes=(tp, dp),
        products=(ProductConstraint(("tp", "dp"), 8),),
        tables=(AllowedTable(("tp",), tuple((t,) for t in POWERS if heads % t == 0)),),
        factors=(
            CostFactor(
                ("tp", "dp"),
                {(t, d): 1600 // t + 60 * (t - 1) + 100 * d for t in POWERS for d in POWERS},
            ),
        ),
        top_k=top_k,
    )


def test_hand_solved_world_of_eight() -> None:
    solution = solve(_world8(), FAST)
    assert solution.status is SolveStatus.OPTIMAL
    assert solution.assignments == ({"tp": 4, "dp": 2},)
    assert solution.objectives == (780,)
    assert solution.binding is None
    assert solution.incumbents and solution.incumbents[-1].objective == 780


def test_hand_solved_top_k_ranks_and_runs_out() -> None:
    solution = solve(_world8(top_k=5), FAST)
    assert solution.status is SolveStatus.OPTIMAL  # only three assignments exist: complete
    assert solution.assignments == (
        {"tp": 4, "dp": 2},
        {"tp": 2, "dp": 4},
        {"tp": 1, "dp": 8},
    )
    assert solution.objectives == (780, 1260, 2400)


def test_dropping_the_heads_table_lets_tp_eight_win() -> None:
    solution = solve(replace(_world8(), tables=()), FAST)
    assert solution.assignments == ({"tp": 8, "dp": 1},)
    assert solution.objectives == (720,)


# --- random instances against brute force ------------------------------------------------


@st.composite
def problems(draw: st.DrawFn) -> DegreesProblem:
    axes = []
    for i in range(draw(st.integers(2, 4))):
        values = draw(st.lists(st.sampled_from((0, 1, 2, 3, 4, 6, 8)), min_size=1, max_size=4))
        axes.append(Axis(f"a{i}", tuple(dict.fromkeys(values))))
    names = [a.name for a in axes]
    values_of = {a.name: a.values for a in axes}

    def subset(most: int) -> tuple[str, ...]:
        size = draw(st.integers(1, min(most, len(names))))
        return tuple(draw(st.permutations(names))[:size])

    products = []
    if draw(st.booleans()):
        on = subset(len(names))
        others = [n for n in names if n not in on]
        if others and draw(st.integers(0, 2)) == 0:  # the product equals another axis
            products.append(ProductConstraint(on, equals_axis=draw(st.sampled_from(others))))
        elif draw(st.integers(0, 4)):  # mostly reachable: the product of drawn values
            equals = math.prod(draw(st.sampled_from(values_of[n])) for n in on)
            products.append(ProductConstraint(on, equals))
        else:
            products.append(ProductConstraint(on, draw(st.integers(0, 64))))
    tables = []
    for _ in range(draw(st.integers(0, 2))):
        on = subset(2)
        combos = list(itertools.product(*(values_of[n] for n in on)))
        keep = draw(st.lists(st.integers(0, 3), min_size=len(combos), max_size=len(combos)))
        tables.append(AllowedTable(on, tuple(c for c, k in zip(combos, keep, strict=True) if k)))
    factors = []
    for _ in range(draw(st.integers(1, 3))):
        on = subset(3)
        costs = {}
        for combo in itertools.product(*(values_of[n] for n in on)):
            if draw(st.integers(0, 6)):  # about one combination in seven is missing
                costs[combo] = draw(st.integers(0, 50))
        factors.append(CostFactor(on, costs))
    return DegreesProblem(
        axes=tuple(axes),
        products=tuple(products),
        tables=tuple(tables),
        factors=tuple(factors),
        top_k=draw(st.integers(1, 4)),
    )


def _violations(problem: DegreesProblem, chosen: dict[str, int]) -> list[str]:
    """Recheck an assignment against the data, independently of solver and reference."""
    found = [f"axis {a.name}" for a in problem.axes if chosen.get(a.name) not in a.values]
    if set(chosen) != {a.name for a in problem.axes}:
        found.append("axis names")
    if found:
        return found
    for p, product in enumerate(problem.products):
        target = chosen[product.equals_axis] if product.equals_axis else product.equals
        if math.prod(chosen[n] for n in product.axes) != target:
            found.append(f"products[{p}]")
    for t, table in enumerate(problem.tables):
        if tuple(chosen[n] for n in table.axes) not in table.rows:
            found.append(f"tables[{t}]")
    for f, factor in enumerate(problem.factors):
        if tuple(chosen[n] for n in factor.axes) not in factor.costs:
            found.append(f"factors[{f}]")
    return found


def _objective(problem: DegreesProblem, chosen: dict[str, int]) -> int:
    return sum(f.costs[tuple(chosen[n] for n in f.axes)] for f in problem.factors)


def _only(problem: DegreesProblem, fields: set[str]) -> DegreesProblem:
    """The problem with only the named constraint groups; other factors fully tabulated."""
    values_of = {a.name: a.values for a in problem.axes}
    factors = []
    for f, factor in enumerate(problem.factors):
        if f"factors[{f}]" in fields:
            factors.append(factor)
        else:
            combos = itertools.product(*(values_of[n] for n in factor.axes))
            factors.append(CostFactor(factor.axes, dict.fromkeys(combos, 0)))
    return replace(
        problem,
        products=tuple(p for i, p in enumerate(problem.products) if f"products[{i}]" in fields),
        tables=tuple(t for i, t in enumerate(problem.tables) if f"tables[{i}]" in fields),
        factors=tuple(factors),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_random_instances_match_brute_force(problem: DegreesProblem) -> None:
    expected = degrees_brute_force(problem)
    solution = solve(problem, FAST)
    hint = _greedy_hint(problem)  # small instances: always scanned, so found iff feasible
    assert (hint is None) == (not expected)
    assert hint is None or _violations(problem, hint) == []
    if not expected:
        assert solution.status is SolveStatus.INFEASIBLE
        assert solution.assignments == () and solution.binding
        # The named culprit is minimal: infeasible on its own, feasible less any member.
        culprit = set(solution.binding_fields)
        assert culprit and not degrees_brute_force(_only(problem, culprit))
        for member in culprit:
            assert degrees_brute_force(_only(problem, culprit - {member}))
        return
    assert solution.status is SolveStatus.OPTIMAL
    k = min(problem.top_k, len(expected))
    assert len(solution.assignments) == len(solution.objectives) == k
    assert len({tuple(sorted(a.items())) for a in solution.assignments}) == k
    for chosen, objective in zip(solution.assignments, solution.objectives, strict=True):
        assert _violations(problem, chosen) == []
        assert _objective(problem, chosen) == objective
    assert solution.objectives[0] == expected[0][0]
    assert list(solution.objectives) == sorted(solution.objectives)
    assert Counter(solution.objectives) == Counter(obj for obj, _ in expected[:k])


# --- larger instance: no hint, chained product -------------------------------------------


def _six_axes() -> DegreesProblem:
    """6 axes x 5 values (15,625 combinations, past the hint scan), 3 factors, 1 product."""
    values = (1, 2, 4, 8, 16)
    axes = (
        *(Axis(n, values) for n in ("tp", "cp", "dp", "pp")),
        Axis("mbs", (1, 2, 3, 4, 5)),
        Axis("recompute", (0, 1, 2, 3, 4)),
    )
    compute = {
        (t, c, m, r): 100_000 // (t * c) * m + 3_000 * t + 2_000 * c + 9_000 // m + 4_000 * r
        for t in values
        for c in values
        for m in range(1, 6)
        for r in range(5)
    }
    memory_ok = {  # a tabulated memory limit: drop combinations over budget
        key: 0 for key in compute if 64 * key[2] * (5 - key[3]) // (key[0] * key[1]) <= 96
    }
    pipeline = {
        (p, d, m): 7_000 * p // m + 500 * d
        for p in values
        for d in values
        for m in range(1, 6)
        if p == 1 or (p * m) % 2 == 0  # untabulated: odd micro-batch counts on pp > 1
    }
    return DegreesProblem(
        axes=axes,
        products=(ProductConstraint(("tp", "cp", "dp", "pp"), 64),),
        tables=(
            AllowedTable(("pp", "recompute"), tuple((p, r) for p in values for r in (0, 1, 2))),
        ),
        factors=(
            CostFactor(("tp", "cp", "mbs", "recompute"), compute),
            CostFactor(("tp", "cp", "mbs", "recompute"), memory_ok),
            CostFactor(("pp", "dp", "mbs"), pipeline),
        ),
        top_k=3,
    )


def test_six_axes_match_brute_force_without_a_hint() -> None:
    problem = _six_axes()
    assert math.prod(len(a.values) for a in problem.axes) >= HINT_SCAN_LIMIT
    expected = degrees_brute_force(problem)
    solution = solve(problem, SolveOptions(time_limit_s=10.0, workers=2))
    assert solution.status is SolveStatus.OPTIMAL
    assert list(solution.objectives) == [obj for obj, _ in expected[:3]]
    for chosen in solution.assignments:
        assert _violations(problem, chosen) == []


# --- which constraint binds ----------------------------------------------------------------


def test_binding_names_an_unreachable_product() -> None:
    problem = replace(_world8(), products=(ProductConstraint(("tp", "dp"), 7),))
    solution = solve(problem, FAST)
    assert solution.status is SolveStatus.INFEASIBLE
    assert solution.binding_fields == ("products[0]",)
    assert "products[0]" in solution.binding and "tp·dp = 7" in solution.binding
    assert "alone" in solution.binding


def test_binding_names_product_and_table_together() -> None:
    # tp·dp = 8 alone is fine, and so is tp ∈ {8}·dp ∈ {8}; together nothing multiplies to 8.
    problem = replace(
        _world8(),
        tables=(
            AllowedTable(("tp",), ((1,), (2,), (4,))),
            AllowedTable(("tp", "dp"), ((8, 8), (1, 1))),
        ),
    )
    solution = solve(problem, FAST)
    assert solution.status is SolveStatus.INFEASIBLE
    assert set(solution.binding_fields) == {"products[0]", "tables[1]"}
    assert "together" in solution.binding


def test_binding_names_missing_factor_combinations() -> None:
    tp, dp = Axis("tp", POWERS), Axis("dp", POWERS)
    problem = DegreesProblem(
        axes=(tp, dp),
        products=(ProductConstraint(("tp", "dp"), 8),),
        factors=(CostFactor(("tp",), {(1,): 5}), CostFactor(("dp",), {(1,): 3})),
    )
    solution = solve(problem, FAST)
    assert solution.status is SolveStatus.INFEASIBLE
    assert set(solution.binding_fields) == {"products[0]", "factors[0]", "factors[1]"}


def test_binding_names_an_empty_table() -> None:
    problem = replace(_world8(), tables=(AllowedTable(("tp", "dp"), ()),))
    solution = solve(problem, FAST)
    assert solution.binding_fields == ("tables[0]",)


# --- validation ----------------------------------------------------------------------------


def _problem(**changes: object) -> DegreesProblem:
    base = {
        "axes": (Axis("tp", (1, 2)), Axis("dp", (1, 2))),
        "products": (ProductConstraint(("tp", "dp"), 2),),
        "tables": (AllowedTable(("tp",), ((1,), (2,))),),
        "factors": (CostFactor(("tp",), {(1,): 1, (2,): 2}),),
    }
    return DegreesProblem(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: _problem(axes=(Axis("tp", (1, 2)), Axis("tp", (1,)))), "DegreesProblem.axes"),
        (lambda: _problem(axes=()), "DegreesProblem.axes"),
        (lambda: _problem(products=(ProductConstraint(("tp", "pp"), 2),)), "products[0].axes"),
        (lambda: _problem(tables=(AllowedTable(("cp",), ((1,),)),)), "tables[0].axes"),
        (lambda: _problem(tables=(AllowedTable(("tp",), ((3,),)),)), "tables[0].rows[0]"),
        (lambda: _problem(factors=(CostFactor(("xx",), {(1,): 0}),)), "factors[0].axes"),
        (lambda: _problem(factors=(CostFactor(("tp",), {(5,): 0}),)), "factors[0].costs"),
        (lambda: _problem(top_k=0), "DegreesProblem.top_k"),
        (lambda: Axis("tp", ()), "Axis(tp).values"),
        (lambda: Axis("tp", (2, 2)), "Axis(tp).values"),
        (lambda: Axis("tp", (1.5,)), "Axis(tp).values"),
        (lambda: ProductConstraint(("tp", "tp"), 4), "ProductConstraint.axes"),
        (lambda: ProductConstraint(("tp",), 4.0), "ProductConstraint.equals"),
        (lambda: AllowedTable(("tp", "dp"), ((1,),)), "AllowedTable.rows[0]"),
        (lambda: CostFactor(("tp", "dp"), {(1,): 3}), "CostFactor.costs"),
        (lambda: CostFactor(("tp",), {(1,): -3}), "CostFactor.costs[(1,)]"),
        (lambda: CostFactor(("tp",), {(1,): 2.5}), "CostFactor.costs[(1,)]"),
        (lambda: ProductConstraint(("tp", "dp"), equals_axis="tp"), "equals_axis"),
        (
            lambda: _problem(products=(ProductConstraint(("tp",), equals_axis="gpus"),)),
            "products[0].equals_axis",
        ),
        (lambda: _problem(hint={"tp": 1}), "DegreesProblem.hint"),
        (lambda: _problem(hint={"tp": 3, "dp": 1}), "DegreesProblem.hint"),
    ],
)
def test_validation_names_the_field(make: object, field: str) -> None:
    with pytest.raises(ValueError) as raised:
        make()  # type: ignore[operator]
    assert field in str(raised.value)


def test_problem_and_factor_costs_are_read_only() -> None:
    problem = _world8()
    with pytest.raises(TypeError):
        problem.factors[0].costs[(1, 1)] = 0  # type: ignore[index]


# --- the planner's shape: one factor over every axis, a product equal to an axis ---------


@st.composite
def planner_like(draw: st.DrawFn) -> DegreesProblem:
    """Rows of (gpus, tp, dp) with tp·dp = gpus, one cost each (ties allowed), top-k."""
    rows = {}
    for gpus in draw(st.lists(st.sampled_from((1, 2, 4, 8)), min_size=1, max_size=3)):
        for tp in (1, 2, 4, 8):
            if gpus % tp == 0 and draw(st.integers(0, 3)):
                rows[(gpus, tp, gpus // tp)] = draw(st.integers(0, 12))
    rows = rows or {(1, 1, 1): 0}
    axes = tuple(
        Axis(name, tuple(sorted({key[j] for key in rows})))
        for j, name in enumerate(("gpus", "tp", "dp"))
    )
    hint = dict(zip(("gpus", "tp", "dp"), min(rows, key=rows.__getitem__), strict=True))
    return DegreesProblem(
        axes=axes,
        products=(ProductConstraint(("tp", "dp"), equals_axis="gpus"),),
        factors=(CostFactor(("gpus", "tp", "dp"), rows),),
        top_k=draw(st.integers(1, 6)),
        hint=hint if draw(st.booleans()) else None,
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(planner_like())
def test_planner_shaped_instances_match_brute_force(problem: DegreesProblem) -> None:
    expected = degrees_brute_force(problem)
    solution = solve(problem, FAST)
    assert solution.status is SolveStatus.OPTIMAL
    k = min(problem.top_k, len(expected))
    assert list(solution.objectives) == [objective for objective, _ in expected[:k]]
    assert len({tuple(sorted(a.items())) for a in solution.assignments}) == k
    for chosen, objective in zip(solution.assignments, solution.objectives, strict=True):
        assert _violations(problem, chosen) == []
        assert _objective(problem, chosen) == objective
