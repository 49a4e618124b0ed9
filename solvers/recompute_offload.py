"""Keep, recompute or offload each activation group: fit a memory budget at least added time.

A training step is a sequence of events (the forward and backward of each layer of each
micro-batch, the optimizer step). An activation group is produced by one event's forward
and read by a later event's backward. Kept, it occupies memory in between. Recomputed
(Checkmate's rematerialisation, at the granularity frameworks expose: a layer's saved
activations), it occupies memory only while produced and while recomputed for its
backward, and costs its forward again. Offloaded to host memory, it stays on the device
one more event after it is produced (the copy out) and from one event before its backward
(the copy back), and costs the transfer time that compute does not hide.

Units: memory in integer units of the caller's choosing, time in integer microseconds.

Data
    Events t = 0..T-1, each with b_t, the memory not decided here (weights, states,
    gradients, transients, activations not in a group), and c_t its compute time.
    Groups g: size s_g, produced at event p_g and read at event u_g > p_g;
    rho_g the recompute time (None: cannot be recomputed, e.g. a layer's input);
    o_g one transfer's time (None: cannot be offloaded).
    Budget M.
    Linked sets: groups that take one choice together (a framework sets recomputation
    per layer, for every micro-batch).
    Derived: W_g = sum of c_t for p_g < t < u_g (compute the transfers can hide behind);
    eps_g = max(0, 2 o_g - W_g) the exposed part when g alone uses the link;
    C = sum of all c_t (the link's capacity over the step).

Decision variables
    k_g, r_g, f_g in {0, 1}   keep, recompute, offload group g.
    E >= 0                    transfer time beyond what the whole step hides.

Constraints
    (1) k_g + r_g + f_g = 1; r_g = 0 where rho_g is None, f_g = 0 where o_g is None.
    (2) For every event t:  b_t + sum_{g: t in {p_g, u_g}} s_g
            + sum_{g: p_g < t < u_g} s_g (k_g + f_g [t in {p_g + 1, u_g - 1}]) <= M.
        Rows that cannot exceed M even with every group kept are left out.
    (3) E >= sum_g (2 o_g - eps_g) f_g - C: one copy engine serves every transfer, and
        what it cannot overlap with the step's compute is exposed.
    (4) k_g = k_h, r_g = r_h, f_g = f_h for g, h in one linked set.

Objective
    minimise sum_g rho_g r_g + sum_g eps_g f_g + E.

Approximations (stated, not hidden): transfers are hidden behind any compute of their
window, in any order (no per-window contention beyond (3)); recomputing a group does not
need the groups below it (frameworks checkpoint a layer's input separately, given here as
a group that cannot be recomputed).

Result
    The choice per group, the added time and its proven lower bound (OPTIMAL only when
    they meet), memory at every event and its peak; INFEASIBLE
    with the tightest event and the missing units when even the leanest choice of every
    group exceeds the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ortools.sat.python import cp_model

from solvers._cpsat import Incumbent, SolveOptions, SolveStatus, solve_model

Choice = Literal["keep", "recompute", "offload"]
CHOICES: tuple[Choice, ...] = ("keep", "recompute", "offload")


@dataclass(frozen=True)
class ActivationGroup:
    size: int
    produced: int
    used: int
    recompute_us: int | None = None
    transfer_us: int | None = None

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"group size must be at least 0, got {self.size}")
        if not 0 <= self.produced < self.used:
            raise ValueError(
                f"group produced at event {self.produced} must be read later, not at {self.used}"
            )
        for name in ("recompute_us", "transfer_us"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be at least 0, got {value}")

    def allows(self, choice: Choice) -> bool:
        if choice == "recompute":
            return self.recompute_us is not None
        if choice == "offload":
            return self.transfer_us is not None
        return True

    def occupies(self, choice: Choice, event: int) -> bool:
        """Whether the group is in device memory at ``event`` under ``choice``."""
        p, u = self.produced, self.used
        if event in (p, u):
            return True
        if not p < event < u:
            return False
        if choice == "keep":
            return True
        return choice == "offload" and event in (p + 1, u - 1)


@dataclass(frozen=True)
class RecomputeOffloadProblem:
    base: tuple[int, ...]
    compute_us: tuple[int, ...]
    groups: tuple[ActivationGroup, ...]
    budget: int
    linked: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "linked", tuple(tuple(s) for s in self.linked))
        for members in self.linked:
            for g in members:
                if not 0 <= g < len(self.groups):
                    raise ValueError(f"linked: group {g} is not in 0..{len(self.groups) - 1}")
        object.__setattr__(self, "base", tuple(self.base))
        object.__setattr__(self, "compute_us", tuple(self.compute_us))
        object.__setattr__(self, "groups", tuple(self.groups))
        if len(self.compute_us) != len(self.base):
            raise ValueError(
                f"compute_us has {len(self.compute_us)} events but base has {len(self.base)}"
            )
        for g, group in enumerate(self.groups):
            if group.used >= len(self.base):
                raise ValueError(f"groups[{g}] is read at event {group.used} of {len(self.base)}")

    def window_us(self, g: int) -> int:
        group = self.groups[g]
        return sum(self.compute_us[group.produced + 1 : group.used])

    def exposed_us(self, g: int) -> int:
        """eps_g: the transfer time its own window cannot hide."""
        transfer = self.groups[g].transfer_us or 0
        return max(0, 2 * transfer - self.window_us(g))

    def memory(self, choices: tuple[Choice, ...]) -> tuple[int, ...]:
        """Memory at every event under ``choices``."""
        return tuple(
            b + sum(g.size for g, c in zip(self.groups, choices, strict=True) if g.occupies(c, t))
            for t, b in enumerate(self.base)
        )

    def added_us(self, choices: tuple[Choice, ...]) -> int:
        """The objective of ``choices``."""
        total, link = 0, 0
        for g, (group, choice) in enumerate(zip(self.groups, choices, strict=True)):
            if choice == "recompute":
                total += group.recompute_us or 0
            elif choice == "offload":
                exposed = self.exposed_us(g)
                total += exposed
                link += 2 * (group.transfer_us or 0) - exposed
        return total + max(0, link - sum(self.compute_us))


@dataclass(frozen=True)
class RecomputeOffloadSolution:
    status: SolveStatus
    choices: tuple[Choice, ...]
    added_us: int | None
    memory: tuple[int, ...]
    peak: int | None
    lower_bound_us: int | None
    wall_s: float
    binding: str | None = None
    incumbents: tuple[Incumbent, ...] = ()


def _leanest(group: ActivationGroup) -> Choice:
    return (
        "recompute"
        if group.allows("recompute")
        else "offload"
        if group.allows("offload")
        else "keep"
    )


def _explain(problem: RecomputeOffloadProblem) -> str:
    leanest = tuple(_leanest(g) for g in problem.groups)
    memory = problem.memory(leanest)
    worst = max(range(len(memory)), key=lambda t: memory[t])
    return (
        f"event {worst} needs {memory[worst]} units even with every group recomputed or "
        f"offloaded where allowed, over the budget of {problem.budget} by "
        f"{memory[worst] - problem.budget}"
    )


_DEFAULT_OPTIONS = SolveOptions()


def solve(
    problem: RecomputeOffloadProblem, options: SolveOptions = _DEFAULT_OPTIONS
) -> RecomputeOffloadSolution:
    """The cheapest choice per group that fits the budget (module docstring)."""
    model = cp_model.CpModel()
    var: dict[tuple[int, Choice], cp_model.IntVar] = {}
    for g, group in enumerate(problem.groups):
        for choice in CHOICES:
            var[g, choice] = model.new_bool_var(f"{choice[0]}[{g}]")
            if not group.allows(choice):
                model.add(var[g, choice] == 0)
        model.add_exactly_one(var[g, c] for c in CHOICES)  # (1)
        model.add_hint(var[g, "keep"], 1)
    for t, base in enumerate(problem.base):  # (2)
        fixed, terms, most = base, [], base
        for g, group in enumerate(problem.groups):
            if t in (group.produced, group.used):
                fixed += group.size
                most += group.size
            elif group.produced < t < group.used:
                most += group.size
                terms.append(group.size * var[g, "keep"])
                if t in (group.produced + 1, group.used - 1):
                    terms.append(group.size * var[g, "offload"])
        if most > problem.budget:
            model.add(fixed + cp_model.LinearExpr.sum(terms) <= problem.budget)
    for members in problem.linked:  # (4)
        for g in members[1:]:
            for choice in CHOICES:
                model.add(var[g, choice] == var[members[0], choice])
    link_total = sum(2 * (g.transfer_us or 0) for g in problem.groups)
    spill = model.new_int_var(0, max(0, link_total), "E")
    model.add(  # (3)
        spill
        >= cp_model.LinearExpr.sum(
            [
                (2 * (group.transfer_us or 0) - problem.exposed_us(g)) * var[g, "offload"]
                for g, group in enumerate(problem.groups)
            ]
        )
        - sum(problem.compute_us)
    )
    costs = [
        (group.recompute_us or 0) * var[g, "recompute"] + problem.exposed_us(g) * var[g, "offload"]
        for g, group in enumerate(problem.groups)
    ]
    worst = sum(max(g.recompute_us or 0, 0) for g in problem.groups) + sum(
        problem.exposed_us(g) for g in range(len(problem.groups))
    )
    added = model.new_int_var(0, worst + max(0, link_total), "added")  # never negative
    model.add(added == cp_model.LinearExpr.sum(costs) + spill)
    model.minimize(added)
    run = solve_model(model, options)
    if not run.has_solution:
        binding = _explain(problem) if run.status is SolveStatus.INFEASIBLE else None
        return RecomputeOffloadSolution(
            run.status, (), None, (), None, None, run.wall_s, binding, run.incumbents
        )
    choices = tuple(
        next(c for c in CHOICES if run.solver.value(var[g, c])) for g in range(len(problem.groups))
    )
    memory = problem.memory(choices)
    added = problem.added_us(choices)
    bound = max(0, min(added, int(run.solver.best_objective_bound + 0.999999)))
    # the objective is never negative, whatever bound the search reported
    status = SolveStatus.OPTIMAL if added == bound else SolveStatus.FEASIBLE
    return RecomputeOffloadSolution(
        status=status,
        choices=choices,
        added_us=added,
        memory=memory,
        peak=max(memory, default=0),
        lower_bound_us=bound,
        wall_s=run.wall_s,
        incumbents=run.incumbents,
    )
