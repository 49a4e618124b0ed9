"""Jobs and imported models in the database (tables in :mod:`api.db`).

Job states and who moves them::

    queued --claim (a dispatcher)--> running --worker answers--> done | failed
       |                               |--cancel flag seen-----> cancelled
       +--DELETE-------------------> cancelled
    running --owner silent for STALE_AFTER_S, or its server stopping--> queued

Every transition is one conditional UPDATE (``WHERE status = ...``, and the owner for a
running job), so two dispatchers, or a dispatcher and a DELETE, never both win.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, insert, select, update

from api.db import jobs, models

STALE_AFTER_S = 20.0
"""A running job whose owner has not sent a heartbeat for this long is queued again."""
MAX_ATTEMPTS = 3
"""A job whose worker was lost this many times fails instead of running again."""
REUSABLE_FAILURES = ("infeasible", "invalid-spec")
"""Failures that the same inputs would repeat: stored and returned like a result."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class JobRow:
    id: str
    status: str
    inputs_hash: str
    request: dict[str, Any]
    inputs: dict[str, Any]
    time_limit_s: float
    layouts: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    owner: str | None
    cancel_requested: bool
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: dict[str, Any] | None = None
    """The planner's latest report (``planner.search.progress``), once running."""


def _row(record: Any) -> JobRow:
    m = record._mapping
    return JobRow(
        id=m["id"],
        status=m["status"],
        inputs_hash=m["inputs_hash"],
        request=json.loads(m["request"]),
        inputs=json.loads(m["inputs"]),
        time_limit_s=m["time_limit_s"],
        layouts=m["layouts"],
        result=json.loads(m["result"]) if m["result"] else None,
        error=json.loads(m["error"]) if m["error"] else None,
        owner=m["owner"],
        cancel_requested=bool(m["cancel_requested"]),
        attempts=m["attempts"],
        created_at=as_utc(m["created_at"]) or utcnow(),
        started_at=as_utc(m["started_at"]),
        finished_at=as_utc(m["finished_at"]),
        progress=json.loads(m["progress"]) if m["progress"] else None,
    )


class JobStore:
    """The job table's operations; each is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, job_id: str) -> JobRow | None:
        with self.engine.connect() as conn:
            record = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        return _row(record) if record is not None else None

    def find_reusable(self, inputs_hash: str) -> JobRow | None:
        """The newest job with these inputs that is queued, running, done, or failed for good."""
        with self.engine.connect() as conn:
            records = conn.execute(
                select(jobs)
                .where(jobs.c.inputs_hash == inputs_hash)
                .order_by(jobs.c.created_at.desc())
            ).all()
        for record in records:
            row = _row(record)
            if row.status in ("queued", "running", "done"):
                return row
            slug = (row.error or {}).get("type", "").rsplit(":", 1)[-1]
            if row.status == "failed" and slug in REUSABLE_FAILURES:
                return row
        return None

    def recent(self, limit: int) -> list[JobRow]:
        """The newest ``limit`` jobs, newest first."""
        with self.engine.connect() as conn:
            records = conn.execute(
                select(jobs).order_by(jobs.c.created_at.desc()).limit(limit)
            ).all()
        return [_row(record) for record in records]

    def count_queued(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(jobs).where(jobs.c.status == "queued")
            ).scalar_one()

    def queue_position(self, row: JobRow) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count())
                .select_from(jobs)
                .where(and_(jobs.c.status == "queued", jobs.c.created_at < row.created_at))
            ).scalar_one()

    def mean_duration_s(self, last: int = 20) -> float | None:
        """Mean run time of the last ``last`` finished jobs (for Retry-After)."""
        with self.engine.connect() as conn:
            records = conn.execute(
                select(jobs.c.started_at, jobs.c.finished_at)
                .where(and_(jobs.c.status == "done", jobs.c.started_at.is_not(None)))
                .order_by(jobs.c.finished_at.desc())
                .limit(last)
            ).all()
        spans = [
            (as_utc(end) - as_utc(start)).total_seconds()  # type: ignore[operator]
            for start, end in records
            if start is not None and end is not None
        ]
        return sum(spans) / len(spans) if spans else None

    def create(
        self,
        *,
        inputs_hash: str,
        request: dict[str, Any],
        inputs: dict[str, Any],
        time_limit_s: float,
        layouts: int,
    ) -> JobRow:
        job_id = uuid.uuid4().hex
        with self.engine.begin() as conn:
            conn.execute(
                insert(jobs).values(
                    id=job_id,
                    status="queued",
                    inputs_hash=inputs_hash,
                    request=json.dumps(request),
                    inputs=json.dumps(inputs),
                    time_limit_s=time_limit_s,
                    layouts=layouts,
                    cancel_requested=False,
                    attempts=0,
                    created_at=utcnow(),
                )
            )
        row = self.get(job_id)
        assert row is not None
        return row

    def claim_next(self, owner: str) -> JobRow | None:
        """Move the oldest queued job to running for ``owner``; None when none is queued."""
        for _ in range(5):  # another dispatcher may take the candidate first
            with self.engine.connect() as conn:
                job_id = conn.execute(
                    select(jobs.c.id)
                    .where(jobs.c.status == "queued")
                    .order_by(jobs.c.created_at)
                    .limit(1)
                ).scalar()
            if job_id is None:
                return None
            now = utcnow()
            with self.engine.begin() as conn:
                claimed = conn.execute(
                    update(jobs)
                    .where(and_(jobs.c.id == job_id, jobs.c.status == "queued"))
                    .values(
                        status="running",
                        owner=owner,
                        started_at=now,
                        heartbeat_at=now,
                        attempts=jobs.c.attempts + 1,
                    )
                ).rowcount
            if claimed == 1:
                return self.get(job_id)
        return None

    def heartbeat(self, job_id: str, owner: str, *, progress: dict[str, Any] | None = None) -> bool:
        """Record that ``owner`` still runs the job (with its latest ``progress``, if
        any); True when a cancel was requested."""
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        if progress is not None:
            values["progress"] = json.dumps(progress)
        with self.engine.begin() as conn:
            conn.execute(
                update(jobs).where(and_(jobs.c.id == job_id, jobs.c.owner == owner)).values(values)
            )
            flag = conn.execute(select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).scalar()
        return bool(flag)

    def finish(
        self,
        job_id: str,
        owner: str,
        *,
        status: str,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        progress: dict[str, Any] | None = None,
    ) -> bool:
        """Close a running job of ``owner`` (with the planner's last ``progress``, if
        any); False when it was no longer theirs."""
        values: dict[str, Any] = {
            "status": status,
            "result": json.dumps(result) if result is not None else None,
            "error": json.dumps(error) if error is not None else None,
            "finished_at": utcnow(),
        }
        if progress is not None:
            values["progress"] = json.dumps(progress)
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    update(jobs)
                    .where(
                        and_(jobs.c.id == job_id, jobs.c.status == "running", jobs.c.owner == owner)
                    )
                    .values(values)
                ).rowcount
                == 1
            )

    def request_cancel(self, job_id: str) -> JobRow | None:
        """Cancel a queued job at once; flag a running one for its dispatcher."""
        with self.engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(and_(jobs.c.id == job_id, jobs.c.status == "queued"))
                .values(status="cancelled", cancel_requested=True, finished_at=utcnow())
            )
            conn.execute(
                update(jobs)
                .where(and_(jobs.c.id == job_id, jobs.c.status == "running"))
                .values(cancel_requested=True)
            )
        return self.get(job_id)

    def requeue(self, *, owner: str | None = None, stale_after_s: float = STALE_AFTER_S) -> int:
        """Queue again the running jobs of ``owner`` (all of them), or those gone silent.

        A silent job that has been lost ``MAX_ATTEMPTS`` times fails instead.
        """
        if owner is not None:
            condition = and_(jobs.c.status == "running", jobs.c.owner == owner)
        else:
            cutoff = utcnow() - timedelta(seconds=stale_after_s)
            condition = and_(jobs.c.status == "running", jobs.c.heartbeat_at < cutoff)
        lost = {
            "type": "urn:autopar:problem:internal-error",
            "title": "Internal error",
            "status": 500,
            "detail": f"the job's worker was lost {MAX_ATTEMPTS} times; it was not run again",
        }
        with self.engine.begin() as conn:
            if owner is None:  # a server stopping hands its jobs back; only silence counts
                conn.execute(
                    update(jobs)
                    .where(and_(condition, jobs.c.attempts >= MAX_ATTEMPTS))
                    .values(status="failed", error=json.dumps(lost), finished_at=utcnow())
                )
            conn.execute(
                update(jobs)
                .where(and_(condition, jobs.c.cancel_requested.is_(True)))
                .values(status="cancelled", finished_at=utcnow())
            )
            return conn.execute(
                update(jobs)
                .where(condition)
                .values(
                    status="queued", owner=None, started_at=None, heartbeat_at=None, progress=None
                )
            ).rowcount


class ModelStore:
    """Models imported through ``POST /v1/models/import``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            spec = conn.execute(select(models.c.spec).where(models.c.name == name)).scalar()
        return json.loads(spec) if spec is not None else None

    def all(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            specs = conn.execute(select(models.c.spec).order_by(models.c.name)).scalars().all()
        return [json.loads(spec) for spec in specs]

    def add(self, name: str, spec: dict[str, Any], *, source: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(models).values(
                    name=name, spec=json.dumps(spec), source=source, created_at=utcnow()
                )
            )
