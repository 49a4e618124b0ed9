"""Expert-placement jobs: ``POST /v1/expert-placements`` (``autopar place-experts``).

Stored jobs like plans (:mod:`api.routers.plans`): the request is resolved and checked at
once (a bad input is a 422 or 404 before anything is queued), then the stored job with
the same canonical inputs is returned (``reused: true``) or a new one is queued for the
job runner, whose worker dispatches on the inputs' ``kind``. ``GET`` gives the status and,
once done, ``place-experts --json``; ``/files`` gives the files ``--out`` writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field, ValidationError, model_validator

from api import limits as L
from api.deps import JobsDep, ModelsDep, RunnerDep, SettingsDep
from api.inputs import resolve_cluster, resolve_model
from api.job_submit import find_or_queue
from api.openapi import errors
from api.problems import ApiProblem, Problem
from api.schemas import Body, ClusterInput, JobStatus, _either
from api.spec_inputs import ModelInput
from api.store import JobRow, JobStore
from api.stored import stored_result
from planner.emit.base import autopar_version
from planner.errors import SpecError
from planner.experts import (
    ExpertPlacementResult,
    RoutingStats,
    eplb_triple,
    place_experts,
    placement_table,
    synthetic_stats,
)
from planner.experts.place import Objective, build_problem
from planner.specs.hardware import ClusterSpec
from planner.specs.model import ModelSpec

router = APIRouter(tags=["expert placements"])

KIND = "expert-placement"
MAX_COUNT = 10**9
"""Largest token count of one expert in one layer; scale larger counts down."""
MAX_MOE_LAYERS = 128
"""More than any catalogue MoE model (Qwen3-235B-A22B has 94 MoE layers)."""
MAX_ROUTED_EXPERTS = 512
"""Routed experts per layer (DeepSeek-V3: 256). With MAX_COUNT and MAX_AFFINITY_ENTRIES
this keeps the largest valid body (about 0.9 MB) under the default body limit of 1 MiB."""
MAX_AFFINITY_ENTRIES = 2048
JobId = Annotated[str, Path(max_length=64, description="the id POST returned")]


class AffinityInput(Body):
    layer: int = Field(ge=0, le=MAX_MOE_LAYERS)
    src: int = Field(ge=0, le=MAX_ROUTED_EXPERTS)
    dst: int = Field(ge=0, le=MAX_ROUTED_EXPERTS)
    tokens: int = Field(ge=1, le=MAX_COUNT)


class ExpertPlacementRequest(Body):
    """``autopar place-experts``: ``loads`` (and ``affinity``) or ``synthetic``."""

    model: _either(ModelInput, "the model")  # type: ignore[valid-type]
    cluster: _either(ClusterInput, "the cluster")  # type: ignore[valid-type]
    nodes: int | None = Field(default=None, ge=1, le=L.MAX_NODES, description="whole nodes")
    ep: int = Field(ge=1, le=L.MAX_GPUS, description="expert parallel size")
    loads: (
        list[
            Annotated[
                list[Annotated[int, Field(ge=0, le=MAX_COUNT)]],
                Field(max_length=MAX_ROUTED_EXPERTS),
            ]
        ]
        | None
    ) = Field(
        default=None, max_length=MAX_MOE_LAYERS, description="[MoE layers][experts] token counts"
    )
    affinity: list[AffinityInput] = Field(default_factory=list, max_length=MAX_AFFINITY_ENTRIES)
    synthetic: str | None = Field(
        default=None, max_length=200, description="zipf:S[,affinity:A][,seed:K][,tokens:T]"
    )
    replicas: int = Field(default=0, ge=0, le=MAX_ROUTED_EXPERTS, description="redundant experts")
    objective: Objective = "balance"
    groups: int | None = Field(default=None, ge=1, le=MAX_ROUTED_EXPERTS)
    time_limit: float = Field(default=10.0, ge=L.MIN_TIME_LIMIT_S, le=L.MAX_TIME_LIMIT_CEILING_S)

    @model_validator(mode="after")
    def _one_routing(self) -> ExpertPlacementRequest:
        if (self.loads is None) == (self.synthetic is None):
            raise ValueError("give exactly one of loads and synthetic")
        if self.synthetic is not None and self.affinity:
            raise ValueError("affinity comes with loads, not with synthetic")
        return self


class ExpertPlacementJob(BaseModel):
    """An expert-placement job; ``result`` is ``autopar place-experts --json`` once done."""

    id: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    inputs_hash: str
    time_limit_s: float
    request: dict[str, Any]
    result: ExpertPlacementResult | None = None
    error: Problem | None = None
    reused: bool = False


class PlacementFiles(BaseModel):
    """What ``place-experts --out`` writes: the EPLB triple, SGLang's JSON, the table."""

    job_id: str
    eplb: dict[str, list]
    sglang: dict[Literal["physical_to_logical_map"], list[list[int]]]
    table: str


def _routing(body: ExpertPlacementRequest, model: ModelSpec) -> RoutingStats:
    if body.synthetic is not None:
        if model.moe is None:
            raise SpecError(f"model: {model.name} has no MoE layers (moe is not set)")
        return synthetic_stats(
            body.synthetic, layers=model.num_moe_layers, experts=model.moe.num_experts,
            top_k=model.moe.top_k,
        )  # fmt: skip
    try:
        return RoutingStats(
            loads=body.loads or [],
            affinity=[a.model_dump() for a in body.affinity],
            source="request",
        )
    except ValidationError as error:
        message = error.errors()[0]["msg"].removeprefix("Value error, ")
        raise SpecError(f"loads: {message}") from None


def placement_inputs(
    body: ExpertPlacementRequest, models: Any, *, max_time_limit_s: float
) -> dict[str, Any]:
    """The canonical inputs of a request, checked as ``place_experts`` would check them."""
    model = resolve_model(body.model, models)
    cluster = resolve_cluster(body.cluster, gpus=None, nodes=body.nodes)
    routing = _routing(body, model)
    build_problem(
        model=model, cluster=cluster, ep=body.ep, routing=routing, replicas=body.replicas,
        objective=body.objective, groups=body.groups,
    )  # fmt: skip
    return {
        "kind": KIND,
        "autopar": autopar_version(),
        "model": model.model_dump(mode="json"),
        "cluster": cluster.model_dump(mode="json"),
        "ep": body.ep,
        "replicas": body.replicas,
        "objective": body.objective,
        "groups": body.groups,
        "routing": routing.model_dump(mode="json"),
        "time_limit_s": min(body.time_limit, max_time_limit_s),
    }


def run_expert_placement(inputs: dict[str, Any], progress: object = None) -> dict[str, Any]:
    """The worker's side of a job: ``place_experts`` on the canonical inputs."""
    result = place_experts(
        model=ModelSpec.model_validate(inputs["model"]),
        cluster=ClusterSpec.model_validate(inputs["cluster"]),
        ep=inputs["ep"],
        routing=RoutingStats.model_validate(inputs["routing"]),
        replicas=inputs["replicas"],
        objective=inputs["objective"],
        groups=inputs["groups"],
        time_limit_s=inputs["time_limit_s"],
        workers=1,
    )
    return result.model_dump(mode="json")


def _view(row: JobRow, *, reused: bool = False) -> ExpertPlacementJob:
    result, error = stored_result(row, ExpertPlacementResult)
    return ExpertPlacementJob(
        id=row.id, status=row.status, created_at=row.created_at,  # type: ignore[arg-type]
        started_at=row.started_at, finished_at=row.finished_at, inputs_hash=row.inputs_hash,
        time_limit_s=row.time_limit_s, request=row.request, result=result,
        error=error,
        reused=reused,
    )  # fmt: skip


def _job(jobs: JobStore, job_id: str) -> JobRow:
    row = jobs.get(job_id)
    if row is None or row.inputs.get("kind") != KIND:
        raise ApiProblem(404, "not-found", f"expert-placement job '{job_id}' does not exist")
    return row


@router.post(
    "/expert-placements",
    response_model=ExpertPlacementJob,
    status_code=202,
    responses={
        200: {"model": ExpertPlacementJob, "description": "a finished job with the same inputs"},
        202: {"headers": {"Location": {"schema": {"type": "string"}}}},
        **errors(404, 413, 422, 503),
    },
)
def submit_expert_placement(
    body: ExpertPlacementRequest,
    response: Response,
    settings: SettingsDep,
    jobs: JobsDep,
    models: ModelsDep,
    runner: RunnerDep,
) -> ExpertPlacementJob:
    """Start an expert-placement job, or return the stored one for these inputs."""
    inputs = placement_inputs(body, models, max_time_limit_s=settings.max_time_limit_s)
    submitted = find_or_queue(
        jobs=jobs, settings=settings, runner=runner, response=response,
        request=body.model_dump(mode="json", exclude_none=True), inputs=inputs,
        time_limit_s=inputs["time_limit_s"], location="/v1/expert-placements",
    )  # fmt: skip
    return _view(submitted.row, reused=submitted.reused)


@router.get(
    "/expert-placements/{job_id}", response_model=ExpertPlacementJob, responses=errors(404, 422)
)
def get_expert_placement(job_id: JobId, jobs: JobsDep) -> ExpertPlacementJob:
    """Status and, once done, the result (``autopar place-experts --json``)."""
    return _view(_job(jobs, job_id))


@router.get(
    "/expert-placements/{job_id}/files",
    response_model=PlacementFiles,
    responses=errors(404, 409, 422),
)
def get_placement_files(job_id: JobId, jobs: JobsDep) -> PlacementFiles:
    """The EPLB triple, SGLang's ``--init-expert-location`` JSON and the table."""
    row = _job(jobs, job_id)
    result = _view(row).result
    if row.status != "done" or result is None:
        raise ApiProblem(
            409, "conflict", f"expert-placement job '{job_id}' is {row.status}, not done"
        )
    experts = len(row.inputs["routing"]["loads"][0])
    return PlacementFiles(
        job_id=row.id,
        eplb=eplb_triple(result.phy2log, experts),
        sglang={"physical_to_logical_map": result.phy2log},
        table=placement_table(result.phy2log, result.ep),
    )
