"""Training-loop behaviours beyond the state layout (``frameworks.Runtime``), one by one.

Each test changes one behaviour on the two-GPU validation model and checks the memory or
time moves by exactly what the behaviour holds (sizes from the model's shapes)."""

from __future__ import annotations

import dataclasses

import pytest

from planner.catalog import load_cluster
from planner.cost.attention_backends import backend_rows, backend_speedup
from planner.cost.compute import AttentionShape
from planner.cost.frameworks import Runtime
from planner.cost.measured_two_gpu import (
    layout_from_record,
    model_from_record,
    runtime_from_record,
    two_gpu_inputs,
    two_gpu_records,
    workload_from_record,
)
from planner.cost.memory import _optimizer_temporaries, static_lower_bound, virtual_stages
from planner.measured_runs import estimate_two_gpu_record
from planner.predict import estimate, memory_stages, prepare
from planner.specs.layout import ParallelConfig

GIB = 2**30


def _record(record_id: str) -> dict:
    return next(r for r in two_gpu_records() if r["id"] == record_id)


def _run(record: dict, *, layout: dict | None = None, runtime: dict | None = None, batch=None):
    fields = layout_from_record(record).model_dump(exclude_unset=True) | (layout or {})
    workload = workload_from_record(record)
    if batch is not None:
        workload = workload.model_copy(update={"global_batch": batch})
    return estimate(
        model=model_from_record(record),
        cluster=load_cluster("hgx-h200", gpus=2),
        workload=workload,
        layout=ParallelConfig(**fields),
        framework="pytorch",
        state_layout_name="master",
        optimizer_impl="chunked",
        runtime=dataclasses.replace(runtime_from_record(record), **(runtime or {})),
    )


def _params(record: dict) -> int:
    return record["params_total"]


def _logits(record: dict, tp: int = 1) -> float:
    return record["micro_batch_size"] * record["seq_len"] * record["model"]["vocab"] / tp


def test_ddp_bucket_views_are_the_gradients() -> None:
    record = _record("ddp-1.3B-s4096-mbs1")
    view = _run(record).memory.stages[0]
    copy = _run(record, runtime={"ddp_bucket_view": False}).memory.stages[0]
    # views: the bf16 gradients exist at every moment and nothing else is added
    assert view.gradients_gib == pytest.approx(2 * _params(record) / GIB, abs=2e-3)
    assert copy.gradients_gib < view.gradients_gib


def test_ddp_no_sync_accumulation_adds_one_gradient_copy() -> None:
    record = _record("ddp-1.3B-s4096-mbs1")
    one = _run(record).memory.stages[0]
    four = _run(record, batch=8).memory.stages[0]
    assert four.allocated_gib - one.allocated_gib == pytest.approx(
        2 * _params(record) / GIB, abs=2e-3
    )


def test_fsdp_without_resharding_keeps_every_unit_gathered() -> None:
    record = _record("fsdp-1.3B-s4096-mbs1")
    model = record["model"]["param_counts"]
    reshard = _run(record).memory.stages[0]
    kept = _run(record, runtime={"reshard_after_forward": False}).memory.stages[0]
    largest = model["lm_head"] + model["final_norm"]
    # bf16 gathered copies: every unit instead of the running one and the prefetched next
    expected = 2 * (_params(record) - 2 * largest)
    assert (kept.allocated_gib - reshard.allocated_gib) * GIB == pytest.approx(expected, rel=1e-3)


def test_gpipe_holds_every_microbatch_and_1f1b_at_most_pp() -> None:
    record = _record("pp_1f1b-1.3B-s4096-mbs1-nmb8")
    one_f_one_b = _run(record).memory.stages[0]
    gpipe = _run(record, layout={"pipeline_schedule": "gpipe"}).memory.stages[0]
    assert gpipe.activations_in_flight_gib == pytest.approx(
        4 * one_f_one_b.activations_in_flight_gib, rel=1e-3
    )


def test_pipeline_runtime_keeps_every_microbatch_output() -> None:
    record = _record("pp_1f1b-1.3B-s4096-mbs1-nmb8")
    eight = _run(record).memory.stages[1]
    four = _run(record, batch=4).memory.stages[1]
    none = _run(record, runtime={"pipeline_keeps_outputs": False}).memory.stages[1]
    # bf16 logits of four more micro-batches; without the runtime's outputs, the loop's one
    assert (eight.allocated_gib - four.allocated_gib) * GIB == pytest.approx(
        4 * 2 * _logits(record), rel=1e-3
    )
    assert (eight.allocated_gib - none.allocated_gib) * GIB == pytest.approx(
        7 * 2 * _logits(record), rel=1e-3
    )


def test_freed_gradients_exist_at_the_peak_only_after_a_backward() -> None:
    # 1F1B rank 0 of 2 holds 2 micro-batches; with 2 the first backward comes after the
    # peak, with 4 the peak repeats with the rank's gradients allocated
    two = _run(_record("pp_1f1b-1.3B-s4096-mbs1-nmb2")).memory.stages[0]
    four = _run(_record("pp_1f1b-1.3B-s4096-mbs1-nmb4")).memory.stages[0]
    rank0 = _record("pp_1f1b-1.3B-s4096-mbs1-nmb4")["params_local_per_rank"][0]
    assert (four.allocated_gib - two.allocated_gib) * GIB == pytest.approx(2 * rank0, rel=2e-3)


def test_chunked_optimizer_holds_one_fp32_copy_of_the_largest_chunk() -> None:
    record = _record("fsdp-1.3B-s4096-mbs1")
    prepared = prepare(**two_gpu_inputs(record))
    chunks = virtual_stages(prepared.model, prepared.layout)
    counts = record["model"]["param_counts"]
    largest = counts["lm_head"] + counts["final_norm"]
    # FSDP shards the chunk over the two ranks
    assert _optimizer_temporaries(prepared.ctx, 0.0, 0, chunks) == 4 * largest / 2
    bound = static_lower_bound(prepared.ctx)
    assert bound <= max(stage.total for stage in memory_stages(prepared)) * (1 + 1e-9)


def test_loss_parallel_holds_one_more_fp32_logits_copy() -> None:
    record = _record("tp-1.3B-s4096-mbs4")
    loss_parallel = _run(record).memory.stages[0]
    eager = _run(record, runtime={"loss": "eager"}).memory.stages[0]
    assert (loss_parallel.allocated_gib - eager.allocated_gib) * GIB == pytest.approx(
        4 * _logits(record, tp=2), rel=1e-3
    )


def test_gathered_sequence_parallel_inputs_are_saved_whole() -> None:
    record = _record("tp_manual-1.3B-s4096-mbs4")
    gathered = _run(record).memory.stages[0]
    shard = _run(record, runtime={"sp_saves_gathered": False}).memory.stages[0]
    tokens = record["micro_batch_size"] * record["seq_len"]
    per_layer = 2 * 2 * tokens * record["model"]["dim"]  # attention and MLP inputs, bf16
    layers = record["model"]["n_layers"]
    # each rank keeps the other rank's half too, in every layer and for the output layer
    expected = (layers + 0.5) * per_layer / 2
    difference = (gathered.activations_in_flight_gib - shard.activations_in_flight_gib) * GIB
    assert difference == pytest.approx(expected, rel=1e-3)


def test_repeated_kv_is_saved_at_every_head() -> None:
    record = _record("ddp-1.3B-s4096-mbs1")
    repeated = _run(record).memory.stages[0]
    grouped = _run(record, runtime={"repeat_kv": False}).memory.stages[0]
    shape = record["model"]
    extra_heads = shape["n_heads"] - shape["n_kv_heads"]
    tokens = record["seq_len"]
    expected = shape["n_layers"] * 2 * 2 * tokens * extra_heads * shape["head_dim"]
    difference = (repeated.activations_in_flight_gib - grouped.activations_in_flight_gib) * GIB
    assert difference == pytest.approx(expected, rel=1e-3)


def test_cudnn_attention_rate_is_the_measured_ratio_at_a_measured_shape() -> None:
    rows = [r for r in backend_rows("h200-sxm") if r.batch == 1 and r.seq_len == 16384]
    cudnn = next(r for r in rows if r.backend == "cudnn" and r.heads == 16)
    flash = next(r for r in rows if r.backend == "flash" and r.heads == 16)
    shape = AttentionShape(
        batch=1, heads=16, kv_heads=16, seq_len=16384, head_dim=128, causal=True,
        backward=True, backend="cudnn",
    )  # fmt: skip
    expected = flash.backward.median_s / cudnn.backward.median_s
    assert backend_speedup("h200-sxm", shape) == pytest.approx(expected, rel=1e-9)
    assert backend_speedup("h200-sxm", dataclasses.replace(shape, backend="flash")) == 1.0
    assert backend_speedup("a100-sxm-40gb", shape) is None


def test_cudnn_backend_shortens_long_sequence_steps() -> None:
    record = _record("fsdp-1.3B-s32768-mbs1")
    cudnn = _run(record).time.step_time_s
    flash = _run(record, runtime={"attention_backend": "flash"}).time.step_time_s
    assert cudnn < 0.8 * flash


def test_gpipe_has_no_interleaved_form() -> None:
    with pytest.raises(ValueError, match="pipeline_schedule gpipe"):
        ParallelConfig(pp=2, vpp=2, pipeline_schedule="gpipe")


def test_default_runtime_changes_nothing() -> None:
    record = _record("ddp-1.3B-s4096-mbs1")
    assert Runtime() == Runtime(attention_backend=None)
    plain = estimate(
        model=model_from_record(record),
        cluster=load_cluster("hgx-h200", gpus=2),
        workload=workload_from_record(record),
        layout=layout_from_record(record),
        framework="pytorch",
    )
    assert plain.config.runtime == Runtime()


def test_every_validation_row_within_the_memory_target() -> None:
    """Regression on the committed two-GPU steps: every rank within 5% of its peak."""
    for record in two_gpu_records():
        stages = estimate_two_gpu_record(record).memory.stages
        predicted = [s.allocated_gib for s in stages] * (2 // len(stages))
        for ours, measured in zip(predicted, record["peak_allocated_bytes_per_rank"], strict=True):
            assert abs(ours * GIB / measured - 1) <= 0.05, record["id"]
