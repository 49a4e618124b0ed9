"""Open the Optuna storage that holds refinement studies: the service's database by default.

``open_storage(url)`` returns an ``optuna.storages.RDBStorage`` on ``url``, or on
``planner.settings.database_url()`` (``AUTOPAR_DATABASE_URL``, else a SQLite file in the
data directory) when no URL is given, so the REST service and every refinement worker see
the same studies. Optuna creates its own tables (``studies``, ``trials``, ...,
``version_info`` and ``alembic_version``) there on first use.

Settings:

* SQLite: connections wait up to ``SQLITE_TIMEOUT_S`` = 300 s for the file lock, as
  Optuna's own storage tests open it (``optuna/testing/storages.py``); SQLite serialises
  writers, which is enough for a few workers on one machine. Across machines use
  PostgreSQL (``postgresql+psycopg://...``). Connections switch the file to write-ahead
  logging with ``synchronous=NORMAL`` and begin each transaction with the write lock
  (``BEGIN IMMEDIATE``, so a trial is handed to one worker only): a commit then appends
  to the log without waiting for the disk (SQLite's documentation, "Write-Ahead Logging"
  and "PRAGMA synchronous": consistent after a crash, only the last commits may be lost),
  which makes a trial, about
  30 small commits, several times faster than the default rollback journal's fsync per
  commit. WAL needs the file on a local file system, as SQLite does in any case.
* Heartbeats (Optuna's ``heartbeat_interval``/``grace_period``): a worker records one
  every ``HEARTBEAT_INTERVAL_S`` = 30 s while a trial runs; a trial whose worker has been
  silent for ``GRACE_PERIOD_S`` = 120 s is marked FAIL by the next worker that starts a
  trial, so a killed worker leaves a failed trial on record instead of one running forever.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
import sqlalchemy.event
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from planner.errors import SpecError
from planner.settings import database_url

SQLITE_TIMEOUT_S = 300
HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 120


def masked(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and reports)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def open_storage(url: str | None = None) -> optuna.storages.RDBStorage:
    """The RDB storage on ``url`` (default: the service's database); ``SpecError`` if it
    cannot be opened, naming the URL without its password."""
    url = url or database_url()
    try:
        dialect = make_url(url).get_backend_name()
    except sqlalchemy.exc.ArgumentError:
        raise SpecError(
            f"--storage: '{url}' is not a database URL (e.g. sqlite:///studies.db or "
            "postgresql+psycopg://user@host/db)"
        ) from None
    engine_kwargs = (
        {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
        if dialect == "sqlite"
        else {"pool_pre_ping": True}
    )
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna 5.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=GRACE_PERIOD_S,
            )
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ModuleNotFoundError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SpecError(f"--storage: cannot open '{masked(url)}': {first}") from None
    if dialect == "sqlite":
        # connections opened from now on use WAL and take the write lock when a transaction
        # begins; drop the ones Optuna opened to set up
        sqlalchemy.event.listen(storage.engine, "connect", _sqlite_wal)
        sqlalchemy.event.listen(storage.engine, "begin", _sqlite_begin_immediate)
        storage.engine.dispose()
    return storage


def _sqlite_wal(connection: Any, _record: Any) -> None:
    """WAL journal with ``synchronous=NORMAL`` (see the module docstring); the driver's
    own implicit transactions are switched off so that ``_sqlite_begin_immediate`` starts
    each one."""
    connection.isolation_level = None
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    """Begin every transaction with the write lock (``BEGIN IMMEDIATE``).

    Optuna hands a waiting trial to a worker by reading that it is WAITING and then
    setting it RUNNING in one transaction; PostgreSQL locks the row (``SELECT ... FOR
    UPDATE``), SQLite has no row locks, and under its default deferred transactions two
    workers could both read WAITING and both run the trial. Taking the lock at BEGIN makes
    the read and the write one atomic step (SQLAlchemy's documented recipe for pysqlite)."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")
