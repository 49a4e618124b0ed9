"""The two-GPU validation steps as autopar inputs: model, layout, runtime of each record.

The records (``hardware_db/profiles/h200-sxm/2026-12-03-h200x2-validation``, whose
README describes the harness) were measured by a plain-PyTorch harness autopar did not
write. Each is predicted through ``planner.estimate`` (``planner.measured_runs``, above
``planner.predict``) with the harness described in autopar's own terms, nothing fitted:

* framework ``pytorch``, state layout ``master`` (bf16 weights and gradients in the
  model, fp32 master weights and moments in the optimizer, gradients freed after the
  step), optimizer ``chunked`` (a fused AdamW one chunk at a time on transient fp32
  gradient copies);
* runtime: cuDNN attention (PyTorch's default on this machine) on K/V repeated to every
  query head; the loop holds the logits through the backward; DDP with
  ``gradient_as_bucket_view``; FSDP2 (ZeRO-3 sharding of the ``master`` states) with or
  without resharding after forward; DTensor tensor parallelism with ``loss_parallel``
  (gathered sequence-parallel inputs saved whole); the Megatron-style plain-tensor
  tensor parallelism with hand-written all-gathers (whose gathered inputs autograd saves
  too) and an in-place vocab-parallel cross entropy that consumes the logits;
  ``torch.distributed.pipelining`` GPipe or 1F1B keeping every micro-batch's output.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import hardware_db
from planner.catalog import load_cluster
from planner.cost.frameworks import Runtime
from planner.specs.layout import ParallelConfig
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec

GPU_ID = "h200-sxm"
CLUSTER = "hgx-h200"
PROFILE = "2026-12-03-h200x2-validation"
STEPS_FILE = "train_steps.json"
MODES = ("ddp", "fsdp", "fsdp_noreshard", "tp", "tp_manual", "pp_gpipe", "pp_1f1b")
HOST_BOUND_MODES = {
    "tp": "DTensor dispatch: every op of every layer goes through sharding propagation on "
    "the host, which keeps the GPU idle most of the step in eager mode"
}
REPEAT_SPREAD_PCT = 10.0
"""A configuration measured in several sessions whose median step times spread by more
than this is launch-bound (device-bound steps repeat within 1-3%): the host's pace, not
the GPU's, set its time."""


@cache
def two_gpu_records() -> tuple[dict[str, Any], ...]:
    path = hardware_db.profiles_dir() / GPU_ID / PROFILE / STEPS_FILE
    return tuple(json.loads(path.read_text()))


def model_from_record(record: dict[str, Any]) -> ModelSpec:
    shape = record["model"]
    return ModelSpec(
        name=f"llama-{shape['name']}",
        family="llama",
        num_layers=shape["n_layers"],
        hidden_size=shape["dim"],
        num_attention_heads=shape["n_heads"],
        num_kv_heads=shape["n_kv_heads"],
        ffn_hidden_size=shape["ffn_dim"],
        vocab_size=shape["vocab"],
        max_position_embeddings=max(record["seq_len"], 8192),
        rope_theta=shape["rope_theta"],
        norm_epsilon=shape["norm_eps"],
        tie_embeddings=shape["tied_embeddings"],
    )


def layout_from_record(record: dict[str, Any]) -> ParallelConfig:
    mode, full = record["mode"], record["recompute"] == "full"
    fields: dict[str, Any] = {
        "tp": record["tp"],
        "pp": record["pp"],
        "dp": record["dp"],
        "mbs": record["micro_batch_size"],
        "recompute": record["recompute"],
        "recompute_method": "uniform" if full else None,
        "recompute_num_layers": 1 if full else None,
        "sequence_parallel": record["sequence_parallel"],
    }
    if mode.startswith("fsdp"):
        fields["zero_stage"] = 3
    if mode == "pp_gpipe":
        fields["pipeline_schedule"] = "gpipe"
    return ParallelConfig(**fields)


def runtime_from_record(record: dict[str, Any]) -> Runtime:
    mode = record["mode"]
    return Runtime(
        attention_backend="cudnn",
        repeat_kv=True,
        loss={"tp": "loss_parallel", "tp_manual": "vocab_parallel"}.get(mode, "eager"),
        sp_saves_gathered=mode in ("tp", "tp_manual"),
        ddp_bucket_view=True,
        reshard_after_forward=mode != "fsdp_noreshard",
        pipeline_keeps_outputs=mode.startswith("pp_"),
        loop_keeps_logits=mode != "tp_manual",
    )


def workload_from_record(record: dict[str, Any]) -> WorkloadSpec:
    return WorkloadSpec(seq_len=record["seq_len"], global_batch=record["global_batch_seqs"])


def two_gpu_inputs(record: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``planner.estimate`` / ``prepare`` for a record (the
    prediction itself: ``planner.measured_runs.estimate_two_gpu_record``)."""
    return {
        "model": model_from_record(record),
        "cluster": load_cluster(CLUSTER, gpus=record["world_size"]),
        "workload": workload_from_record(record),
        "layout": layout_from_record(record),
        "framework": "pytorch",
        "state_layout_name": "master",
        "optimizer_impl": "chunked",
        "runtime": runtime_from_record(record),
    }


def configuration(record: dict[str, Any]) -> str:
    """The record's configuration without its session suffix (``-prof``, ``-rep2``)."""
    name = record["id"]
    for suffix in ("-prof", "-rep2"):
        name = name.removesuffix(suffix)
    return name


def host_bound_reason(record: dict[str, Any], records: tuple[dict[str, Any], ...]) -> str | None:
    """Why a record's step time was set by the host, or None if it was device-bound.

    A mode that is host-bound by construction (``HOST_BOUND_MODES``), or a micro-batch
    shape (mode, micro-batch, sequence) whose repeated measurements spread by more than
    ``REPEAT_SPREAD_PCT``: a launch-bound step's time follows the host's speed that
    session, so its repeats differ where device-bound ones agree within 1-3%.
    """
    if record["mode"] in HOST_BOUND_MODES:
        return HOST_BOUND_MODES[record["mode"]]
    shape = _microbatch_shape(record)
    times: dict[str, list[float]] = {}
    for other in records:
        if _microbatch_shape(other) == shape and other["num_microbatches"] == 1:
            times.setdefault(configuration(other), []).append(other["step_time_s_median"])
    for config, values in times.items():
        spread = 100 * (max(values) / min(values) - 1)
        if len(values) > 1 and spread > REPEAT_SPREAD_PCT:
            return (
                f"launch-bound micro-batch: {config} measured {len(values)} times spread "
                f"{spread:.0f}% ({', '.join(f'{v * 1e3:.0f}' for v in sorted(values))} ms)"
            )
    return None


def _microbatch_shape(record: dict[str, Any]) -> tuple:
    return (record["mode"], record["micro_batch_size"], record["seq_len"], record["recompute"])
