"""Fixtures for the REST service: databases (SQLite and PostgreSQL) and clients.

``database_url`` is parametrized over both backends. The PostgreSQL one is the server on
this machine (``AUTOPAR_TEST_POSTGRES_URL``, default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``); each test gets a fresh schema
of its own (the URL sets ``search_path`` to it), dropped afterwards, so runs in parallel
and reruns never see each other's rows. Where no server answers, the PostgreSQL cases
are skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from api.app import create_app
from api.settings import ApiSettings

POSTGRES_URL = os.environ.get(
    "AUTOPAR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_unreachable() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except OperationalError as error:
        return f"no PostgreSQL server reachable at {POSTGRES_URL}: {str(error).splitlines()[0]}"
    return None


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL whose search_path is a new schema, dropped on exit."""
    reason = _postgres_unreachable()
    if reason is not None:
        pytest.skip(reason)
    schema = f"autopar_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'create schema "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'drop schema if exists "{schema}" cascade'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'autopar.db'}"
        return
    with postgres_schema() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'autopar.db'}"


ClientFactory = Callable[..., Any]


@pytest.fixture
def make_client() -> Iterator[ClientFactory]:
    """``make_client(url, **settings)``: a started TestClient; all are closed at the end."""
    opened: list[TestClient] = []

    def make(url: str, **settings: Any) -> TestClient:
        # no estimate process unless a test asks for one (each costs a warm-up)
        options: dict[str, Any] = {"job_workers": 0, "estimate_processes": 0, **settings}
        client = TestClient(create_app(ApiSettings(database_url=url, **options)))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in reversed(opened):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: ClientFactory, sqlite_url: str) -> TestClient:
    """A client with no planning workers (estimates, catalogue, errors)."""
    return make_client(sqlite_url)


@pytest.fixture
def make_db_client(database_url: str, make_client: ClientFactory) -> ClientFactory:
    """``make_client`` on ``database_url`` (both backends); clients close before the database
    is dropped, since this fixture sets the database up first."""
    return lambda **settings: make_client(database_url, **settings)
