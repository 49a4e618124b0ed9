"""autopar's prediction of a measured training step: ``estimate`` on the record's run.

It sits above ``planner.predict`` because ``predict`` reads the time model's rates, which
``planner.cost.rates`` calibrates on the single-GPU records (through
``planner.cost.measured``, which turns a record into specs and work; the two-GPU records
through ``planner.cost.measured_two_gpu``). The dependency goes one way: cost -> predict
-> this module.
"""

from __future__ import annotations

from typing import Any

from planner.catalog import load_cluster
from planner.cost.frameworks import DEFAULT_RUNTIME, Runtime
from planner.cost.measured import (
    MEASURED_CLUSTERS,
    RecordConfig,
    flash_attention,
    layout_from_record,
    model_from_record,
    optimizer_kind,
    record_framework,
    state_layout_name,
)
from planner.cost.measured_two_gpu import two_gpu_inputs
from planner.predict import Estimate, estimate
from planner.specs.workload import WorkloadSpec

MEGATRON_STEP_RUNTIME = Runtime(gradient_accumulation_fusion=False)
"""How ``benchmarks/measure/megatron_step.py`` runs Megatron-Core: it builds the
``TransformerConfig`` itself, whose ``gradient_accumulation_fusion`` defaults to off
(megatron-core 0.16.1 ``model_parallel_config.py``; Megatron-LM's argument parser is what
turns it on), and the local linears could not fuse without Apex, which was not installed."""


def estimate_record(record: dict[str, Any], *, gpu_id: str) -> Estimate:
    """``planner.estimate`` of the run a record measured, on one GPU of ``gpu_id``: its
    framework, shape, sequence, micro-batch, accumulation, recomputation, precision,
    attention and optimizer."""
    config = RecordConfig.of(record["config"])
    framework = record_framework(config)
    return estimate(
        model=model_from_record(config),
        cluster=load_cluster(MEASURED_CLUSTERS[gpu_id], gpus=1),
        workload=WorkloadSpec(
            seq_len=config.model.seq_len, global_batch=config.mbs * config.grad_accum
        ),
        layout=layout_from_record(config),
        framework=framework,
        state_layout_name=state_layout_name(config),
        flash_attention=flash_attention(config),
        optimizer_impl=optimizer_kind(config),  # type: ignore[arg-type]
        layer_spec="local" if framework == "megatron" else "transformer_engine",
        runtime=MEGATRON_STEP_RUNTIME if framework == "megatron" else DEFAULT_RUNTIME,
    )


def estimate_two_gpu_record(record: dict[str, Any]) -> Estimate:
    """``planner.estimate`` of the step a two-GPU record measured, on two GPUs of one H200
    node (``planner.cost.measured_two_gpu.two_gpu_inputs``)."""
    return estimate(**two_gpu_inputs(record))
