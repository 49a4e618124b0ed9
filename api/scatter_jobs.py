"""Scatter jobs: canonical inputs of ``POST /v1/scatter`` and their run in a worker.

A scatter job shares the job table, queue and worker processes with plan jobs; its
canonical inputs carry ``"kind": "scatter"`` (so their hash never meets a plan's) and the
resolved lengths (sampled at submission when a distribution is named, so the stored job
says exactly what was solved). ``api.worker`` runs it with :func:`run_scatter`.
"""

from __future__ import annotations

from typing import Any

from planner.scattering import scatter
from planner.specs.hardware import ClusterSpec
from planner.specs.model import ModelSpec

KIND = "scatter"
WORKER_OVERHEAD_S = 20.0
"""Job time limit beyond the solver's: building the per-sequence cost (about 1.5 s per
model and cluster on one core), the blaster, the greedy and the baselines."""


def is_scatter(inputs: dict[str, Any]) -> bool:
    return inputs.get("kind") == KIND


def run_scatter(inputs: dict[str, Any]) -> dict[str, Any]:
    """``planner.scatter`` on a job's canonical inputs: ``autopar scatter --json``."""
    result = scatter(
        model=ModelSpec.model_validate(inputs["model"]),
        cluster=ClusterSpec.model_validate(inputs["cluster"]),
        batches=inputs["batches"],
        max_seq_len=inputs["max_seq_len"],
        cp_algo=inputs["cp_algo"],
        precision=inputs["precision"],
        time_limit_s=inputs["time_limit_s"],
        lengths_source=inputs["lengths_source"],
    )
    return result.model_dump(mode="json")
