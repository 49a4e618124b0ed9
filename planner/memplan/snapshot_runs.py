"""The committed allocator-snapshot runs, and autopar's own trace of the Megatron ones.

A snapshot profile (``hardware_db/profiles/<gpu>/<id>/``) holds ``<run>.pickle.gz`` files
and ``results.json`` with one record per run: ``max_memory_reserved`` and
``max_memory_allocated`` of the whole run, and whether it ran with expandable segments.
The simulation of a snapshot's own allocation sequence is checked against those; the
fits verdict needs more, the simulation of *autopar's* trace of the same step
(``planner.memplan.lifetimes.stage_trace``), since that is all it has for a layout nobody
ran. ``own_trace_peak`` builds that trace for a Megatron-Core run from its record
(megatron_step's ``config`` block: the shape, micro-batch, accumulation, recompute, the
routed experts of an MoE run) as ``planner.measured_runs`` predicts Megatron-Core steps:
the ``megatron`` state layout, the local layer spec's unfused attention, foreach AdamW.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hardware_db
from planner.catalog import load_cluster
from planner.cost.measured import MEASURED_CLUSTERS, RecordConfig, layout_from_record
from planner.cost.measured import model_from_record as shape_from_record
from planner.memplan.allocator import simulate
from planner.memplan.lifetimes import stage_trace
from planner.memplan.trace import live_curve
from planner.predict import prepare
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
    error: float
    """simulated_reserved / measured reserved - 1."""


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


def megatron_model(config: dict[str, Any]) -> ModelSpec:
    """The ``ModelSpec`` of a Megatron-Core record: its shape and, for an MoE run, its
    routed experts in every layer."""
    model = shape_from_record(config)
    moe = config.get("moe")
    if not moe:
        return model
    experts = MoESpec(num_experts=moe["experts"], top_k=moe["top_k"],
                      expert_ffn_hidden_size=moe["ffn"])  # fmt: skip
    return model.model_copy(update={"moe": experts})


def own_trace_peak(run: SnapshotRun) -> OwnTracePeak:
    """The simulated reserved peak of autopar's trace of a Megatron-Core run's step, in the
    run's own allocator mode."""
    config = run.record["config"]
    if config.get("framework") != "megatron":
        raise ValueError(f"{run.name}: not a Megatron-Core record")
    shape = RecordConfig.of(config)
    prepared = prepare(
        model=megatron_model(config),
        cluster=load_cluster(MEASURED_CLUSTERS[run.gpu_id], gpus=1),
        workload=WorkloadSpec(
            seq_len=shape.model.seq_len, global_batch=shape.mbs * shape.grad_accum
        ),
        layout=layout_from_record(shape),
        framework="megatron",
        state_layout_name="megatron",
        flash_attention=False,
        optimizer_impl="foreach",
        layer_spec="local",
    )
    events = stage_trace(prepared, stage=0).events
    simulated = simulate(events, expandable_segments=run.expandable_segments).peak_reserved
    return OwnTracePeak(
        live=int(live_curve(events).max()),
        simulated_reserved=simulated,
        error=simulated / run.measured_reserved - 1,
    )
