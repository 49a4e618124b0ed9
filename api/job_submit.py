"""Find-or-queue for the job kinds beside plans (scatter, expert placements, memory plans).

A job's canonical inputs hash to a key: a stored job with the same key that is queued,
running, done or failed for good is returned (``reused``; 200 once finished, 202 while it
runs), otherwise a new job is queued, unless the queue is at its bound (503 with
``Retry-After``). The ``Location`` header names the job either way. One critical section
per server process, shared with ``POST /v1/plans``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Response

from api.inputs import inputs_hash
from api.jobs import JobRunner
from api.routers.plans import _queue_full, _submit_lock
from api.settings import ApiSettings
from api.store import JobRow, JobStore


@dataclass(frozen=True)
class Submitted:
    """The job a submission stands for, and whether it was found rather than queued."""

    row: JobRow
    reused: bool


def find_or_queue(
    *,
    jobs: JobStore,
    settings: ApiSettings,
    runner: JobRunner,
    response: Response,
    request: dict[str, Any],
    inputs: dict[str, Any],
    time_limit_s: float,
    location: str,
    layouts: int = 0,
) -> Submitted:
    """The stored job for ``inputs`` or a newly queued one (see the module docstring);
    ``location`` is the job collection's path (``/v1/scatter``)."""
    key = inputs_hash(inputs)
    with _submit_lock:
        existing = jobs.find_reusable(key)
        if existing is None:
            queued = jobs.count_queued()
            if queued >= settings.max_queued_jobs:
                raise _queue_full(queued, jobs, settings.job_workers)
            created = jobs.create(
                inputs_hash=key,
                request=request,
                inputs=inputs,
                time_limit_s=time_limit_s,
                layouts=layouts,
            )
    found = existing or created
    response.headers["Location"] = f"{location}/{found.id}"
    if existing is not None:
        if existing.status in ("done", "failed"):
            response.status_code = 200
        return Submitted(existing, reused=True)
    runner.notify()
    return Submitted(created, reused=False)
