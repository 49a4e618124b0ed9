"""MoE expert placement: which GPU hosts which experts, and how many replicas each gets.

An MoE layer's step waits for its busiest GPU (every GPU's expert GEMMs end at the same
all-to-all), and tokens that change node between consecutive layers cross the slowest
links. Choose, for every MoE layer, the logical experts each GPU hosts so that the summed
per-layer maximum GPU load is least, optionally plus the expected token hops between
consecutive layers (ExFlow's inter-layer affinity).

Units: loads in 1/Λ token, Λ = lcm(1..K), so the even share w / c of every replica count
c <= K is an integer (see :mod:`solvers.expert_problem`); hop terms are multiplied by Λ.

Data
    L MoE layers l, E logical experts e, w_{l,e} >= 0 tokens routed to expert e of layer l.
    G GPUs g on N nodes of G/N GPUs (node(g) = g div (G/N)); S slots per GPU per layer, so
    R = G S physical experts per layer, E <= R <= K E. K: most replicas of one expert.
    b_l bytes of one expert of layer l, M bytes per GPU for expert weights.
    Affinity entries a = (l, e, f, t_a): t_a tokens went to e in layer l and to f in l + 1.
    Weights: β (balance), γ (a token changing GPU), ν (a token changing node, extra).

Decision variables
    x_{l,e,g} in [0, min(K, S)]  replicas of expert e GPU g hosts in layer l. A second
                            copy on one GPU adds no compute, only a larger share, but with
                            exactly S slots per GPU it can beat every placement without
                            one (EPLB produces such placements), so it is allowed.
    c_{l,e} in [k_{l,e}, K]  replica count, k_{l,e} >= 1 (see pruning).
    r_{l,e}                 share of one replica, Λ w_{l,e} / c_{l,e} (``add_element`` on
                            the table of Λ w / k, k = 1..K: the even split, linearised).
    v_{l,e,g}               share GPU g computes, x_{l,e,g} r_{l,e} (CP-SAT's product
                            constraint; two enforced linear equalities when x is binary).
    z_l                     busiest GPU's load in layer l.
    With traffic (then R = E, every c = 1 and x binary): p_{a,g} <= x_{l,e,g},
    p_{a,g} <= x_{l+1,f,g} (both on g) and q_{a,n} <= y_{l,e,n}, q_{a,n} <= y_{l+1,f,n}
    with y_{l,e,n} = sum of x_{l,e,g} over the GPUs of node n (both on node n): the
    standard linearisation of a product of binaries, tight because the objective rewards
    p and q.

Constraints
    (1) sum_g x_{l,e,g} = c_{l,e}                        every expert hosted, c times.
    (2) sum_e x_{l,e,g} = S                              every slot holds one expert.
    (3) sum_g v_{l,e,g} = Λ w_{l,e}                      replica shares sum to the load
                                                          (redundant, but it makes the
                                                          linear relaxation's bound the
                                                          mean GPU load).
    (4) z_l >= sum_e v_{l,e,g}                           busiest GPU.
    (5) memory: sum_l S b_l <= M. With (2) every GPU holds exactly S experts per layer, so
        this is a constant; it is checked on the data (ValueError), not modelled.
    (6) symmetry: GPUs of one node are interchangeable, and so are whole nodes (the loads
        and the hops depend on the placement only up to such permutations). Without
        traffic every GPU is interchangeable in every layer separately: loads are ordered,
        sum_e v_{l,e,g} >= sum_e v_{l,e,g+1}. With traffic the permutation must be the
        same in every layer: layer 0's loads are ordered inside each node, and nodes by
        their first GPU's layer-0 load.

Objective
    minimise β sum_l z_l + Λ sum_a t_a (γ (1 - sum_g p_{a,g}) + ν (1 - sum_n q_{a,n})).

Decomposition, warm start, pruning, time limit
    Without traffic the layers share no variable: each is solved on its own (in parallel
    threads, one CP-SAT worker each, the time limit shared out). The warm start
    (:func:`solvers.expert_local_search.warm_start`: the better EPLB greedy, repaired and
    swap-improved) is the hint, and the answer is never worse than it: if the solver ends
    with a worse incumbent the warm start is returned. With U_l the warm start's z_l, any
    better solution has r_{l,e} <= U_l, so c_{l,e} >= ceil(Λ w_{l,e} / U_l) =: k_{l,e}.
    A layer whose warm start meets the bound ceil(Λ sum_e w_{l,e} / G) (the mean) is
    optimal without a solve; one within the options' relative gap of it is kept as is
    (bounded, not proven optimal), and CP-SAT stops at that gap too. The reported bound
    is, per layer, the larger of CP-SAT's proven bound and that mean, summed; gap =
    (objective - bound) / objective.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ortools.sat.python import cp_model

from solvers._cpsat import Incumbent, SolveOptions, SolveStatus, solve_model
from solvers.expert_local_search import warm_start
from solvers.expert_problem import (
    ExpertPlacementProblem,
    layer_gpu_loads,
    objective,
    scaled_max_loads,
)

DEFAULT_OPTIONS = SolveOptions(time_limit_s=10.0, workers=2)


@dataclass(frozen=True)
class ExpertPlacementSolution:
    """A placement with its objective and the proven lower bound, in the problem's units."""

    phy2log: tuple[tuple[int, ...], ...]
    """Per layer, the logical expert of every physical slot; slot r is on GPU r // S."""
    status: SolveStatus
    objective: int
    bound: int
    layer_bounds: tuple[int, ...]
    """Per layer, a proven lower bound on the busiest GPU's load (1/Λ token)."""
    max_loads: tuple[int, ...]
    """Per layer, the busiest GPU's load (1/Λ token)."""
    layer_optimal: tuple[bool, ...]
    from_solver: tuple[bool, ...]
    """Per layer (or for all, with traffic): whether CP-SAT improved on the warm start."""
    warm_start_objective: int
    incumbents: tuple[Incumbent, ...]
    wall_s: float

    @property
    def gap(self) -> float:
        """(objective - bound) / objective: 0 when proven optimal."""
        return 0.0 if self.objective == 0 else (self.objective - self.bound) / self.objective


@dataclass
class _Layer:
    x: dict[tuple[int, int], cp_model.IntVar]
    load: list[cp_model.LinearExpr]
    z: cp_model.IntVar


def mean_bound(problem: ExpertPlacementProblem, layer: int) -> int:
    """ceil(Λ sum_e w / G): no GPU can be below the mean."""
    return -(-problem.scale * sum(problem.loads[layer]) // problem.gpus)


def _add_layer(
    model: cp_model.CpModel, problem: ExpertPlacementProblem, layer: int, upper: int
) -> _Layer:
    """Variables and constraints (1)-(4) of one layer; ``upper`` bounds z (the warm start)."""
    scale, gpus, top = problem.scale, problem.gpus, problem.max_replicas
    x: dict[tuple[int, int], cp_model.IntVar] = {}
    v: dict[tuple[int, int], cp_model.IntVar] = {}
    copies = min(top, problem.slots_per_gpu)
    for e, w in enumerate(problem.loads[layer]):
        least = max(1, -(-scale * w // max(upper, 1)))
        c = model.new_int_var(least, top, f"c[{layer},{e}]")
        share = model.new_int_var(scale * w // top, scale * w // least, f"r[{layer},{e}]")
        model.add_element(c, [scale * w // max(k, 1) for k in range(top + 1)], share)
        for g in range(gpus):
            x[e, g] = model.new_int_var(0, copies, f"x[{layer},{e},{g}]")
            v[e, g] = model.new_int_var(0, scale * w, f"v[{layer},{e},{g}]")
            if copies == 1:
                model.add(v[e, g] == share).only_enforce_if(x[e, g])
                model.add(v[e, g] == 0).only_enforce_if(~x[e, g])
            else:
                model.add_multiplication_equality(v[e, g], [x[e, g], share])
        model.add(cp_model.LinearExpr.sum([x[e, g] for g in range(gpus)]) == c)  # (1)
        model.add(cp_model.LinearExpr.sum([v[e, g] for g in range(gpus)]) == scale * w)  # (3)
    experts = range(problem.experts)
    for g in range(gpus):
        model.add(cp_model.LinearExpr.sum([x[e, g] for e in experts]) == problem.slots_per_gpu)
    load = [cp_model.LinearExpr.sum([v[e, g] for e in experts]) for g in range(gpus)]
    z = model.new_int_var(mean_bound(problem, layer), upper, f"z[{layer}]")
    for g in range(gpus):
        model.add(z >= load[g])  # (4)
    return _Layer(x=x, load=load, z=z)


def _hint(
    model: cp_model.CpModel, layer: _Layer, problem: ExpertPlacementProblem, row: list[int]
) -> None:
    s = problem.slots_per_gpu
    for (e, g), var in layer.x.items():
        model.add_hint(var, row[g * s : (g + 1) * s].count(e))


def _relabel(problem: ExpertPlacementProblem, row: list[int], order: list[int]) -> list[int]:
    s = problem.slots_per_gpu
    return [e for g in order for e in row[g * s : (g + 1) * s]]


def _read(problem: ExpertPlacementProblem, solver: cp_model.CpSolver, layer: _Layer) -> list[int]:
    s, row = problem.slots_per_gpu, []
    for g in range(problem.gpus):
        hosted = [e for e in range(problem.experts) for _ in range(solver.value(layer.x[e, g]))]
        assert len(hosted) == s
        row.extend(hosted)
    return row


def _solve_layer(
    problem: ExpertPlacementProblem, layer: int, row: list[int], options: SolveOptions
) -> tuple[list[int], int, bool, bool, tuple[Incumbent, ...]]:
    """One layer without traffic: (row, bound, optimal, from solver, incumbents)."""
    per_gpu = layer_gpu_loads(problem, layer, row)
    upper, bound = max(per_gpu), mean_bound(problem, layer)
    if upper <= bound:
        return row, bound, True, False, ()
    model = cp_model.CpModel()
    built = _add_layer(model, problem, layer, upper)
    for g in range(problem.gpus - 1):
        model.add(built.load[g] >= built.load[g + 1])  # (6)
    order = sorted(range(problem.gpus), key=lambda g: -per_gpu[g])
    _hint(model, built, problem, _relabel(problem, row, order))
    model.minimize(built.z)
    run = solve_model(model, options)
    if not run.has_solution:
        return row, bound, False, False, run.incumbents
    optimal = run.status is SolveStatus.OPTIMAL
    bound = max(bound, round(run.solver.best_objective_bound))
    found = _read(problem, run.solver, built)
    if max(layer_gpu_loads(problem, layer, found)) < upper:
        return found, bound, optimal, True, run.incumbents
    return row, bound, optimal, False, run.incumbents


class _Budget:
    """Shares what is left of the time limit among the layers still to solve."""

    def __init__(
        self, deadline: float, pending: int, workers: int, options: SolveOptions, build_s: float
    ) -> None:
        self.deadline, self.pending, self.workers, self.options = (
            deadline,
            pending,
            workers,
            options,
        )
        self.build_s = build_s
        self.lock = threading.Lock()

    def next(self) -> SolveOptions | None:
        """Options for the next layer, or None when too little time is left to build and
        solve a model (that layer keeps its warm start)."""
        with self.lock:
            left = self.deadline - time.perf_counter()
            share = left * self.workers / max(self.pending, 1)
            self.pending -= 1
        if left < self.build_s + _LEAST_LAYER_S:
            return None
        return SolveOptions(
            time_limit_s=max(min(share, left) - self.build_s, _LEAST_LAYER_S),
            workers=1,
            seed=self.options.seed,
            log=self.options.log,
            relative_gap=self.options.relative_gap,
        )


_LEAST_LAYER_S = 0.1
"""Below this much search time left, a layer keeps its warm start rather than start a model."""

_BUILD_S_PER_VARIABLE = 5e-5
"""Seconds to build one (expert, GPU) pair of a layer's model in Python: measured on this
project's 2-core CPU, about 0.4 s for 256 experts x 32 GPUs (benchmarks/expert_placement.py);
times the worker threads, which build in turn (Python's global interpreter lock)."""


def _solve_layers(
    problem: ExpertPlacementProblem, start: list[list[int]], options: SolveOptions, started: float
) -> ExpertPlacementSolution:
    """Constraints (1)-(4), (6) layer by layer, in parallel threads, the layers farthest
    from their mean bound first; a layer whose warm start is already within
    ``options.relative_gap`` of its mean bound is not solved, nor is any when the warm
    start is within it overall."""
    within: list[bool] = []
    uppers = [max(layer_gpu_loads(problem, layer, row)) for layer, row in enumerate(start)]
    means = [mean_bound(problem, layer) for layer in range(problem.layers)]
    # Within the gap overall: nothing to solve. Else each layer by its own gap.
    overall = sum(uppers) - sum(means) <= options.relative_gap * sum(uppers)
    gaps = []
    for upper, mean in zip(uppers, means, strict=True):
        close = overall or upper - mean <= options.relative_gap * upper
        gaps.append(0 if close and upper > mean else upper - mean)
        within.append(close and upper > mean)
    order = sorted(range(problem.layers), key=lambda layer: -gaps[layer])
    workers = max(1, min(options.workers, problem.layers))
    budget = _Budget(
        started + options.time_limit_s,
        sum(g > 0 for g in gaps),
        workers,
        options,
        _BUILD_S_PER_VARIABLE * problem.experts * problem.gpus * workers,
    )

    def run(layer: int) -> tuple[list[int], int, bool, bool, tuple[Incumbent, ...]]:
        if gaps[layer] <= 0:
            return start[layer], mean_bound(problem, layer), not within[layer], False, ()
        layer_options = budget.next()
        if layer_options is None:
            return start[layer], mean_bound(problem, layer), False, False, ()
        return _solve_layer(problem, layer, start[layer], layer_options)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        by_layer = dict(zip(order, pool.map(run, order), strict=True))
    results = [by_layer[layer] for layer in range(problem.layers)]
    rows = [r[0] for r in results]
    max_loads = scaled_max_loads(problem, rows)
    optimal = tuple(r[2] for r in results)
    return ExpertPlacementSolution(
        phy2log=tuple(tuple(row) for row in rows),
        status=SolveStatus.OPTIMAL if all(optimal) else SolveStatus.FEASIBLE,
        objective=problem.balance_weight * sum(max_loads),
        bound=problem.balance_weight * sum(r[1] for r in results),
        layer_bounds=tuple(r[1] for r in results),
        max_loads=tuple(max_loads),
        layer_optimal=optimal,
        from_solver=tuple(r[3] for r in results),
        warm_start_objective=objective(problem, start),
        incumbents=tuple(i for r in results for i in r[4]),
        wall_s=time.perf_counter() - started,
    )


def _solve_coupled(
    problem: ExpertPlacementProblem, start: list[list[int]], options: SolveOptions, started: float
) -> ExpertPlacementSolution:
    """One model over every layer, with the hop terms (R = E, so every c = 1)."""
    model = cp_model.CpModel()
    upper = objective(problem, start)
    layers = [
        _add_layer(model, problem, layer, problem.scale * sum(problem.loads[layer]))
        for layer in range(problem.layers)
    ]
    per_node, nodes = problem.gpus_per_node, range(problem.nodes)
    node_of = {
        (layer, e, n): cp_model.LinearExpr.sum(
            [built.x[e, g] for g in range(n * per_node, (n + 1) * per_node)]
        )
        for layer, built in enumerate(layers)
        for e in range(problem.experts)
        for n in nodes
    }
    same_gpu, same_node = [], []
    for i, a in enumerate(problem.affinity):
        for g in range(problem.gpus):
            p = model.new_bool_var(f"p[{i},{g}]")
            model.add_implication(p, layers[a.layer].x[a.src, g])
            model.add_implication(p, layers[a.layer + 1].x[a.dst, g])
            same_gpu.append(a.tokens * p)
        for n in nodes:
            q = model.new_bool_var(f"q[{i},{n}]")
            model.add(q <= node_of[a.layer, a.src, n])
            model.add(q <= node_of[a.layer + 1, a.dst, n])
            same_node.append(a.tokens * q)
    first = layers[0]
    for g in range(problem.gpus - 1):
        if (g + 1) % per_node:
            model.add(first.load[g] >= first.load[g + 1])  # (6) inside a node
    for n in range(problem.nodes - 1):
        model.add(first.load[n * per_node] >= first.load[(n + 1) * per_node])  # (6) nodes
    total = sum(a.tokens for a in problem.affinity)
    hop_cost = (problem.gpu_hop_weight + problem.node_hop_weight) * total
    model.minimize(
        problem.balance_weight * cp_model.LinearExpr.sum([b.z for b in layers])
        + problem.scale
        * (
            hop_cost
            - problem.gpu_hop_weight * cp_model.LinearExpr.sum(same_gpu)
            - problem.node_hop_weight * cp_model.LinearExpr.sum(same_node)
        )
    )
    loads0 = layer_gpu_loads(problem, 0, start[0])
    order = []
    for n in sorted(nodes, key=lambda n: -max(loads0[n * per_node : (n + 1) * per_node])):
        gpus = range(n * per_node, (n + 1) * per_node)
        order.extend(sorted(gpus, key=lambda g: -loads0[g]))
    for built, row in zip(layers, start, strict=True):
        _hint(model, built, problem, _relabel(problem, row, order))
    left = max(options.time_limit_s - (time.perf_counter() - started), 0.05)
    run = solve_model(
        model,
        SolveOptions(
            time_limit_s=left, workers=options.workers, seed=options.seed, log=options.log
        ),
    )
    rows, from_solver, bound = start, False, 0
    optimal = run.status is SolveStatus.OPTIMAL
    if run.has_solution:
        bound = max(0, round(run.solver.best_objective_bound))
        found = [_read(problem, run.solver, built) for built in layers]
        if objective(problem, found) < upper:
            rows, from_solver = found, True
    max_loads = scaled_max_loads(problem, rows)
    means = [mean_bound(problem, layer) for layer in range(problem.layers)]
    return ExpertPlacementSolution(
        phy2log=tuple(tuple(row) for row in rows),
        status=SolveStatus.OPTIMAL if optimal else SolveStatus.FEASIBLE,
        objective=objective(problem, rows),
        bound=max(bound, problem.balance_weight * sum(means)),
        layer_bounds=tuple(means),
        max_loads=tuple(max_loads),
        layer_optimal=(optimal,) * problem.layers,
        from_solver=(from_solver,) * problem.layers,
        warm_start_objective=upper,
        incumbents=run.incumbents,
        wall_s=time.perf_counter() - started,
    )


def solve(
    problem: ExpertPlacementProblem, options: SolveOptions = DEFAULT_OPTIONS
) -> ExpertPlacementSolution:
    """The placement minimising the module docstring's objective within the time limit:
    optimal, or the best found (never worse than the warm start) with its proven bound."""
    started = time.perf_counter()
    start = warm_start(problem)
    if problem.uses_traffic:
        return _solve_coupled(problem, start, options, started)
    return _solve_layers(problem, start, options, started)
