"""Memory-plan jobs: submit (202 + Location), status, result (``autopar memplan --json``),
cancel.

``POST /v1/memory-plans`` checks the request at once (a bad input is a 422 or 404 before
anything is queued), then returns the stored job with the same canonical inputs
(``reused: true``; 200 when it has finished) or queues a new one on the same job table
and worker processes as plans (:mod:`api.memory_jobs`). A full queue is a 503 with
``Retry-After``.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import JobsDep, ModelsDep, RunnerDep, SettingsDep
from api.job_submit import find_or_queue
from api.memory_jobs import KIND, MemoryPlanRequest, memory_plan_inputs
from api.openapi import errors
from api.problems import ApiProblem, Problem
from api.schemas import JobStatus
from api.store import JobRow, JobStore, utcnow
from api.stored import stored_result
from planner.memplan import MemoryPlan

router = APIRouter(tags=["memory-plans"])

JobId = Annotated[str, Path(max_length=64, description="the id POST /v1/memory-plans returned")]
DEFAULT_JOB_S = 5.0
CANCEL_WAIT_S = 3.0
_submit_lock = threading.Lock()


class MemoryPlanProgress(BaseModel):
    queue_position: int | None = Field(default=None, description="queued jobs ahead (queued only)")
    elapsed_s: float | None = Field(default=None, description="since the job started running")
    time_limit_s: float = Field(description="the job's time limit after the server's cap")
    stages: int = Field(description="pipeline stages the job analyses")


class MemoryPlanJob(BaseModel):
    """A memory-plan job; ``result`` is exactly ``autopar memplan --json`` once ``done``."""

    id: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    inputs_hash: str = Field(description="sha256 of the canonical inputs")
    progress: MemoryPlanProgress
    request: dict[str, Any] = Field(description="the body as it was first submitted")
    result: MemoryPlan | None = None
    error: Problem | None = None
    reused: bool = False


def _view(row: JobRow, store: JobStore, *, reused: bool = False) -> MemoryPlanJob:
    progress = MemoryPlanProgress(time_limit_s=row.time_limit_s, stages=row.layouts)
    if row.status == "queued":
        progress.queue_position = store.queue_position(row)
    elif row.started_at is not None:
        end = row.finished_at or utcnow()
        progress.elapsed_s = round(max(0.0, (end - row.started_at).total_seconds()), 3)
    result, error = _stored(row)
    return MemoryPlanJob(
        id=row.id,
        status=row.status,  # type: ignore[arg-type]
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        inputs_hash=row.inputs_hash,
        progress=progress,
        request=row.request,
        result=result,
        error=error,
        reused=reused,
    )


def _stored(row: JobRow) -> tuple[MemoryPlan | None, Problem | None]:
    return stored_result(row, MemoryPlan)


def _job(jobs: JobStore, job_id: str) -> JobRow:
    row = jobs.get(job_id)
    if row is None or row.inputs.get("kind") != KIND:
        raise ApiProblem(404, "not-found", f"memory-plan job '{job_id}' does not exist")
    return row


@router.post(
    "/memory-plans",
    response_model=MemoryPlanJob,
    status_code=202,
    responses={
        200: {"model": MemoryPlanJob, "description": "a finished job with the same inputs"},
        202: {"headers": {"Location": {"schema": {"type": "string"}}}},
        **errors(404, 413, 422, 503),
    },
)
def submit_memory_plan(
    body: MemoryPlanRequest,
    response: Response,
    settings: SettingsDep,
    jobs: JobsDep,
    models: ModelsDep,
    runner: RunnerDep,
) -> MemoryPlanJob:
    """Start a memory-plan job (``autopar memplan``), or return the stored one."""
    inputs, stages = memory_plan_inputs(body, models, max_time_limit_s=settings.max_time_limit_s)
    submitted = find_or_queue(
        jobs=jobs, settings=settings, runner=runner, response=response,
        request=body.model_dump(mode="json", exclude_none=True), inputs=inputs,
        time_limit_s=inputs["time_limit_s"], location="/v1/memory-plans", layouts=stages,
    )  # fmt: skip
    return _view(submitted.row, jobs, reused=submitted.reused)


@router.get("/memory-plans/{job_id}", response_model=MemoryPlanJob, responses=errors(404, 422))
def get_memory_plan(job_id: JobId, jobs: JobsDep) -> MemoryPlanJob:
    """Status and, once done, the result (``autopar memplan --json``)."""
    return _view(_job(jobs, job_id), jobs)


@router.get(
    "/memory-plans/{job_id}/result", response_model=MemoryPlan, responses=errors(404, 409, 422)
)
def get_memory_plan_result(job_id: JobId, jobs: JobsDep) -> MemoryPlan:
    """Exactly ``autopar memplan --json``; 409 until the job is done."""
    row = _job(jobs, job_id)
    result, error = _stored(row)
    if row.status != "done" or result is None:
        detail = f"memory-plan job '{job_id}' is {row.status}"
        if error is not None:
            detail += f": {error.detail}"
        raise ApiProblem(409, "conflict", detail)
    return result


@router.delete(
    "/memory-plans/{job_id}",
    response_model=MemoryPlanJob,
    responses={
        202: {"model": MemoryPlanJob, "description": "the job runs; it is being stopped"},
        **errors(404, 409, 422),
    },
)
def cancel_memory_plan(job_id: JobId, jobs: JobsDep) -> MemoryPlanJob | JSONResponse:
    """Cancel a queued or running job (200 once cancelled, 202 while it stops)."""
    row = _job(jobs, job_id)
    if row.status in ("done", "failed"):
        raise ApiProblem(409, "conflict", f"memory-plan job '{job_id}' already {row.status}")
    if row.status in ("queued", "running"):
        row = jobs.request_cancel(job_id) or row
        deadline = time.monotonic() + CANCEL_WAIT_S
        while row.status == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
            row = _job(jobs, job_id)
    view = _view(row, jobs)
    if row.status == "running":
        return JSONResponse(view.model_dump(mode="json"), status_code=202)
    return view
