"""Scatter jobs: ``POST /v1/scatter`` (``autopar scatter`` as a stored job), status, result.

The request is resolved and checked at once (model, cluster, lengths: a bad input is a 422
or 404 before anything is queued; a sequence the whole cluster cannot hold is refused
then too, from the same memory model the job uses), then the job with the same canonical
inputs is returned (``reused: true``) or a new one queued on the plan jobs' queue and
workers (``api.scatter_jobs``). ``DELETE /v1/plans/{id}`` cancels either kind.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from api import limits as L
from api.deps import JobsDep, ModelsDep, RunnerDep, SettingsDep
from api.inputs import resolve_cluster, resolve_model
from api.job_submit import find_or_queue
from api.openapi import errors
from api.problems import ApiProblem, Problem
from api.scatter_jobs import KIND, WORKER_OVERHEAD_S, is_scatter
from api.schemas import Body, ClusterInput, JobStatus, _either
from api.spec_inputs import ModelInput
from api.store import JobRow, JobStore
from api.stored import stored_result
from planner.emit.base import autopar_version
from planner.errors import SpecError
from planner.scattering import ScatterResult, load_distribution, sample_batches, sequence_cost
from planner.scattering.lengths import DEFAULT_GLOBAL_BATCH_TOKENS

router = APIRouter(tags=["scatter"])

MAX_BATCHES = 16
MAX_SEQUENCES_PER_BATCH = 20_000
MAX_LENGTH = 1 << 24
"""Tokens of one sequence accepted in a request (the cluster's memory bounds it further)."""
MAX_SAMPLED_TOKENS = 1 << 26
MAX_TIME_LIMIT_S = 60.0

JobId = Annotated[str, Path(max_length=64, description="the id POST /v1/scatter returned")]
Length = Annotated[int, Field(ge=1, le=MAX_LENGTH)]


class ScatterRequest(Body):
    """``autopar scatter``: lengths given (``seq_lengths``) or sampled (``length_dist``)."""

    model: _either(ModelInput, "the model")  # type: ignore[valid-type]
    cluster: _either(ClusterInput, "the cluster")  # type: ignore[valid-type]
    gpus: int = Field(ge=1, le=L.MAX_GPUS, description="total GPUs, a power of two")
    seq_lengths: (
        Annotated[
            list[Annotated[list[Length], Field(min_length=1, max_length=MAX_SEQUENCES_PER_BATCH)]],
            Field(min_length=1, max_length=MAX_BATCHES),
        ]
        | None
    ) = Field(default=None, description="batches of sequence lengths (tokens)")
    length_dist: str | None = Field(
        default=None, pattern=L.NAME_PATTERN, description="a shipped length distribution"
    )
    global_batch_tokens: int | None = Field(
        default=None, ge=1, le=MAX_SAMPLED_TOKENS, description="tokens per sampled batch"
    )
    batches: int = Field(default=1, ge=1, le=MAX_BATCHES, description="batches to sample")
    max_seq_len: int | None = Field(default=None, ge=1, le=L.MAX_SEQ_LEN)
    cp_algo: Literal["ulysses", "ring", "auto"] = "auto"
    time_limit: float = Field(
        default=1.0, ge=L.MIN_TIME_LIMIT_S, le=MAX_TIME_LIMIT_S, description="solver s per batch"
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    precision: Literal["bf16", "fp16", "fp8", "fp32"] = "bf16"


class ScatterJob(BaseModel):
    """A scatter job; ``result`` is exactly ``autopar scatter --json`` once ``done``."""

    id: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    inputs_hash: str
    request: dict[str, Any]
    result: ScatterResult | None = None
    error: Problem | None = None
    reused: bool = False


def scatter_inputs(body: ScatterRequest, models: Any) -> dict[str, Any]:
    """The canonical inputs: resolved specs and the lengths to solve (sampled now)."""
    if (body.seq_lengths is None) == (body.length_dist is None):
        raise SpecError("seq_lengths, length_dist: give exactly one of them")
    model = resolve_model(body.model, models)
    cluster = resolve_cluster(body.cluster, gpus=body.gpus, nodes=None)
    if body.seq_lengths is not None:
        batches = [list(b) for b in body.seq_lengths]
        source = "request seq_lengths"
    else:
        assert body.length_dist is not None
        dist = load_distribution(body.length_dist)
        tokens = body.global_batch_tokens or DEFAULT_GLOBAL_BATCH_TOKENS
        batches = sample_batches(
            body.length_dist, batches=body.batches, global_batch_tokens=tokens,
            max_seq_len=body.max_seq_len, seed=body.seed,
        )  # fmt: skip
        source = (
            f"{dist.name} ({dist.source}), {body.batches} batch(es) of {tokens} tokens, "
            f"seed {body.seed}"
        )
    cost = sequence_cost(
        model=model, cluster=cluster, precision=body.precision, cp_algo=body.cp_algo
    )
    most = cost.tokens_per_gpu * cost.sizes[-1]
    longest = max(max(b) for b in batches)
    if body.max_seq_len is not None:
        longest = min(longest, body.max_seq_len)  # longer ones are cut into pieces
    if longest > most:
        raise SpecError(
            f"seq_lengths: a sequence of {longest:,} tokens; the {cluster.num_gpus} GPUs hold at "
            f"most {most:,} tokens of one sequence"
        )
    return {
        "autopar": autopar_version(),
        "kind": KIND,
        "model": model.model_dump(mode="json"),
        "cluster": cluster.model_dump(mode="json"),
        "batches": batches,
        "max_seq_len": body.max_seq_len,
        "cp_algo": body.cp_algo,
        "precision": body.precision,
        "time_limit_s": body.time_limit,
        "lengths_source": source,
    }


def _view(row: JobRow, *, reused: bool = False) -> ScatterJob:
    result, error = stored_result(row, ScatterResult)
    return ScatterJob(
        id=row.id, status=row.status,  # type: ignore[arg-type]
        created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at,
        inputs_hash=row.inputs_hash, request=row.request, result=result, error=error,
        reused=reused,
    )  # fmt: skip


def _job(jobs: JobStore, job_id: str) -> JobRow:
    row = jobs.get(job_id)
    if row is None or not is_scatter(row.inputs):
        raise ApiProblem(404, "not-found", f"scatter job '{job_id}' does not exist")
    return row


@router.post(
    "/scatter",
    response_model=ScatterJob,
    status_code=202,
    responses={
        200: {"model": ScatterJob, "description": "a finished job with the same inputs"},
        202: {"headers": {"Location": {"schema": {"type": "string"}}}},
        **errors(404, 413, 422, 503),
    },
)
def submit_scatter(
    body: ScatterRequest,
    response: Response,
    settings: SettingsDep,
    jobs: JobsDep,
    models: ModelsDep,
    runner: RunnerDep,
) -> ScatterJob:
    """Start a scatter job (``autopar scatter``), or return the stored one for these inputs."""
    inputs = scatter_inputs(body, models)
    submitted = find_or_queue(
        jobs=jobs, settings=settings, runner=runner, response=response,
        request=body.model_dump(mode="json", exclude_none=True), inputs=inputs,
        time_limit_s=inputs["time_limit_s"] * len(inputs["batches"]) + WORKER_OVERHEAD_S,
        location="/v1/scatter",
    )  # fmt: skip
    return _view(submitted.row, reused=submitted.reused)


@router.get("/scatter/{job_id}", response_model=ScatterJob, responses=errors(404, 422))
def get_scatter(job_id: JobId, jobs: JobsDep) -> ScatterJob:
    """Status and, once done, the result (``autopar scatter --json``)."""
    return _view(_job(jobs, job_id))


@router.get(
    "/scatter/{job_id}/result", response_model=ScatterResult, responses=errors(404, 409, 422)
)
def get_scatter_result(job_id: JobId, jobs: JobsDep) -> ScatterResult:
    """Exactly ``autopar scatter --json``; 409 until the job is done."""
    view = _view(_job(jobs, job_id))
    if view.status != "done" or view.result is None:
        detail = f"scatter job '{job_id}' is {view.status}"
        if view.error is not None:
            detail += f": {view.error.detail}"
        raise ApiProblem(409, "conflict", detail)
    return view.result
