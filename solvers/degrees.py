"""Layout degrees: choose every layout knob jointly over tabulated cost factors (CP-SAT).

The planner describes the layout space as data; this module knows an axis only by its
name and candidate values, never what "tp" or "recompute" means.

Data (all integers; costs in whatever unit the caller scaled them to, e.g. microseconds)
    A = axes, ordered; axis a has distinct candidate values V_a = (v_a0, ..., v_a(n_a - 1)).
    P = product constraints (S_p ⊆ A, E_p): the chosen values of S_p multiply to E_p
        (world size = tp·cp·dp·pp), where E_p is a constant or the chosen value of another
        axis g_p ∉ S_p (the GPU count, when the cluster size is itself a decision).
    T = allowed tables (S_t ⊆ A, R_t): only the value tuples R_t of S_t are legal
        (divisibility rules, memory feasibility tabulated per combination).
    F = cost factors (S_f ⊆ A, c_f): c_f maps a value tuple of S_f to a cost >= 0; a tuple
        missing from c_f is forbidden.

Decision variables
    x_a ∈ V_a            the chosen value of axis a (an integer variable with that domain).
    y_f                  the cost of factor f at the chosen assignment.
    q_p,j                partial products of product constraint p (only for |S_p| > 2).

Constraints
    (1) Π_{a ∈ S_p} x_a = E_p for every product p: ``add_multiplication_equality`` chained
        through partial products q_p,1 = x_a1·x_a2, q_p,j = q_p,j-1·x_aj+1, E_p = q·x_last.
        Each q's domain is the set of products reachable from the first axes' values; when
        every value and E_p are positive it is further cut to the divisors of E_p (the
        remaining factors are positive integers, so the partial product must divide E_p).
        An allowed-assignments table of all tuples whose product is E_p would need up to
        Π n_a rows per constraint; the chain needs |S_p| - 2 auxiliary variables and stays
        linear in the number of axes, and a caller who wants the table can pass one as (2).
    (2) (x_a)_{a ∈ S_t} ∈ R_t for every table t (``add_allowed_assignments`` on values).
    (3) for every factor f with rows r = 0..R_f - 1 (its tabulated tuples k_r, costs c_r):
        booleans b_f,r with exactly one true (``add_exactly_one``), x_a = sum_r k_r[a]·b_f,r
        for each a ∈ S_f with more than one value, and y_f = sum_r c_r·b_f,r: the row
        chosen fixes the values and the cost, and a missing combination has no row, so it
        is forbidden.

What is tabulated, and how it is selected
    Every cost factor is a table of R_f <= Π_{a ∈ S_f} n_a rows, one per tabulated tuple,
    and the row is chosen by booleans, so every column and the cost are linear in them
    (the LP relaxation of one factor is integral). Three alternatives hold the same
    entries and were slower on the planner's instance (ortools 9.15, one solve of 14
    axes and 491 tabulated layouts of Llama 3.1 70B on 64 GPUs): an ``add_element`` per
    column on a row index variable, 0.10 s against 0.035 s; one
    ``add_allowed_assignments`` over (x_a, y_f), which CP-SAT encodes with a literal per
    distinct cost, 0.10 s for a single axis of 482 layouts; and an element over the dense
    mixed-radix index sum_j i_{a_j}·s_j, which needs Π n_a entries (800,000 for the
    planner's axes over ten cluster sizes) where the rows need R_f.

Objective
    minimise Σ_f y_f.

Top-k
    Level by level: after an optimum x* of objective z, a feasibility model asks for another
    assignment of objective exactly z that is none of those already returned (the no-good
    (x_a)_a ≠ x, by reified equalities, for each); when there is none, the optimising
    model gets Σ_f y_f ≥ z + 1 and is solved again. Every assignment left has an objective
    of at least z (each solve was optimal), so this returns the top_k in order, ties
    included. The plain alternative, a no-good per returned assignment in the optimising
    model, is correct too but slow: CP-SAT took 0.1-0.2 s per re-solve against 3-5 ms with
    the bound on the 482-row instance above. The re-solves share what is left of
    ``options.time_limit_s``.

Status
    OPTIMAL when every returned assignment was proven the best of those not yet returned
    and the list is complete (``top_k`` found, or the space ran out); FEASIBLE when a solve
    stopped at the time limit (the list is still best-found-first); INFEASIBLE with a
    ``binding`` explanation; UNKNOWN when the first solve found nothing in time.

Which constraint binds (infeasible problems only)
    Constraint groups: each products[p], each tables[t], and the missing combinations of
    each factors[f] that has any. A deletion filter drops one group at a time and keeps
    it dropped when the rest is still infeasible; what remains is a minimal culprit (each
    member needed: drop any one and the space is non-empty). Each check is a feasibility
    solve with the full ``options.time_limit_s``; a check that ends UNKNOWN keeps its group.

Hint
    A caller that knows a good assignment (the planner: the cheapest tabulated layout) passes
    it as ``DegreesProblem.hint``. Otherwise, since the assignment that takes each factor's
    own minimum is often infeasible, the hint is the first feasible assignment of a greedy
    scan of the Cartesian product, each axis's values ordered by their cheapest cost over
    the factors containing the axis; it is only scanned when the product has fewer than
    ``HINT_SCAN_LIMIT`` combinations, else no hint.

Symmetry
    Axes are named and ordered and their values are distinct, so no two assignments are
    interchangeable: there is no symmetry to break.

Size
    Past STYLE's ~400 lines: a sixth of the file is this docstring and a third the validated
    problem types; the formulation proper (model, hint, diagnosis, ranking) is about 220
    lines, and splitting the types into another module would only scatter one formulation.
"""

from __future__ import annotations

import itertools
import math
import numbers
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from ortools.sat.python import cp_model

from solvers._cpsat import Incumbent, SolveOptions, SolveRun, SolveStatus, solve_model

DEFAULT_OPTIONS = SolveOptions()

HINT_SCAN_LIMIT = 10_000
"""Scan the Cartesian product for a hint only when it has fewer combinations than this."""

_PARTIAL_SET_LIMIT = 4_096
"""Past this many reachable partial products, a chain variable gets an interval domain."""


def _integer(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{where}: {value!r} is not an integer")
    return int(value)


def _axis_names(axes: Sequence[str], where: str) -> tuple[str, ...]:
    names = tuple(axes)
    if not names:
        raise ValueError(f"{where}: needs at least one axis")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{where}: duplicate axes {', '.join(duplicates)}")
    return names


@dataclass(frozen=True)
class Axis:
    """A knob and its candidate values, e.g. ``Axis("tp", (1, 2, 4, 8))``."""

    name: str
    values: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Axis.name: {self.name!r} is not a non-empty string")
        values = tuple(_integer(v, f"Axis({self.name}).values") for v in self.values)
        if not values:
            raise ValueError(f"Axis({self.name}).values: needs at least one value")
        if len(set(values)) != len(values):
            raise ValueError(f"Axis({self.name}).values: {values} repeats a value")
        object.__setattr__(self, "values", values)


@dataclass(frozen=True)
class ProductConstraint:
    """The chosen values of ``axes`` multiply to ``equals`` (e.g. tp·cp·dp·pp = GPUs), or,
    with ``equals_axis``, to the chosen value of that axis (``equals`` is then ignored)."""

    axes: tuple[str, ...]
    equals: int = 0
    equals_axis: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "axes", _axis_names(self.axes, "ProductConstraint.axes"))
        object.__setattr__(self, "equals", _integer(self.equals, "ProductConstraint.equals"))
        if self.equals_axis is not None and self.equals_axis in self.axes:
            raise ValueError(
                f"ProductConstraint.equals_axis: {self.equals_axis} is also a factor of the "
                f"product ({', '.join(self.axes)})"
            )

    def describe(self) -> str:
        target = self.equals_axis if self.equals_axis is not None else self.equals
        return f"product {'·'.join(self.axes)} = {target}"

    def target(self, assignment: Mapping[str, int]) -> int:
        """E_p for this assignment."""
        return assignment[self.equals_axis] if self.equals_axis is not None else self.equals


@dataclass(frozen=True)
class AllowedTable:
    """Only the value tuples in ``rows`` (one value per axis, in order) are legal."""

    axes: tuple[str, ...]
    rows: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        axes = _axis_names(self.axes, "AllowedTable.axes")
        rows = []
        for r, row in enumerate(self.rows):
            row = tuple(_integer(v, f"AllowedTable.rows[{r}]") for v in row)
            if len(row) != len(axes):
                raise ValueError(
                    f"AllowedTable.rows[{r}]: {len(row)} values for {len(axes)} axes "
                    f"({', '.join(axes)})"
                )
            rows.append(row)
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "rows", tuple(rows))

    def describe(self) -> str:
        return f"allowed table over ({', '.join(self.axes)}) with {len(self.rows)} rows"


@dataclass(frozen=True)
class CostFactor:
    """A cost term over ``axes``, tabulated per value tuple; missing tuples are forbidden."""

    axes: tuple[str, ...]
    costs: Mapping[tuple[int, ...], int]

    def __post_init__(self) -> None:
        axes = _axis_names(self.axes, "CostFactor.axes")
        costs: dict[tuple[int, ...], int] = {}
        for key, cost in self.costs.items():
            key = tuple(_integer(v, f"CostFactor.costs key {key!r}") for v in key)
            if len(key) != len(axes):
                raise ValueError(
                    f"CostFactor.costs: key {key} has {len(key)} values for {len(axes)} "
                    f"axes ({', '.join(axes)})"
                )
            cost = _integer(cost, f"CostFactor.costs[{key}]")
            if cost < 0:
                raise ValueError(f"CostFactor.costs[{key}]: {cost} is negative")
            costs[key] = cost
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "costs", MappingProxyType(costs))


@dataclass(frozen=True)
class DegreesProblem:
    """The layout space and its cost, as data; see the module docstring."""

    axes: tuple[Axis, ...]
    products: tuple[ProductConstraint, ...] = ()
    tables: tuple[AllowedTable, ...] = ()
    factors: tuple[CostFactor, ...] = ()
    top_k: int = 1
    hint: Mapping[str, int] | None = None
    """A (good, not necessarily feasible) assignment to start from; see "Hint"."""

    def __post_init__(self) -> None:
        for name in ("axes", "products", "tables", "factors"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.axes:
            raise ValueError("DegreesProblem.axes: needs at least one axis")
        _axis_names([a.name for a in self.axes], "DegreesProblem.axes")
        if _integer(self.top_k, "DegreesProblem.top_k") < 1:
            raise ValueError(f"DegreesProblem.top_k: {self.top_k} must be at least 1")
        if self.hint is not None:
            names = [a.name for a in self.axes]
            if sorted(self.hint) != sorted(names):
                raise ValueError(
                    f"DegreesProblem.hint: names {sorted(self.hint)} but the axes are {names}"
                )
            self._check_values(tuple(self.hint), tuple(self.hint.values()), "DegreesProblem.hint")
            object.__setattr__(self, "hint", MappingProxyType(dict(self.hint)))
        for p, product in enumerate(self.products):
            self._check_axes(product.axes, f"DegreesProblem.products[{p}].axes")
            if product.equals_axis is not None:
                self._check_axes(
                    (product.equals_axis,), f"DegreesProblem.products[{p}].equals_axis"
                )
        for t, table in enumerate(self.tables):
            self._check_axes(table.axes, f"DegreesProblem.tables[{t}].axes")
            for r, row in enumerate(table.rows):
                self._check_values(table.axes, row, f"DegreesProblem.tables[{t}].rows[{r}]")
        for f, factor in enumerate(self.factors):
            self._check_axes(factor.axes, f"DegreesProblem.factors[{f}].axes")
            for key in factor.costs:
                self._check_values(factor.axes, key, f"DegreesProblem.factors[{f}].costs")

    @property
    def axis(self) -> dict[str, Axis]:
        return {a.name: a for a in self.axes}

    def _check_axes(self, names: tuple[str, ...], where: str) -> None:
        unknown = [n for n in names if n not in self.axis]
        if unknown:
            known = ", ".join(a.name for a in self.axes)
            raise ValueError(f"{where}: unknown axes {', '.join(unknown)}; the axes are {known}")

    def _check_values(self, names: tuple[str, ...], values: tuple[int, ...], where: str) -> None:
        for name, value in zip(names, values, strict=True):
            if value not in self.axis[name].values:
                raise ValueError(
                    f"{where}: {name} = {value} in {values} is not one of the values "
                    f"{self.axis[name].values} of axis {name}"
                )


@dataclass(frozen=True)
class DegreesSolution:
    """Best assignments first, with their objectives; see the module docstring for status."""

    status: SolveStatus
    assignments: tuple[dict[str, int], ...] = ()
    objectives: tuple[int, ...] = ()
    wall_s: float = 0.0
    """Wall time of the first (optimising) solve."""
    incumbents: tuple[Incumbent, ...] = ()
    """Incumbents of the first solve."""
    total_wall_s: float = 0.0
    """Everything: hint scan, all solves, top-k re-solves and the infeasibility diagnosis."""
    binding: str | None = None
    """Infeasible only: which constraints, together, empty the layout space."""
    binding_fields: tuple[str, ...] = field(default=())
    """Infeasible only: those constraints as fields, e.g. ``("products[0]",)``."""


@dataclass(frozen=True)
class _Built:
    model: cp_model.CpModel
    value: dict[str, cp_model.IntVar]
    costs: tuple[cp_model.IntVar, ...]
    rows: tuple[list[cp_model.IntVar], ...] = ()
    """Per factor (with an objective): the row booleans b_f,r."""


def _add_product(
    model: cp_model.CpModel,
    p: int,
    product: ProductConstraint,
    value: dict[str, cp_model.IntVar],
    axis: dict[str, Axis],
) -> None:
    """Constraint (1), chained through partial products for more than two axes."""
    xs = [value[n] for n in product.axes]
    target: int | cp_model.IntVar = product.equals
    targets = [product.equals]
    if product.equals_axis is not None:
        target = value[product.equals_axis]
        targets = list(axis[product.equals_axis].values)
    if len(xs) == 1:
        model.add(xs[0] == target)
        return
    values = [axis[n].values for n in product.axes]
    positive = all(t > 0 for t in targets) and all(v > 0 for vs in values for v in vs)
    left = xs[0]
    reachable: set[int] | None = set(values[0])  # None: too many, use an interval
    low, high = min(values[0]), max(values[0])
    for j in range(1, len(xs) - 1):
        corners = [b * v for b in (low, high) for v in (min(values[j]), max(values[j]))]
        low, high = min(corners), max(corners)
        if reachable is not None:
            reachable = {q * v for q in reachable for v in values[j]}
            if positive:  # the remaining positive factors must make up E_p / q
                reachable = {q for q in reachable if any(t % q == 0 for t in targets)}
            if len(reachable) > _PARTIAL_SET_LIMIT:
                reachable = None
        if reachable is None:
            domain = cp_model.Domain(low, high)
        elif reachable:
            domain = cp_model.Domain.from_values(sorted(reachable))
        else:  # no prefix divides E_p: keep the variable valid and state the infeasibility
            domain = cp_model.Domain.from_values([targets[0]])
            model.add_bool_or([])
        partial = model.new_int_var_from_domain(domain, f"partial[products[{p}]][{j}]")
        model.add_multiplication_equality(partial, [left, xs[j]])
        left = partial
    model.add_multiplication_equality(target, [left, xs[-1]])


def _build(problem: DegreesProblem, enforce: frozenset[str], objective: bool) -> _Built:
    """The model of the module docstring, with only the groups in ``enforce`` imposed.

    Without an objective (the diagnosis), a factor not in ``enforce`` is left out entirely.
    """
    model = cp_model.CpModel()
    value = {
        a.name: model.new_int_var_from_domain(
            cp_model.Domain.from_values(a.values), f"value[{a.name}]"
        )
        for a in problem.axes
    }
    for p, product in enumerate(problem.products):  # (1)
        if f"products[{p}]" in enforce:
            _add_product(model, p, product, value, problem.axis)
    for t, table in enumerate(problem.tables):  # (2)
        if f"tables[{t}]" in enforce:
            model.add_allowed_assignments([value[n] for n in table.axes], table.rows)
    costs = []
    row_vars = []
    for f, factor in enumerate(problem.factors):  # (3)
        xs = [value[n] for n in factor.axes]
        if objective and factor.costs:
            keys = list(factor.costs)
            rows = [model.new_bool_var(f"row[factors[{f}]][{r}]") for r in range(len(keys))]
            model.add_exactly_one(rows)
            for j, (name, x) in enumerate(zip(factor.axes, xs, strict=True)):
                if len(problem.axis[name].values) > 1:
                    model.add(x == cp_model.LinearExpr.weighted_sum(rows, [k[j] for k in keys]))
            prices = [factor.costs[key] for key in keys]
            # an interval, not the set of costs: a domain with a hole between every two
            # tabulated costs made each solve slower by two orders of magnitude
            cost = model.new_int_var(min(prices), max(prices), f"cost[factors[{f}]]")
            model.add(cost == cp_model.LinearExpr.weighted_sum(rows, prices))
            costs.append(cost)
            row_vars.append(rows)
        elif objective or f"factors[{f}]" in enforce:  # no rows at all: infeasible
            model.add_allowed_assignments(xs, list(factor.costs))
    if objective:
        model.minimize(cp_model.LinearExpr.sum(costs))
    return _Built(model, value, tuple(costs), tuple(row_vars))


def _groups(problem: DegreesProblem) -> tuple[str, ...]:
    """Constraint groups the diagnosis may drop; factors only if they forbid anything."""
    axis = problem.axis
    return (
        *(f"products[{p}]" for p in range(len(problem.products))),
        *(f"tables[{t}]" for t in range(len(problem.tables))),
        *(
            f"factors[{f}]"
            for f, factor in enumerate(problem.factors)
            if len(factor.costs) < math.prod(len(axis[n].values) for n in factor.axes)
        ),
    )


def _feasible(problem: DegreesProblem, assignment: dict[str, int]) -> bool:
    for product in problem.products:
        if math.prod(assignment[n] for n in product.axes) != product.target(assignment):
            return False
    for table in problem.tables:
        if tuple(assignment[n] for n in table.axes) not in table.rows:
            return False
    return all(tuple(assignment[n] for n in f.axes) in f.costs for f in problem.factors)


def _greedy_hint(problem: DegreesProblem) -> dict[str, int] | None:
    """First feasible assignment, values cheapest-first per axis; None if too big to scan."""
    if math.prod(len(a.values) for a in problem.axes) >= HINT_SCAN_LIMIT:
        return None
    ordered = []
    for a in problem.axes:
        cheapest = {v: 0 for v in a.values}
        for factor in problem.factors:
            if a.name in factor.axes:
                j = factor.axes.index(a.name)
                for v in a.values:
                    cheapest[v] += min(
                        (c for k, c in factor.costs.items() if k[j] == v), default=math.inf
                    )
        ordered.append(sorted(a.values, key=lambda v, cheapest=cheapest: cheapest[v]))
    names = [a.name for a in problem.axes]
    for combination in itertools.product(*ordered):
        assignment = dict(zip(names, combination, strict=True))
        if _feasible(problem, assignment):
            return assignment
    return None


def _describe(problem: DegreesProblem, group: str) -> str:
    family, number = group.rstrip("]").split("[")
    member = getattr(problem, family)[int(number)]
    if family != "factors":
        return str(member.describe())
    total = math.prod(len(problem.axis[n].values) for n in member.axes)
    missing = total - len(member.costs)
    return f"cost factor over ({', '.join(member.axes)}) missing {missing} of {total} combinations"


def _binding(problem: DegreesProblem, options: SolveOptions) -> tuple[str, tuple[str, ...]]:
    """Deletion filter over the constraint groups: a minimal infeasible subset, as text."""
    kept = list(_groups(problem))
    for group in tuple(kept):
        trial = [g for g in kept if g != group]
        run = solve_model(_build(problem, frozenset(trial), objective=False).model, options)
        if run.status is SolveStatus.INFEASIBLE:
            kept = trial
    described = [f"{g} ({_describe(problem, g)})" for g in kept]
    if len(kept) == 1:
        text = f"{described[0]} alone empties the layout space"
    else:
        text = (
            f"{' and '.join(described)} together empty the layout space; "
            "dropping any one of them leaves it non-empty"
        )
    return text, tuple(kept)


def _rank(
    problem: DegreesProblem, built: _Built, first: SolveRun, options: SolveOptions, started: float
) -> tuple[list[dict[str, int]], list[int], bool]:
    """Top-k level by level (module docstring): (assignments, objectives, all proven)."""
    names = [a.name for a in problem.axes]
    assignments: list[dict[str, int]] = []
    objectives: list[int] = []
    proven = first.status is SolveStatus.OPTIMAL
    quiet = replace(options, export_path=None)
    built.model.clear_hints()

    def record(run: SolveRun, values: dict[str, cp_model.IntVar], costs: tuple) -> int:
        assignments.append({n: run.solver.value(values[n]) for n in names})
        objectives.append(sum(run.solver.value(c) for c in costs))
        return objectives[-1]

    level = record(first, built.value, built.costs)
    if _one_full_factor(problem):
        return _rank_rows(problem, built, assignments, objectives, proven, options, started)
    unique = _unique_objectives(problem)
    while len(assignments) < problem.top_k:
        left_s = options.time_limit_s - (time.perf_counter() - started)
        if left_s <= 0:
            return assignments, objectives, False
        if unique is None or unique.get(level, 0) > 1:
            tied = _next_tie(problem, assignments, objectives, level, quiet, left_s)
            if tied is None:
                return assignments, objectives, False
            if tied:
                record(*tied)
                continue
        left_s = options.time_limit_s - (time.perf_counter() - started)
        if left_s <= 0:
            return assignments, objectives, False
        built.model.add(cp_model.LinearExpr.sum(built.costs) >= level + 1)
        run = solve_model(built.model, replace(quiet, time_limit_s=left_s))
        if run.status is SolveStatus.INFEASIBLE:  # fewer than top_k exist: the list is complete
            return assignments, objectives, proven
        if not run.has_solution:
            return assignments, objectives, False
        proven = proven and run.status is SolveStatus.OPTIMAL
        level = record(run, built.value, built.costs)
    return assignments, objectives, proven


def _one_full_factor(problem: DegreesProblem) -> bool:
    """One factor over every axis: an assignment is exactly one of its rows."""
    return len(problem.factors) == 1 and set(problem.factors[0].axes) == {
        a.name for a in problem.axes
    }


def _rank_rows(
    problem: DegreesProblem,
    built: _Built,
    assignments: list[dict[str, int]],
    objectives: list[int],
    proven: bool,
    options: SolveOptions,
    started: float,
) -> tuple[list[dict[str, int]], list[int], bool]:
    """Top-k when assignments are rows (module docstring): each returned row's boolean is
    fixed to false and the optimising model solved again."""
    factor = problem.factors[0]
    index = {key: r for r, key in enumerate(factor.costs)}
    quiet = replace(options, export_path=None)
    while len(assignments) < problem.top_k:
        chosen = assignments[-1]
        built.model.add(built.rows[0][index[tuple(chosen[n] for n in factor.axes)]] == 0)
        left_s = options.time_limit_s - (time.perf_counter() - started)
        if left_s <= 0:
            return assignments, objectives, False
        run = solve_model(built.model, replace(quiet, time_limit_s=left_s))
        if run.status is SolveStatus.INFEASIBLE:  # fewer than top_k exist: the list is complete
            return assignments, objectives, proven
        if not run.has_solution:
            return assignments, objectives, False
        proven = proven and run.status is SolveStatus.OPTIMAL
        names = [a.name for a in problem.axes]
        assignments.append({n: run.solver.value(built.value[n]) for n in names})
        objectives.append(sum(run.solver.value(c) for c in built.costs))
    return assignments, objectives, proven


def _unique_objectives(problem: DegreesProblem) -> dict[int, int] | None:
    """With one factor over every axis, assignments are its rows: objective -> how many
    rows have it (no tie check needed where that is one); None otherwise."""
    if len(problem.factors) != 1 or len(problem.factors[0].axes) != len(problem.axes):
        return None
    counts: dict[int, int] = {}
    for cost in problem.factors[0].costs.values():
        counts[cost] = counts.get(cost, 0) + 1
    return counts


def _next_tie(
    problem: DegreesProblem,
    assignments: list[dict[str, int]],
    objectives: list[int],
    level: int,
    options: SolveOptions,
    left_s: float,
) -> tuple[SolveRun, dict[str, cp_model.IntVar], tuple] | bool | None:
    """Another assignment of objective ``level`` (solver run and variables), False when
    there is none, None when the solver could not tell in time."""
    tie = _build(problem, frozenset(_groups(problem)), objective=True)
    tie.model.clear_objective()
    tie.model.add(cp_model.LinearExpr.sum(tie.costs) == level)
    for chosen, objective in zip(assignments, objectives, strict=True):
        if objective == level:
            _forbid(tie.model, tie.value, chosen)
    run = solve_model(tie.model, replace(options, time_limit_s=left_s))
    if run.has_solution:
        return run, tie.value, tie.costs
    return False if run.status is SolveStatus.INFEASIBLE else None


def _forbid(
    model: cp_model.CpModel, value: dict[str, cp_model.IntVar], chosen: dict[str, int]
) -> None:
    """The no-good: at least one axis takes another value than in ``chosen``."""
    differs = []
    for name, chosen_value in chosen.items():
        same = model.new_bool_var(f"same[{name}]")
        model.add(value[name] == chosen_value).only_enforce_if(same)
        model.add(value[name] != chosen_value).only_enforce_if(same.Not())
        differs.append(same.Not())
    model.add_bool_or(differs)


def solve(problem: DegreesProblem, options: SolveOptions = DEFAULT_OPTIONS) -> DegreesSolution:
    """Up to ``problem.top_k`` distinct cheapest assignments, best first."""
    started = time.perf_counter()
    built = _build(problem, frozenset(_groups(problem)), objective=True)
    hint = dict(problem.hint) if problem.hint is not None else _greedy_hint(problem)
    if hint is not None:
        for name, chosen in hint.items():
            built.model.add_hint(built.value[name], chosen)
    first = solve_model(built.model, options)
    if first.status is SolveStatus.INFEASIBLE:
        text, fields = _binding(problem, replace(options, export_path=None))
        return DegreesSolution(
            status=first.status,
            wall_s=first.wall_s,
            incumbents=first.incumbents,
            total_wall_s=time.perf_counter() - started,
            binding=text,
            binding_fields=fields,
        )
    if not first.has_solution:
        return DegreesSolution(
            status=SolveStatus.UNKNOWN,
            wall_s=first.wall_s,
            incumbents=first.incumbents,
            total_wall_s=time.perf_counter() - started,
        )
    assignments, objectives, proven = _rank(problem, built, first, options, started)
    return DegreesSolution(
        status=SolveStatus.OPTIMAL if proven else SolveStatus.FEASIBLE,
        assignments=tuple(assignments),
        objectives=tuple(objectives),
        wall_s=first.wall_s,
        incumbents=first.incumbents,
        total_wall_s=time.perf_counter() - started,
    )
