"""The REST service's settings: read once from the environment by ``create_app``.

Every knob that bounds what one request may cost lives here (or, where it must be fixed
in the OpenAPI schema, in :mod:`api.limits`), with its environment variable:

* ``AUTOPAR_DATABASE_URL``: jobs, results and imported models (``planner.settings``:
  a SQLite file in the data directory by default, ``postgresql+psycopg://...`` for
  PostgreSQL).
* ``AUTOPAR_API_TOKEN``: when set, every route but ``/v1/health`` needs
  ``Authorization: Bearer <token>``.
* ``AUTOPAR_JOB_WORKERS``: planning processes of this server process (default: 2, or
  the CPU count when smaller). 0 accepts jobs and leaves them to other server
  processes on the same database.
* ``AUTOPAR_ESTIMATE_PROCESSES``: 1 (the default) starts a process for large estimates
  (``api.estimator``); 0 runs them in a worker thread of the server process instead.
* ``AUTOPAR_MAX_QUEUED_JOBS``: queued plan jobs (over every server on the database)
  above which a new one is refused with 503 and ``Retry-After`` (default 64).
* ``AUTOPAR_MAX_TIME_LIMIT_S``: the largest ``time_limit`` a plan job may ask for (default
  60 s, at most an hour); the OpenAPI schema states it as the field's maximum and a larger
  value is refused with 422.
* ``AUTOPAR_JOB_GRACE_S``: how long past its time limit a job may run before it is
  stopped: ``max(grace, 0.25 x time_limit)`` (default 5 s; the planner finishes its
  tabulation until one layout fits, and its solver always gets a second).
* ``AUTOPAR_MAX_BODY_BYTES``: the largest request body (default 1 MiB).
* ``AUTOPAR_MAX_SEARCH_LAYOUTS``: the largest search space a plan may ask for, in
  candidate layouts (default 20,000).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from planner.errors import SpecError
from planner.settings import database_url
from planner.specs import limits as L

T = TypeVar("T", int, float)

DEFAULT_WORKERS = 2
DEFAULT_ESTIMATE_PROCESSES = 1
DEFAULT_MAX_QUEUED_JOBS = 64
DEFAULT_MAX_TIME_LIMIT_S = 60.0
DEFAULT_JOB_GRACE_S = 5.0
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_SEARCH_LAYOUTS = 20_000


@dataclass(frozen=True)
class ApiSettings:
    """What one server process runs with (see the module docstring for each variable)."""

    database_url: str
    api_token: str | None = field(default=None, repr=False)
    job_workers: int = DEFAULT_WORKERS
    estimate_processes: int = DEFAULT_ESTIMATE_PROCESSES
    max_queued_jobs: int = DEFAULT_MAX_QUEUED_JOBS
    max_time_limit_s: float = DEFAULT_MAX_TIME_LIMIT_S
    job_grace_s: float = DEFAULT_JOB_GRACE_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_search_layouts: int = DEFAULT_MAX_SEARCH_LAYOUTS

    def __post_init__(self) -> None:
        if self.job_workers < 0:
            raise SpecError(f"AUTOPAR_JOB_WORKERS: {self.job_workers} must not be negative")
        if self.estimate_processes not in (0, 1):
            raise SpecError(f"AUTOPAR_ESTIMATE_PROCESSES: {self.estimate_processes} must be 0 or 1")
        if self.max_queued_jobs < 1:
            raise SpecError(f"AUTOPAR_MAX_QUEUED_JOBS: {self.max_queued_jobs} must be >= 1")
        if not L.MIN_TIME_LIMIT_S <= self.max_time_limit_s <= L.MAX_TIME_LIMIT_S:
            raise SpecError(
                f"AUTOPAR_MAX_TIME_LIMIT_S: {self.max_time_limit_s} must be between "
                f"{L.MIN_TIME_LIMIT_S} and {L.MAX_TIME_LIMIT_S:g}"
            )
        if self.job_grace_s < 0:
            raise SpecError(f"AUTOPAR_JOB_GRACE_S: {self.job_grace_s} must not be negative")
        if self.max_body_bytes < 1024:
            raise SpecError(f"AUTOPAR_MAX_BODY_BYTES: {self.max_body_bytes} must be >= 1024")
        if self.max_search_layouts < 1:
            raise SpecError(f"AUTOPAR_MAX_SEARCH_LAYOUTS: {self.max_search_layouts} must be >= 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiSettings:
        """Settings from ``environ`` (default ``os.environ``); a malformed value is a SpecError."""
        env = os.environ if environ is None else environ
        token = env.get("AUTOPAR_API_TOKEN", "").strip() or None
        return cls(
            database_url=database_url(),
            api_token=token,
            job_workers=_number(env, "AUTOPAR_JOB_WORKERS", min(DEFAULT_WORKERS, _cpus()), int),
            estimate_processes=_number(
                env, "AUTOPAR_ESTIMATE_PROCESSES", DEFAULT_ESTIMATE_PROCESSES, int
            ),
            max_queued_jobs=_number(env, "AUTOPAR_MAX_QUEUED_JOBS", DEFAULT_MAX_QUEUED_JOBS, int),
            max_time_limit_s=_number(
                env, "AUTOPAR_MAX_TIME_LIMIT_S", DEFAULT_MAX_TIME_LIMIT_S, float
            ),
            job_grace_s=_number(env, "AUTOPAR_JOB_GRACE_S", DEFAULT_JOB_GRACE_S, float),
            max_body_bytes=_number(env, "AUTOPAR_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, int),
            max_search_layouts=_number(
                env, "AUTOPAR_MAX_SEARCH_LAYOUTS", DEFAULT_MAX_SEARCH_LAYOUTS, int
            ),
        )


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _number(env: Mapping[str, str], name: str, default: T, kind: type[T]) -> T:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return kind(text)
    except ValueError:
        raise SpecError(f"{name}: '{text}' is not a {kind.__name__}") from None
