"""``GET /v1/health``: liveness, the database in use, the queue and this server's bounds."""

from __future__ import annotations

from fastapi import APIRouter

from api.db import backend_name
from api.deps import JobsDep, RunnerDep, SettingsDep
from api.openapi import errors
from api.schemas import Health, Limits
from planner.emit.base import autopar_version

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, responses={503: errors(503)[503]})
def health(settings: SettingsDep, jobs: JobsDep, runner: RunnerDep) -> Health:
    """Open even when a token is set; 503 when the database does not answer."""
    return Health(
        status="ok",
        version=autopar_version(),
        database=backend_name(jobs.engine),
        job_workers=settings.job_workers,
        job_workers_ready=runner.ready_workers(),
        queued_jobs=jobs.count_queued(),
        limits=Limits(
            max_time_limit_s=settings.max_time_limit_s,
            max_body_bytes=settings.max_body_bytes,
            max_search_layouts=settings.max_search_layouts,
            max_queued_jobs=settings.max_queued_jobs,
        ),
    )
