"""The service's database: engine by URL, and its two tables.

Tables (the ``autopar_`` prefix keeps them apart from Optuna's, which share the database):

``autopar_jobs``
    one plan job: ``id``; ``status`` (queued, running, done, failed, cancelled);
    ``inputs_hash`` (sha256 of the canonical inputs: identical requests find the stored
    job); ``request`` (the body as sent) and ``inputs`` (the resolved specs the worker
    runs, so a job survives the deletion of an imported model); ``time_limit_s`` (after
    the server's cap); ``layouts`` (candidate layouts to evaluate); ``result`` (the
    ``autopar plan --json`` document) or ``error`` (a problem); ``owner`` and
    ``heartbeat_at`` (which server process runs it and when it last said so: a job
    whose owner went silent is queued again); ``progress`` (the planner's latest report,
    ``planner.search.progress``); ``cancel_requested``; ``attempts``; timestamps.
``autopar_models``
    models imported from a HuggingFace ``config.json``: ``name``, ``spec``, ``source``.

JSON columns hold text (``json.dumps``), the same on SQLite and PostgreSQL. Tables are
created on start-up (``create_all`` is idempotent); a jobs table made before a column
was added gets it then (``ADDED_COLUMNS``, ``ALTER TABLE ... ADD COLUMN``). SQLite runs
in WAL mode with a busy timeout, so the request threads, the job dispatchers and several
server processes can share one file.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

CREATE_ATTEMPTS = 3
SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another's lock (Optuna's tests open it with 300 s)."""

metadata = MetaData()

jobs = Table(
    "autopar_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("inputs_hash", String(64), nullable=False),
    Column("request", Text, nullable=False),
    Column("inputs", Text, nullable=False),
    Column("time_limit_s", Float, nullable=False),
    Column("layouts", Integer, nullable=False),
    Column("result", Text),
    Column("error", Text),
    Column("owner", String(64)),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("progress", Text),
    Index("ix_autopar_jobs_inputs_hash", "inputs_hash"),
    Index("ix_autopar_jobs_status_created", "status", "created_at"),
)

models = Table(
    "autopar_models",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("spec", Text, nullable=False),
    Column("source", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


ADDED_COLUMNS = {"progress": "TEXT"}
"""Columns of ``autopar_jobs`` newer than the table itself: added to older databases."""


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the tables created; SQLite gets WAL and a busy timeout."""
    parsed = make_url(url)
    # request threads (up to 40 in Starlette's pool) and one dispatcher per planning worker
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 30}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    for attempt in range(CREATE_ATTEMPTS):
        try:
            metadata.create_all(engine)
            break
        except (ProgrammingError, IntegrityError, OperationalError):
            # another server process created the tables between our check and our CREATE
            # (SQLite says so with an OperationalError: "table ... already exists")
            if attempt == CREATE_ATTEMPTS - 1:
                raise
            time.sleep(0.2)
    _add_columns(engine)
    return engine


def _add_columns(engine: Engine) -> None:
    """Add the ``ADDED_COLUMNS`` a jobs table made by an older autopar lacks."""
    for attempt in range(CREATE_ATTEMPTS):
        present = {column["name"] for column in inspect(engine).get_columns(jobs.name)}
        missing = [name for name in ADDED_COLUMNS if name not in present]
        if not missing:
            return
        try:
            with engine.begin() as conn:
                for name in missing:
                    conn.execute(
                        text(f"ALTER TABLE {jobs.name} ADD COLUMN {name} {ADDED_COLUMNS[name]}")
                    )
        except (OperationalError, ProgrammingError):
            # another server process added it first
            if attempt == CREATE_ATTEMPTS - 1:
                raise
            time.sleep(0.2)


def backend_name(engine: Engine) -> str:
    """'sqlite' or 'postgresql' (the dialect, without the driver)."""
    return engine.url.get_backend_name()


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
