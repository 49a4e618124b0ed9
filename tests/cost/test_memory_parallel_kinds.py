"""Expert, context parallelism and framework buffers in the memory model."""

from __future__ import annotations

import pytest

from planner import ParallelConfig, WorkloadSpec, estimate, load_cluster, load_model
from planner.cost.frameworks import implementation, state_layout
from planner.cost.reserve import DEEPSPEED_REDUCE_BUCKET_ELEMENTS
from planner.graph.build import build_graph

GIB = 2**30


def _stage(model: str, gpus: int, layout: ParallelConfig, **kwargs):
    result = estimate(
        model=load_model(model),
        cluster=load_cluster("dgx-h100", gpus=gpus),
        workload=WorkloadSpec(seq_len=4096, global_batch=kwargs.pop("batch", 64)),
        layout=layout,
        **kwargs,
    )
    return result.memory.stages[0]


def _transient(stage) -> float:
    held = stage.weights_gib + stage.gradients_gib + stage.optimizer_gib + stage.activations_gib
    return stage.allocated_gib - held


def test_expert_parallel_divides_the_routed_experts() -> None:
    model = load_model("mixtral-8x7b")
    graph = build_graph(
        model,
        seq_len=4096,
        implementation=implementation(
            framework="megatron", layout=state_layout("megatron"), precision="bf16"
        ),
    )
    routed = sum(layer.params.expert for layer in graph.layers)
    one = _stage("mixtral-8x7b", 8, ParallelConfig(ep=1))
    eight = _stage("mixtral-8x7b", 8, ParallelConfig(ep=8))
    # bf16 weights: 2 bytes per parameter; ep 8 keeps one expert of eight per GPU
    saved = (one.weights_gib - eight.weights_gib) * GIB
    assert saved == pytest.approx(2 * routed * 7 / 8, rel=1e-3)


def test_context_parallel_halves_activations_and_shards_optimizer() -> None:
    base = _stage("llama-3.1-8b", 8, ParallelConfig(tp=2, pp=1, distributed_optimizer=True))
    cp2 = _stage("llama-3.1-8b", 8, ParallelConfig(tp=2, cp=2, distributed_optimizer=True))
    # cp=2 halves the local tokens, so every per-token term halves
    assert cp2.activations_in_flight_gib == pytest.approx(
        base.activations_in_flight_gib / 2, rel=0.01
    )
    # dp x cp is 4 in both layouts, so the distributed optimizer shards alike
    assert cp2.optimizer_gib == pytest.approx(base.optimizer_gib, rel=1e-3)


def test_deepspeed_zero_buckets_are_counted() -> None:
    zero0 = _stage("llama-3.1-8b", 8, ParallelConfig(zero_stage=0), framework="deepspeed")
    zero1 = _stage("llama-3.1-8b", 8, ParallelConfig(zero_stage=1), framework="deepspeed")
    bucket_gib = DEEPSPEED_REDUCE_BUCKET_ELEMENTS * 2 / GIB
    # ZeRO-1 shards 12 of the 16 bytes per parameter over 8 GPUs but adds the bucket
    # (transients are what the allocator holds beyond states and activations)
    assert _transient(zero1) - _transient(zero0) == pytest.approx(bucket_gib, abs=0.01)
    assert zero1.optimizer_gib == pytest.approx(zero0.optimizer_gib / 8, rel=1e-3)
