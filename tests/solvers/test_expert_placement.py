"""Expert placement: a hand-solved instance, the brute force on random tiny instances,
the placement's invariants, never worse than the greedy balancer, and validation."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solvers._cpsat import SolveOptions, SolveStatus
from solvers.expert_greedy import balanced_packing, contiguous, eplb, replicate
from solvers.expert_placement import solve
from solvers.expert_problem import (
    Affinity,
    ExpertPlacementProblem,
    check_placement,
    gpu_loads,
    objective,
)
from solvers.reference_experts import expert_placement_brute_force

OPTIONS = SolveOptions(time_limit_s=20.0, workers=1)


def test_hand_solved_instance_replicates_the_hot_expert_on_both_gpus() -> None:
    # 4 experts with loads 2, 2, 2, 6 on 2 GPUs of 3 slots (2 redundant), at most 2
    # replicas each. Contiguous (slot r holds r mod 4): GPU 0 {0, 1, 2}, GPU 1 {3, 0, 1};
    # experts 0 and 1 have 2 replicas, so GPU 0 computes 1 + 1 + 2 = 4 and GPU 1 6 + 1 + 1
    # = 8 tokens. Optimal: expert 3 on both GPUs (3 tokens each) and one of 0..2 twice,
    # e.g. {3, 0, 1} and {3, 0, 2}: 3 + 1 + 2 = 6 on each, the mean 12 / 2: optimal.
    # In units of 1/Λ token, Λ = lcm(1, 2) = 2: 12 against contiguous 16.
    problem = ExpertPlacementProblem(loads=((2, 2, 2, 6),), gpus=2, slots_per_gpu=3, max_replicas=2)
    solution = solve(problem, OPTIONS)
    assert solution.status is SolveStatus.OPTIMAL
    assert solution.objective == solution.bound == 12
    assert objective(problem, contiguous(problem)) == 16
    assert solution.phy2log[0].count(3) == 2


@st.composite
def _problems(draw: st.DrawFn, traffic: bool = False) -> ExpertPlacementProblem:
    gpus = draw(st.integers(1, 3))
    nodes = draw(st.sampled_from([n for n in (1, 2, 3) if gpus % n == 0]))
    experts = draw(st.integers(gpus, 4 if not traffic else 3))
    if traffic:
        if experts % gpus:
            experts = gpus
        slots, replicas = experts // gpus, 1
    else:
        least = -(-experts // gpus)
        slots = draw(st.integers(least, max(least, 3)))
        fewest = -(-slots * gpus // experts)
        replicas = draw(st.integers(fewest, max(fewest, min(3, slots * gpus - experts + 1))))
    layers = draw(st.integers(1, 2))
    loads = draw(
        st.lists(
            st.lists(st.integers(0, 30), min_size=experts, max_size=experts),
            min_size=layers,
            max_size=layers,
        )
    )
    affinity: list[Affinity] = []
    if traffic and layers > 1:
        entries = draw(
            st.lists(
                st.tuples(
                    st.integers(0, experts - 1), st.integers(0, experts - 1), st.integers(1, 20)
                ),
                max_size=4,
            )
        )
        affinity = [Affinity(0, e, f, t) for e, f, t in entries]
    return ExpertPlacementProblem(
        loads=loads,
        gpus=gpus,
        nodes=nodes,
        slots_per_gpu=slots,
        max_replicas=replicas,
        affinity=affinity,
        gpu_hop_weight=draw(st.integers(0, 2)) if traffic else 0,
        node_hop_weight=draw(st.integers(0, 2)) if traffic else 0,
    )


def _check_invariants(
    problem: ExpertPlacementProblem, phy2log: tuple[tuple[int, ...], ...]
) -> None:
    check_placement(problem, phy2log)  # every expert hosted, R slots, at most K replicas
    # Replica shares sum to each expert's load, so GPU loads sum to the layer's tokens.
    per_gpu = gpu_loads(np.asarray(problem.loads), np.asarray(phy2log), problem.gpus)
    assert np.allclose(per_gpu.sum(axis=1), np.asarray(problem.loads).sum(axis=1))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_problems())
def test_balance_optimum_equals_brute_force(problem: ExpertPlacementProblem) -> None:
    solution = solve(problem, OPTIONS)
    assert solution.status is SolveStatus.OPTIMAL
    assert Fraction(solution.objective, problem.scale) == expert_placement_brute_force(problem)
    assert solution.bound == solution.objective
    _check_invariants(problem, solution.phy2log)
    for baseline in (eplb(problem), eplb(problem, hierarchical=False), contiguous(problem)):
        if max(np.bincount(row).max() for row in baseline) <= problem.max_replicas:
            assert solution.objective <= objective(problem, baseline)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_problems(traffic=True))
def test_traffic_optimum_equals_brute_force(problem: ExpertPlacementProblem) -> None:
    solution = solve(problem, OPTIONS)
    assert solution.status is SolveStatus.OPTIMAL
    assert Fraction(solution.objective, problem.scale) == expert_placement_brute_force(problem)
    _check_invariants(problem, solution.phy2log)


def test_memory_capacity_is_checked_with_the_arithmetic() -> None:
    with pytest.raises(ValueError, match=r"memory_bytes: 2 slots x 30 bytes .* = 60 bytes > 50"):
        ExpertPlacementProblem(
            loads=((1, 1, 1, 1), (1, 1, 1, 1)),
            gpus=2,
            expert_bytes=(10, 20),
            memory_bytes=50,
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpus": 3}, "4 experts do not divide over 3 GPUs"),
        ({"gpus": 2, "slots_per_gpu": 3, "max_replicas": 1}, "exceed 4 experts x max_replicas 1"),
        ({"gpus": 2, "nodes": 3}, r"nodes \(3\) must divide gpus \(2\)"),
        (
            {
                "gpus": 4,
                "slots_per_gpu": 2,
                "max_replicas": 2,
                "gpu_hop_weight": 1,
                "affinity": (Affinity(0, 0, 1, 5),),
            },
            "traffic objective places one copy",
        ),
    ],
)
def test_invalid_problems_name_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExpertPlacementProblem(loads=((1, 2, 3, 4), (4, 3, 2, 1)), **kwargs)


def test_eplb_replicates_by_load_per_replica_and_packs_equal_counts() -> None:
    assert replicate(np.array([9.0, 3.0, 1.0]), 6).tolist() == [4, 1, 1]
    packs = balanced_packing(np.array([5.0, 4.0, 3.0, 3.0, 2.0, 1.0]), 2)
    assert np.bincount(packs).tolist() == [3, 3]


def test_hierarchical_eplb_keeps_each_group_on_one_node() -> None:
    rng = np.random.default_rng(0)
    problem = ExpertPlacementProblem(
        loads=rng.integers(1, 100, (2, 16)).tolist(),
        gpus=4,
        nodes=2,
        slots_per_gpu=5,
        max_replicas=4,
        num_groups=4,
    )
    for row in eplb(problem):
        node_of_group: dict[int, set[int]] = {}
        for r, e in enumerate(row):
            node_of_group.setdefault(e // 4, set()).add(r // 10)
        assert all(len(nodes) == 1 for nodes in node_of_group.values())
    check_placement(problem, eplb(problem))
