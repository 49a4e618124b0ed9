"""Real estimates of small layouts as plan JSON, for the report tests."""

from __future__ import annotations

from typing import Any

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
