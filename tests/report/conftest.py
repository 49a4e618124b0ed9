"""Plans to draw: real estimates of small layouts (one stage; four stages interleaved)."""

from __future__ import annotations

from typing import Any

import pytest

from planner import ParallelConfig, WorkloadSpec, estimate, load_cluster, load_model


def estimate_json(
    model: str, *, gpus: int, seq_len: int, global_batch: int, **layout: Any
) -> dict[str, Any]:
    result = estimate(
        model=load_model(model),
        cluster=load_cluster("dgx-h100", gpus=gpus),
        workload=WorkloadSpec(seq_len=seq_len, global_batch=global_batch),
        layout=ParallelConfig(**layout),
    )
    return result.model_dump(mode="json")


@pytest.fixture(scope="session")
def interleaved_plan() -> dict[str, Any]:
    """Llama-3.1-8B on 8 GPUs: tp 2, pp 4 with 2 virtual stages, 8 micro-batches."""
    return estimate_json(
        "llama-3.1-8b", gpus=8, seq_len=4096, global_batch=8, tp=2, pp=4, vpp=2,
        sequence_parallel=True,
    )  # fmt: skip


@pytest.fixture(scope="session")
def single_stage_plan() -> dict[str, Any]:
    return estimate_json("llama-3.1-8b", gpus=8, seq_len=4096, global_batch=64, tp=2)
