"""Plan jobs: submit (202 + Location), status and progress, result, cancel, launch files.

``POST /v1/plans`` resolves and checks the request at once (a bad input is a 422 or 404
before anything is queued), then either returns the stored job with the same canonical
inputs (``reused: true``; 200 when it has finished, 202 while it runs) or queues a new
one. A full queue is a 503 with ``Retry-After`` (queued jobs x the recent mean run time /
workers), never a wait.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import HTMLResponse, JSONResponse

from api.deps import JobsDep, ModelsDep, RunnerDep, SettingsDep
from api.inputs import inputs_hash, plan_inputs
from api.openapi import errors
from api.problems import ApiProblem, Problem
from api.schemas import Job, JobProgress, JobSummary, LaunchFiles, PlanRequest
from api.store import JobRow, JobStore, utcnow
from api.stored import stored_result
from planner.emit import emit_files
from planner.errors import SpecError
from planner.plan import PlanResult
from planner.report import report_html
from planner.report.inputs import read_report_input
from planner.specs import limits as L

router = APIRouter(tags=["plans"])

JobId = Annotated[str, Path(max_length=64, description="the id POST /v1/plans returned")]
CANCEL_WAIT_S = 3.0
DEFAULT_JOB_S = 5.0
"""Run time assumed for Retry-After before any job has finished."""
TORCHTITAN_FORMATS = {"current": "torchtitan", "0.2": "torchtitan-toml"}

_submit_lock = threading.Lock()
"""Find-or-create of a job is one critical section per server process."""


def job_view(row: JobRow, store: JobStore, *, reused: bool = False) -> Job:
    """The public form of a job, with its progress computed now."""
    progress = JobProgress(
        time_limit_s=row.time_limit_s, layouts=row.layouts, cancel_requested=row.cancel_requested
    )
    if row.status == "queued":
        progress.queue_position = store.queue_position(row)
    elif row.started_at is not None:
        end: datetime = row.finished_at or utcnow()
        elapsed = max(0.0, (end - row.started_at).total_seconds())
        progress.elapsed_s = round(elapsed, 3)
        if row.status == "running":
            progress.fraction_of_time_limit = round(min(1.0, elapsed / row.time_limit_s), 4)
    if row.progress is not None and row.status != "queued":
        reported = row.progress
        progress.phase = reported["phase"]
        progress.layouts_evaluated = reported["evaluated"]
        progress.layouts_total = reported["total"]
        progress.layouts_timed = reported["timed"]
        if reported["total"]:
            progress.fraction_evaluated = round(reported["evaluated"] / reported["total"], 4)
    result, error = _stored_result(row)
    return Job(
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


def _stored_result(row: JobRow) -> tuple[PlanResult | None, Problem | None]:
    return stored_result(row, PlanResult)


def _location(job_id: str) -> str:
    return f"/v1/plans/{job_id}"


@router.post(
    "/plans",
    response_model=Job,
    status_code=202,
    responses={
        200: {"model": Job, "description": "a finished job with the same canonical inputs"},
        202: {"headers": {"Location": {"schema": {"type": "string"}}}},
        **errors(404, 413, 422, 503),
    },
)
def submit_plan(
    body: PlanRequest,
    response: Response,
    settings: SettingsDep,
    jobs: JobsDep,
    models: ModelsDep,
    runner: RunnerDep,
) -> Job:
    """Start a planning job (``autopar plan``), or return the stored one for these inputs."""
    inputs, layouts = plan_inputs(
        body,
        models,
        max_time_limit_s=settings.max_time_limit_s,
        max_layouts=settings.max_search_layouts,
    )
    key = inputs_hash(inputs)
    with _submit_lock:
        existing = jobs.find_reusable(key)
        if existing is None:
            queued = jobs.count_queued()
            if queued >= settings.max_queued_jobs:
                raise _queue_full(queued, jobs, settings.job_workers)
            row = jobs.create(
                inputs_hash=key,
                request=body.model_dump(mode="json", exclude_none=True),
                inputs=inputs,
                time_limit_s=inputs["time_limit_s"],
                layouts=layouts,
            )
    response.headers["Location"] = _location((existing or row).id)
    if existing is not None:
        if existing.status in ("done", "failed"):
            response.status_code = 200
        return job_view(existing, jobs, reused=True)
    runner.notify()
    return job_view(row, jobs)


def _queue_full(queued: int, jobs: JobStore, workers: int) -> ApiProblem:
    mean = jobs.mean_duration_s() or DEFAULT_JOB_S
    wait = min(3600, max(1, math.ceil(queued * mean / max(1, workers))))
    return ApiProblem(
        503,
        "queue-full",
        f"{queued} plan jobs are queued, this server's bound (AUTOPAR_MAX_QUEUED_JOBS); "
        f"retry after {wait} s",
        headers={"Retry-After": str(wait)},
    )


def _job(jobs: JobStore, job_id: str) -> JobRow:
    row = jobs.get(job_id)
    if row is None:
        raise ApiProblem(404, "not-found", f"plan job '{job_id}' does not exist")
    return row


@router.get("/plans", response_model=list[JobSummary], responses=errors(422))
def list_plans(
    jobs: JobsDep,
    limit: Annotated[int, Query(ge=1, le=200, description="newest first")] = 50,
) -> list[JobSummary]:
    """The stored plan jobs, newest first, with each finished job's best plan."""
    summaries = []
    for row in jobs.recent(limit):
        best_layout = best_step = None
        if row.status == "done" and row.result is not None and row.result.get("plans"):
            try:
                best = read_report_input(row.result).plans[0]
            except SpecError:  # a result an older autopar wrote in another shape
                best = None
            if best is not None:
                best_layout, best_step = best.config.layout_label(), best.time.step_time_s
        summaries.append(
            JobSummary(
                id=row.id,
                status=row.status,  # type: ignore[arg-type]
                created_at=row.created_at,
                request=row.request,
                best_layout=best_layout,
                best_step_time_s=best_step,
            )
        )
    return summaries


@router.get("/plans/{job_id}", response_model=Job, responses=errors(404, 422))
def get_plan(job_id: JobId, jobs: JobsDep) -> Job:
    """Status, progress and, once done, the result (``autopar plan --json``)."""
    return job_view(_job(jobs, job_id), jobs)


@router.get("/plans/{job_id}/result", response_model=PlanResult, responses=errors(404, 409, 422))
def get_plan_result(job_id: JobId, jobs: JobsDep) -> PlanResult:
    """Exactly ``autopar plan --json``; 409 until the job is done."""
    row = _job(jobs, job_id)
    result, error = _stored_result(row)
    if row.status != "done" or result is None:
        raise _not_done(row, error)
    return result


@router.get(
    "/plans/{job_id}/report",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}}, **errors(404, 409, 422)},
)
def get_plan_report(job_id: JobId, jobs: JobsDep) -> HTMLResponse:
    """The plan report (``autopar report``) of a finished job: one self-contained page."""
    row = _job(jobs, job_id)
    result, error = _stored_result(row)
    if row.status != "done" or result is None:
        raise _not_done(row, error)
    page = report_html(result.model_dump(mode="json"), title=f"plan job {row.id}")
    return HTMLResponse(page)


def _not_done(row: JobRow, error: Problem | None) -> ApiProblem:
    """409 for a job without a servable result, quoting its error when it has one."""
    state = "done" if row.status == "done" else f"{row.status}, not done"
    detail = f"plan job '{row.id}' is {state}"
    if error is not None:
        detail += f": {error.detail}"
    return ApiProblem(409, "conflict", detail)


@router.delete(
    "/plans/{job_id}",
    response_model=Job,
    responses={
        202: {"model": Job, "description": "the job runs; it is being stopped"},
        **errors(404, 409, 422),
    },
)
def cancel_plan(job_id: JobId, jobs: JobsDep) -> Job | JSONResponse:
    """Cancel a queued or running job (200 once cancelled, 202 while it stops)."""
    row = _job(jobs, job_id)
    if row.status in ("done", "failed"):
        raise ApiProblem(409, "conflict", f"plan job '{job_id}' already {row.status}")
    if row.status == "queued" or row.status == "running":
        row = jobs.request_cancel(job_id) or row
        deadline = time.monotonic() + CANCEL_WAIT_S
        while row.status == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
            row = _job(jobs, job_id)
    view = job_view(row, jobs)
    if row.status == "running":
        return JSONResponse(view.model_dump(mode="json"), status_code=202)
    return view


@router.get(
    "/plans/{job_id}/launch/{format}", response_model=LaunchFiles, responses=errors(404, 409, 422)
)
def get_launch_files(
    job_id: JobId,
    format: Literal["megatron", "deepspeed", "torchtitan"],
    jobs: JobsDep,
    rank: Annotated[int, Query(ge=1, le=L.MAX_TOP_K, description="1 = the best plan")] = 1,
    torchtitan_version: Annotated[
        Literal["current", "0.2"] | None,
        Query(
            description="torchtitan: current (Python recipe) or 0.2 (TOML, up to v0.2.2); "
            "default: the job's framework_version, else current"
        ),
    ] = None,
) -> LaunchFiles:
    """The launch files of one plan of a finished job (``autopar plan --emit FORMAT``)."""
    row = _job(jobs, job_id)
    result, error = _stored_result(row)
    if row.status != "done" or result is None or row.result is None:
        raise _not_done(row, error)
    plans = row.result["plans"]
    if rank > len(plans):
        raise ApiProblem(
            404, "not-found", f"rank: the job has {len(plans)} plans, there is no plan {rank}"
        )
    version = torchtitan_version or row.inputs.get("framework_version") or "current"
    emitter = TORCHTITAN_FORMATS[version] if format == "torchtitan" else format
    files = emit_files(plans[rank - 1], format=emitter)
    return LaunchFiles(job_id=row.id, format=emitter, plan_rank=rank, files=files)
