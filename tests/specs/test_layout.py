"""ParallelConfig rules, data-parallel filling and the model/cluster/workload checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from planner.errors import SpecError
from planner.specs import ClusterSpec, ModelSpec, MoESpec, ParallelConfig, WorkloadSpec
from planner.specs.hardware import GPUSpec, LinkSpec, PeakTflops
from planner.specs.layout import layout_violations, resolve_data_parallel, stage_layer_counts


def _cluster(num_gpus: int) -> ClusterSpec:
    gpu = GPUSpec(
        id="g",
        name="G",
        vendor="nvidia",
        architecture="x",
        memory_gib=80,
        hbm_bandwidth_gbps=3000,
        peak_tflops=PeakTflops(fp32=60, bf16=900, fp16=900),
        source="https://example.invalid/datasheet",
    )
    link = LinkSpec(
        id="l",
        name="L",
        kind="nvlink",
        scope="intra_node",
        bandwidth_gbps=400,
        latency_us=2,
        source="https://example.invalid/link",
    )
    return ClusterSpec(
        name="c",
        gpu=gpu,
        num_gpus=num_gpus,
        gpus_per_node=8,
        intra_node=link,
        inter_node=link,
        nics_per_node=8,
    )


def _violations(
    model: ModelSpec, layout: ParallelConfig, *, gpus: int = 64, seq_len: int = 256, batch: int = 64
) -> list[str]:
    resolved = resolve_data_parallel(layout, num_gpus=gpus)
    violations = layout_violations(
        model=model,
        cluster=_cluster(gpus),
        workload=WorkloadSpec(seq_len=seq_len, global_batch=batch),
        layout=resolved,
    )
    return [violation.message for violation in violations]


def test_dp_fills_the_remaining_gpus() -> None:
    assert resolve_data_parallel(ParallelConfig(tp=8, pp=4), num_gpus=64).dp == 2


def test_gpu_count_must_divide_by_model_parallel_size() -> None:
    with pytest.raises(SpecError, match=r"tp x cp x pp = 3 x 1 x 1"):
        resolve_data_parallel(ParallelConfig(tp=3), num_gpus=8)
    with pytest.raises(SpecError, match="cluster has 8 GPUs"):
        resolve_data_parallel(ParallelConfig(tp=2, dp=2), num_gpus=8)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sequence_parallel": True}, "sequence_parallel requires tp > 1"),
        ({"tp": 2, "tp_comm_overlap": True}, "tp_comm_overlap requires sequence_parallel"),
        ({"distributed_optimizer": True, "zero_stage": 3}, "cannot be combined"),
        ({"overlap_param_gather": True}, "overlap_param_gather requires"),
        ({"recompute": "selective", "recompute_num_layers": 2}, "apply only to recompute 'full'"),
        ({"vpp": 2}, "vpp > 1 requires pp > 1"),
        ({"tp": 0}, "tp"),
    ],
)
def test_layout_only_rules(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ParallelConfig(**fields)


def test_heads_and_groups_must_divide_by_tp(tiny_model: ModelSpec) -> None:
    problems = _violations(tiny_model, ParallelConfig(tp=4))
    assert any("num_kv_heads (2) must be divisible by tp (4)" in p for p in problems)
    assert _violations(tiny_model, ParallelConfig(tp=2)) == []


def test_layers_must_divide_by_pp_and_vpp(tiny_model: ModelSpec) -> None:
    assert any("divisible by pp (8)" in p for p in _violations(tiny_model, ParallelConfig(pp=8)))
    assert any("vpp (4)" in p for p in _violations(tiny_model, ParallelConfig(pp=2, vpp=4)))


def test_uneven_split_counts(tiny_model: ModelSpec) -> None:
    model = tiny_model.model_copy(update={"num_layers": 10})
    layout = ParallelConfig(pp=4, first_stage_layers=2, last_stage_layers=2)
    assert stage_layer_counts(model, layout) == [2, 3, 3, 2]
    with pytest.raises(SpecError, match="middle layers must divide evenly"):
        stage_layer_counts(model, ParallelConfig(pp=4, first_stage_layers=1, last_stage_layers=2))


def test_middle_stages_of_an_uneven_split_divide_by_vpp(tiny_model: ModelSpec) -> None:
    # 32 layers, pp 4, vpp 2: first 2 and last 4 leave 26 layers, 13 per middle stage
    model = tiny_model.model_copy(update={"num_layers": 32})
    layout = ParallelConfig(pp=4, vpp=2, first_stage_layers=2, last_stage_layers=4)
    problems = _violations(model, layout, gpus=4)
    assert any("layers per middle stage (13) must be divisible by vpp (2)" in p for p in problems)
    fine = ParallelConfig(pp=4, vpp=2, first_stage_layers=4, last_stage_layers=4)
    assert not any("middle stage" in p for p in _violations(model, fine, gpus=4))


def test_batch_and_context_rules(tiny_model: ModelSpec) -> None:
    problems = _violations(tiny_model, ParallelConfig(mbs=3), batch=64)
    assert any("mbs x dp = 3 x 64" in p for p in problems)
    problems = _violations(tiny_model, ParallelConfig(cp=4), seq_len=100, gpus=64)
    assert any("2 x cp = 8" in p for p in problems)


def test_expert_rules(tiny_model: ModelSpec) -> None:
    moe = tiny_model.model_copy(
        update={"moe": MoESpec(num_experts=6, top_k=2, expert_ffn_hidden_size=64)}
    )
    problems = _violations(moe, ParallelConfig(ep=4, tp=2))
    assert any("num_experts (6) must be divisible by ep (4)" in p for p in problems)
    assert any("sequence_parallel must be on" in p for p in problems)
    assert any("requires an MoE model" in p for p in _violations(tiny_model, ParallelConfig(ep=2)))


def test_workload_batch_in_tokens() -> None:
    workload = WorkloadSpec(seq_len=8192, global_batch_tokens=16 * 2**20)
    assert workload.sequences_per_step == 2048
    with pytest.raises(ValidationError, match="multiple of seq_len"):
        WorkloadSpec(seq_len=8192, global_batch_tokens=16_000_000)
    with pytest.raises(ValidationError, match="give global_batch"):
        WorkloadSpec(seq_len=8192)


def test_cluster_sizes() -> None:
    assert _cluster(2).nodes == 1 and _cluster(2).gpus_in_node == 2
    assert _cluster(64).nodes == 8
    with pytest.raises(ValidationError, match="multiple of gpus_per_node"):
        _cluster(12)
