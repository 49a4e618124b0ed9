"""Reading a plan back: one entry of a plan file, and the estimate that reproduces it.

A plan file is what ``autopar plan --json`` prints (``{"plans": [...], "search": ...}``;
a job of ``GET /v1/plans/{id}`` is read through its ``result``), or one estimate or plan
entry (``autopar estimate --json``, ``{"config", "memory", "time", ...}``). Each entry's
``config`` block (``planner.resolved.ResolvedConfig``) records every knob the prediction
was made with:
the model's full spec, the cluster preset and GPU count, the workload, the framework and
what it resolved to (state layout, optimizer implementation, layer spec, runtime), and
the whole layout (uneven stage layers, vpp, recompute, overlaps, CP algorithm, schedule).
:func:`estimate_entry` runs ``predict.estimate`` on exactly those, so its blocks equal the
entry's (``tests/cli/test_estimate_plan.py`` checks it on plans of many jobs).

What a config does not record cannot be reproduced and is refused rather than
approximated: an entry timed with an expert placement from routing statistics
(``expert_placement``; ``estimate`` assumes balanced routing), and a cluster that is not a
preset (pass the cluster file again).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from planner import catalog
from planner.errors import SpecError
from planner.predict import Estimate, MemoryReport, TimeReport, estimate
from planner.resolved import ResolvedConfig
from planner.specs._base import spec_error
from planner.specs.hardware import ClusterSpec
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec

SHOWN_PROBLEMS = 3
"""Schema problems of a plan entry named in the error line; the rest are counted."""


class PlannedEntry(BaseModel):
    """The blocks of one plan entry that a re-estimate compares: config, memory, time.

    Other keys of an entry (``explanation``, ``training``, ``scattering``) describe the
    search or the request, not the layout's prediction, and are ignored; ``expert_placement``
    is kept to refuse what cannot be reproduced."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    config: ResolvedConfig
    memory: MemoryReport
    time: TimeReport
    expert_placement: dict[str, Any] | None = None


@dataclass(frozen=True)
class PlanFileEntry:
    """Entry ``rank`` (1 = best) of plan file ``path``."""

    path: Path
    rank: int
    count: int
    """Entries in the file."""
    entry: PlannedEntry


def read_plan_entry(path: Path, rank: int = 1, *, option: str = "--plan") -> PlanFileEntry:
    """Entry ``rank`` (1-based) of the plan file at ``path``; ``SpecError`` naming
    ``option`` and the fault when the file is missing, not JSON, not a plan or an
    estimate, or has no entry ``rank``."""
    if rank < 1:
        raise SpecError(f"--rank: must be at least 1 (got {rank})")
    if not path.exists():
        raise SpecError(f"{option}: plan file not found: {path}")
    if path.is_dir():
        raise SpecError(f"{option}: {path} is a directory, not a plan file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SpecError(
            f"{option}: {path} is not valid JSON: {error.msg} (line {error.lineno})"
        ) from None
    except UnicodeDecodeError:
        raise SpecError(f"{option}: {path} is not a text (JSON) file") from None
    entries = _entries(data, path=path, option=option)
    if rank > len(entries):
        raise SpecError(
            f"--rank: {path} holds {len(entries)} plan(s); rank {rank} is out of range "
            f"(1 to {len(entries)})"
        )
    raw = entries[rank - 1]
    if not isinstance(raw, dict) or not {"config", "memory", "time"} <= set(raw):
        raise SpecError(
            f"{option}: plan {rank} of {path} is not a plan entry (an object with config, "
            "memory and time blocks, as autopar plan --json writes)"
        )
    try:
        entry = PlannedEntry.model_validate(raw)
    except ValidationError as error:
        message = str(spec_error(error, what=f"{option} {path} plan {rank}"))
        head, _, problems = message.partition(": ")
        shown = problems.split("; ")
        more = f" (and {len(shown) - SHOWN_PROBLEMS} more)" if len(shown) > SHOWN_PROBLEMS else ""
        raise SpecError(
            f"{head}: not a plan entry of this autopar version: "
            + "; ".join(shown[:SHOWN_PROBLEMS])
            + more
        ) from None
    return PlanFileEntry(path=path, rank=rank, count=len(entries), entry=entry)


def _entries(data: Any, *, path: Path, option: str) -> list[Any]:
    """The plan entries of a plan file: its ``plans`` list (a REST job's ``result``'s),
    or the file as one entry."""
    if isinstance(data, dict) and "status" in data and "result" in data:  # GET /v1/plans/{id}
        if not isinstance(data["result"], dict):
            raise SpecError(
                f"{option}: {path} is a planning job with status '{data['status']}' and no "
                "result yet"
            )
        data = data["result"]
    if isinstance(data, dict) and "plans" in data:
        plans = data["plans"]
        if not isinstance(plans, list) or not plans:
            raise SpecError(f"{option}: {path}: 'plans' is not a non-empty list of plans")
        return plans
    if isinstance(data, dict) and "config" in data:
        return [data]
    raise SpecError(
        f"{option}: {path} is neither a plan (autopar plan --json: an object with 'plans') "
        "nor an estimate (autopar estimate --json: an object with 'config')"
    )


def plan_inputs(
    config: ResolvedConfig, *, cluster: ClusterSpec | None = None
) -> tuple[ModelSpec, ClusterSpec, WorkloadSpec]:
    """The model, cluster and workload a config was predicted for.

    The model is the config's own ``model_spec``; the cluster is its preset at the config's
    GPU count (the search may have priced a smaller cluster than the one asked for:
    cost and min-gpus objectives), unless ``cluster`` is given; the workload is its
    sequence length, batch and precision.
    """
    if cluster is None:
        try:
            cluster = catalog.load_cluster(config.cluster, gpus=config.num_gpus)
        except SpecError as error:
            raise SpecError(
                f"--plan: the plan's cluster '{config.cluster}' is not a preset ({error}); "
                "pass its cluster file with --cluster"
            ) from None
        if cluster.gpu.id != config.gpu or cluster.gpus_per_node != config.gpus_per_node:
            raise SpecError(
                f"--plan: cluster '{config.cluster}' now has {cluster.gpus_per_node} x "
                f"{cluster.gpu.id} per node, the plan {config.gpus_per_node} x {config.gpu}; "
                "pass the plan's cluster file with --cluster"
            )
    try:
        workload = WorkloadSpec(
            seq_len=config.seq_len,
            global_batch=config.global_batch,
            precision=config.precision,  # type: ignore[arg-type]
        )
    except ValidationError as error:
        raise spec_error(error, what="--plan workload") from None
    return config.model_spec, cluster, workload


def estimate_entry(entry: PlannedEntry | Estimate | ResolvedConfig) -> Estimate:
    """The estimate of a plan entry's layout with every knob the plan chose.

    ``entry``: a plan entry (``planner.plan.PlanEntry``, or one read by
    :func:`read_plan_entry`), an ``Estimate`` or its ``config`` alone. The result's
    ``config``, ``memory`` and ``time`` equal the entry's when the entry was made by this
    version of autopar (``memory.simulated`` only with ``autopar estimate --memplan``).
    """
    config = entry if isinstance(entry, ResolvedConfig) else entry.config
    if isinstance(entry, PlannedEntry):
        check_reproducible(entry)
    model, cluster, workload = plan_inputs(config)
    return estimate_config(config, model=model, cluster=cluster, workload=workload)


def check_reproducible(entry: PlannedEntry) -> None:
    """Refuse an entry whose prediction depended on what its config does not record."""
    if entry.expert_placement is not None:
        source = entry.expert_placement.get("routing_source", "routing statistics")
        raise SpecError(
            f"--plan: this plan was timed with an expert placement solved for ep "
            f"{entry.config.ep} from {source}; estimate assumes balanced routing and cannot "
            "reproduce it (plan again without --routing to compare)"
        )


def estimate_config(
    config: ResolvedConfig, *, model: ModelSpec, cluster: ClusterSpec, workload: WorkloadSpec
) -> Estimate:
    """``predict.estimate`` of ``config``'s layout, framework, state layout, optimizer
    implementation, attention choice, layer spec and runtime on the given inputs."""
    return estimate(
        model=model,
        cluster=cluster,
        workload=workload,
        layout=config.layout,
        framework=config.framework,
        state_layout_name=config.state_layout,
        flash_attention=config.flash_attention,
        optimizer_impl=config.optimizer_impl,  # type: ignore[arg-type]
        runtime=config.runtime,
        layer_spec=config.layer_spec,
    )
