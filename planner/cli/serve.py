"""``autopar serve``: run the REST service (FastAPI under uvicorn).

The app is loaded by its import string, ``api.app:create_app`` (a factory), so ``planner``
never imports ``api`` (imports only go down the layers of docs/architecture.md; an
import-linter contract in pyproject.toml checks it). Options become the environment the app
reads (``api.settings``), which uvicorn's worker processes inherit.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from planner.errors import SpecError
from planner.settings import DATABASE_URL_ENV, database_url

APP_FACTORY = "api.app:create_app"


def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="Server processes (each runs its own planning workers).")
    ] = 1,
    job_workers: Annotated[
        int | None,
        typer.Option(
            "--job-workers", min=0, help="Planning processes per server process (default: 2)."
        ),
    ] = None,
    database_url_option: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help=f"SQLAlchemy URL (default: ${DATABASE_URL_ENV}, else a SQLite file).",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve plans and estimates over HTTP (see README, "REST service")."""
    import uvicorn

    url = database_url_option or database_url()
    try:
        make_url(url)
    except ArgumentError:
        raise SpecError(f"--database-url: '{url}' is not a SQLAlchemy database URL") from None
    os.environ[DATABASE_URL_ENV] = url
    if job_workers is not None:
        os.environ["AUTOPAR_JOB_WORKERS"] = str(job_workers)
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        timeout_graceful_shutdown=30,
    )
