"""The committed allocator-snapshot runs, and autopar's own trace of each run's step.

A snapshot profile (``hardware_db/profiles/<gpu>/<id>/``) holds ``<run>.pickle.gz`` files
and ``results.json`` with one record per run: ``max_memory_reserved`` and
``max_memory_allocated`` of the whole run, and whether it ran with expandable segments.
The simulation of a snapshot's own allocation sequence is checked against those; the
fits verdict needs more, the simulation of *autopar's* trace of the same step
(``planner.memplan.lifetimes.stage_trace``), since that is all it has for a layout nobody
ran. ``own_trace_peak`` builds that trace from a run's record as the run's harness ran it:

* Megatron-Core (megatron_step's ``config`` block: the shape, micro-batch, accumulation,
  recompute, the routed experts of an MoE run) as ``planner.measured_runs`` predicts
  Megatron-Core steps: the ``megatron`` state layout, the local layer spec's unfused
  attention, foreach AdamW;
* plain PyTorch (``benchmarks/measure/allocator_snapshots.py``: ``llama.Llama`` or its MoE
  variant, the record's shape and batch, one step per micro-batch, per-block
  checkpointing when ``recompute``) as the ``pytorch`` framework with fp32 weights under
  bf16 autocast (the ``autocast`` state layout), foreach AdamW (``torch.optim.AdamW``'s
  default), flash attention (``scaled_dot_product_attention`` on bf16 inputs), full
  recompute of every layer for checkpointing, and the training loop holding the logits
  through the backward (``loss.backward()`` before ``del logits``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hardware_db
from planner.catalog import load_cluster
from planner.cost.frameworks import Runtime
from planner.cost.measured import MEASURED_CLUSTERS, RecordConfig, layout_from_record
from planner.cost.measured import model_from_record as shape_from_record
from planner.memplan.allocator import simulate
from planner.memplan.lifetimes import stage_trace
from planner.memplan.trace import live_curve
from planner.predict import Prepared, prepare
from planner.specs.model import ModelSpec, MoESpec
from planner.specs.workload import WorkloadSpec

MEGATRON_SNAPSHOTS = ("h200-sxm", "2026-12-03-h200-megatron-allocator-snapshots")
"""(GPU, profile) of the Megatron-Core allocator snapshots."""
PYTORCH_SNAPSHOTS = ("h200-sxm", "2026-12-03-h200-allocator-snapshots")
"""(GPU, profile) of the plain-PyTorch allocator snapshots."""


@dataclass(frozen=True)
class SnapshotRun:
    """One recorded run: its snapshot file and what the allocator reported (bytes)."""

    name: str
    path: Path
    gpu_id: str
    measured_reserved: int
    measured_allocated: int
    expandable_segments: bool
    record: dict[str, Any]


@dataclass(frozen=True)
class OwnTracePeak:
    """autopar's trace of a run's step through the allocator simulation (bytes)."""

    live: int
    simulated_reserved: int
    simulated_allocated: int
    error: float
    """simulated_reserved / measured reserved - 1."""
    allocated_error: float
    """simulated_allocated / measured allocated - 1."""


def profile_dir(where: tuple[str, str]) -> Path:
    return hardware_db.profiles_dir() / where[0] / where[1]


def snapshot_runs(where: tuple[str, str]) -> tuple[SnapshotRun, ...]:
    """The runs of a snapshot profile that completed, in file-name order."""
    folder = profile_dir(where)
    records = json.loads((folder / "results.json").read_text())["runs"]
    by_name = {r["run"]: r for r in records if "error" not in r}
    runs = []
    for path in sorted(folder.glob("*.pickle.gz")):
        record = by_name[path.name.removesuffix(".pickle.gz")]
        runs.append(
            SnapshotRun(
                name=record["run"],
                path=path,
                gpu_id=where[0],
                measured_reserved=int(record["max_memory_reserved"]),
                measured_allocated=int(record["max_memory_allocated"]),
                expandable_segments=bool(record["expandable_segments"]),
                record=record,
            )
        )
    return tuple(runs)


def record_model(config: dict[str, Any]) -> ModelSpec:
    """The ``ModelSpec`` of a run's ``config`` block: its shape and, for an MoE run, its
    routed experts in every layer."""
    model = shape_from_record(config)
    moe = config.get("moe")
    if not moe:
        return model
    experts = MoESpec(num_experts=moe["experts"], top_k=moe["top_k"],
                      expert_ffn_hidden_size=moe["ffn"])  # fmt: skip
    return model.model_copy(update={"moe": experts})


def pytorch_config(record: dict[str, Any]) -> dict[str, Any]:
    """A plain-PyTorch snapshot record (``allocator_snapshots.py``'s ``child``) as a
    measured record's ``config`` block: its shape, batch and recompute, fp32 weights under
    bf16 autocast, foreach AdamW, and for an MoE run its routed experts."""
    config: dict[str, Any] = {
        "model": record["config"],
        "mbs": int(record["batch"]),
        "recompute": "full" if record["recompute"] else "none",
        "autocast": True,
        "foreach": True,
    }
    if record.get("moe"):
        config["moe"] = record["moe"]
    return config


def own_trace_prepared(run: SnapshotRun) -> Prepared:
    """autopar's prepared estimate of a run's step, as its harness ran it (module
    docstring)."""
    config = run.record["config"]
    if config.get("framework") == "megatron":
        options: dict[str, Any] = {
            "framework": "megatron", "state_layout_name": "megatron",
            "flash_attention": False, "optimizer_impl": "foreach", "layer_spec": "local",
        }  # fmt: skip
    else:
        config = pytorch_config(run.record)
        # the harness holds the logits through the backward (``del logits`` after it)
        options = {
            "framework": "pytorch", "state_layout_name": "autocast", "flash_attention": True,
            "optimizer_impl": "foreach", "runtime": Runtime(loop_keeps_logits=True),
        }  # fmt: skip
    shape = RecordConfig.of(config)
    return prepare(
        model=record_model(config),
        cluster=load_cluster(MEASURED_CLUSTERS[run.gpu_id], gpus=1),
        workload=WorkloadSpec(
            seq_len=shape.model.seq_len, global_batch=shape.mbs * shape.grad_accum
        ),
        layout=layout_from_record(shape),
        **options,
    )


def own_trace_peak(run: SnapshotRun) -> OwnTracePeak:
    """The simulated reserved peak of autopar's trace of a run's step (Megatron-Core or
    plain PyTorch), in the run's own allocator mode."""
    events = stage_trace(own_trace_prepared(run), stage=0).events
    simulated = simulate(events, expandable_segments=run.expandable_segments)
    return OwnTracePeak(
        live=int(live_curve(events).max()),
        simulated_reserved=simulated.peak_reserved,
        simulated_allocated=simulated.peak_allocated,
        error=simulated.peak_reserved / run.measured_reserved - 1,
        allocated_error=simulated.peak_allocated / run.measured_allocated - 1,
    )
