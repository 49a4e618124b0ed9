"""Memory-plan jobs (``POST /v1/memory-plans``): canonical inputs and the worker's run.

A memory plan is a stored job like a plan (:mod:`api.jobs` runs it in a worker process,
:mod:`api.store` keeps it): its canonical inputs carry ``"kind": "memory-plan"``, so
their hash never matches a plan's, and the worker runs :func:`run_memory_plan` for them.
The job's ``time_limit`` bounds the whole job: it is shared out over the solver calls,
one placement per stage and, under a budget, one recompute/offload choice per stage.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any, Literal

from pydantic import Field

from api import limits as L
from api.inputs import prepare_estimate
from api.schemas import EstimateRequest
from api.store import ModelStore
from planner.cost.frameworks import DEFAULT_RUNTIME, Runtime
from planner.emit.base import autopar_version
from planner.errors import SpecError
from planner.memplan import memplan
from planner.predict import prepare
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import ParallelConfig
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec

KIND = "memory-plan"
DEFAULT_TIME_LIMIT_S = 20.0


class MemoryPlanRequest(EstimateRequest):
    """``autopar memplan``: one layout's peak memory four ways, and under a budget what to
    recompute or offload."""

    stage: int | None = Field(
        default=None, ge=0, le=L.MAX_DEGREE, description="one pipeline stage; default every one"
    )
    budget_gib: float | None = Field(
        default=None, gt=0.0, le=4096.0, description="fit this many GiB per GPU (--budget-gib)"
    )
    time_limit: float = Field(
        default=DEFAULT_TIME_LIMIT_S,
        ge=L.MIN_TIME_LIMIT_S,
        le=L.MAX_TIME_LIMIT_CEILING_S,
        description="seconds for the whole job, shared by its solver calls; capped at the "
        "server's AUTOPAR_MAX_TIME_LIMIT_S",
    )
    memplan: Literal[False] = Field(
        default=False, description="an estimate's option: a memory plan is that simulation"
    )


RUNTIME_FIELDS = tuple(field.name for field in fields(Runtime))
"""The ``Runtime`` settings a memory-plan job records (each only where not the default)."""


def memory_plan_inputs(
    body: MemoryPlanRequest, models: ModelStore, *, max_time_limit_s: float
) -> tuple[dict[str, Any], int]:
    """The canonical inputs of a memory-plan request and the stages it analyses; the
    layout's rules and the stage are checked now (a ``SpecError`` names the rule)."""
    call = prepare_estimate(body, models)
    layout = call.layout
    prepare(  # every layout rule, now rather than in the worker
        model=call.model, cluster=call.cluster, workload=call.workload, layout=layout,
        framework=body.framework, state_layout_name=body.state_layout,
        flash_attention=call.flash_attention, runtime=call.runtime, layer_spec=call.layer_spec,
    )  # fmt: skip
    if body.stage is not None and body.stage >= layout.pp:
        raise SpecError(f"stage: {body.stage} is not a pipeline stage of pp {layout.pp}")
    inputs = {
        "kind": KIND,
        "autopar": autopar_version(),
        "model": call.model.model_dump(mode="json"),
        "cluster": call.cluster.model_dump(mode="json"),
        "workload": call.workload.model_dump(mode="json"),
        "layout": layout.model_dump(mode="json", exclude_unset=True),
        "framework": body.framework,
        "state_layout": body.state_layout,
        "flash_attention": call.flash_attention,
        "stage": body.stage,
        "budget_gib": body.budget_gib,
        "time_limit_s": min(body.time_limit, max_time_limit_s),
    }
    # run-time settings only where they differ from the defaults: older hashes stay valid
    inputs.update(
        (name, value)
        for name, value in asdict(call.runtime).items()
        if value != getattr(DEFAULT_RUNTIME, name)
    )
    if body.layer_spec is not None:  # likewise
        inputs["layer_spec"] = call.layer_spec
    stages = 1 if body.stage is not None else layout.pp
    return json.loads(json.dumps(inputs)), stages


def run_memory_plan(inputs: dict[str, Any]) -> dict[str, Any]:
    """``planner.memplan`` on a job's canonical inputs."""
    layout = ParallelConfig.model_validate(inputs["layout"])
    stages = 1 if inputs["stage"] is not None else layout.pp
    calls = stages * (2 if inputs["budget_gib"] is not None else 1)
    result = memplan(
        model=ModelSpec.model_validate(inputs["model"]),
        cluster=ClusterSpec.model_validate(inputs["cluster"]),
        workload=WorkloadSpec.model_validate(inputs["workload"]),
        layout=layout,
        framework=inputs["framework"],
        state_layout_name=inputs["state_layout"],
        flash_attention=inputs["flash_attention"],
        runtime=Runtime(**{name: inputs[name] for name in RUNTIME_FIELDS if name in inputs}),
        layer_spec=inputs.get("layer_spec", "transformer_engine"),
        stage=inputs["stage"],
        budget_gib=inputs["budget_gib"],
        time_limit_s=max(0.1, 0.8 * inputs["time_limit_s"] / calls),
    )
    return result.model_dump(mode="json")
