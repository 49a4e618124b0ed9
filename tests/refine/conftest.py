"""Fixtures for the refinement tests: one small planning problem, solved once.

The model (8 layers of width 2048) on 8 H100s with tp and pp pinned to 2 plans in about
a second and leaves the refinement every kind of knob (micro-batch, vpp, stage split,
recompute, TP overlap, DP overlaps). A headroom of 66 GiB makes the larger micro-batches
not fit, and a global batch of 48 sequences makes some interleaved layouts illegal
(3 micro-batches on 2 stages: interleaved stages need a multiple of pp), so trials of
every status occur.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from planner.catalog import load_cluster
from planner.plan import PlanRequest, PlanResult, plan
from planner.refine import RefineProblem, seeds_from_plans
from planner.specs import ModelSpec, WorkloadSpec

HEADROOM_GIB = 66.0
MODEL = ModelSpec(
    name="refine-test",
    num_layers=8,
    hidden_size=2048,
    num_attention_heads=16,
    num_kv_heads=4,
    ffn_hidden_size=8192,
    vocab_size=32000,
    max_position_embeddings=8192,
    rope_theta=10000.0,
)
CLUSTER = load_cluster("dgx-h100", gpus=8)
WORKLOAD = WorkloadSpec(seq_len=4096, global_batch=48)


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="session")
def solver_result() -> PlanResult:
    return plan(
        PlanRequest(
            model=MODEL,
            cluster=CLUSTER,
            workload=WORKLOAD,
            fixed={"tp": 2, "pp": 2},
            headroom_gib=HEADROOM_GIB,
            top_k=3,
            # the solver's fastest first: its seed is the edge the outcome tests push over
            risk="neutral",
        )
    )


@pytest.fixture
def make_problem(solver_result: PlanResult) -> Callable[..., RefineProblem]:
    """The problem of the solver's plans, for the given objectives."""

    def make(objectives: tuple[str, ...] = ("throughput",)) -> RefineProblem:
        return RefineProblem(
            model=MODEL,
            cluster=CLUSTER,
            workload=WORKLOAD,
            headroom_gib=HEADROOM_GIB,
            objectives=objectives,
            seeds=seeds_from_plans(solver_result.plans),
        )

    return make


@pytest.fixture
def problem(make_problem: Callable[..., RefineProblem]) -> RefineProblem:
    return make_problem()


@pytest.fixture
def storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"
