"""``create_app()``: the FastAPI application, its routes under ``/v1`` and its lifetime.

``autopar serve`` runs ``uvicorn --factory api.app:create_app`` (so ``planner`` never
imports ``api``). On start-up the app opens the database (``AUTOPAR_DATABASE_URL``,
tables created if missing), fits the rate efficiencies once for the synchronous
estimates, starts the process for large estimates (``api.estimator``) and the job
runner's planning processes; on shutdown it stops them and
queues its running jobs again, so a restarted server (or another one on the same
database) finishes them.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from api.db import make_engine
from api.estimator import EstimateProcess
from api.fastpath import EstimateFastPath
from api.guards import BodyLimit, require_token
from api.inline import InlineEstimates
from api.jobs import JobRunner
from api.openapi import install_openapi
from api.problems import ApiProblem, install_handlers, problem_response
from api.routers import catalog, estimates, expert_placements, health, memory_plans, plans
from api.routers import scatter as scatter_router
from api.settings import ApiSettings
from api.store import JobStore, ModelStore
from api.worker import warm_up
from planner.emit.base import autopar_version

log = logging.getLogger("autopar.api")

DATABASE_RETRY_AFTER_S = 5


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """The service, configured by ``settings`` (default: from the environment)."""
    settings = settings or ApiSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        app.state.jobs = JobStore(engine)
        app.state.models = ModelStore(engine)
        warm_up()
        app.state.inline = InlineEstimates()
        app.state.estimator = None
        if settings.estimate_processes > 0:
            app.state.estimator = EstimateProcess()
            await app.state.estimator.start()
        app.state.runner = JobRunner(
            app.state.jobs, workers=settings.job_workers, grace_s=settings.job_grace_s
        )
        app.state.runner.start()
        _freeze_startup_objects()
        try:
            yield
        finally:
            app.state.runner.stop()
            await app.state.inline.stop()
            if app.state.estimator is not None:
                await app.state.estimator.stop()
            engine.dispose()

    app = FastAPI(
        title="autopar",
        version=autopar_version(),
        lifespan=lifespan,
        docs_url=None,
        openapi_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    install_handlers(app)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeoutError)
    async def _database_down(request: Request, error: Exception) -> JSONResponse:
        log.error("database error on %s %s: %s", request.method, request.url.path, error)
        problem = ApiProblem(
            503,
            "unavailable",
            "the database does not answer; try again shortly",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        )
        return problem_response(problem, request)

    # without a token there is nothing to check: no dependency to run on every request
    secured = [Depends(require_token)] if settings.api_token is not None else []
    app.include_router(health.router, prefix="/v1")
    app.include_router(catalog.router, prefix="/v1", dependencies=secured)
    app.include_router(estimates.router, prefix="/v1", dependencies=secured)
    app.include_router(plans.router, prefix="/v1", dependencies=secured)
    app.include_router(scatter_router.router, prefix="/v1", dependencies=secured)
    app.include_router(expert_placements.router, prefix="/v1", dependencies=secured)
    app.include_router(memory_plans.router, prefix="/v1", dependencies=secured)
    install_openapi(app, settings)
    _schema_routes(app, secured)
    _web_app_routes(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        EstimateFastPath, max_body_bytes=settings.max_body_bytes, api_token=settings.api_token
    )  # added last: the outermost of the app's middlewares, before the body limit
    return app


def _freeze_startup_objects() -> None:
    """Leave the objects alive after start-up (modules, catalogue, caches: about 180,000)
    out of the cyclic garbage collector's full collections.

    Otherwise each full collection walks them all: measured in the server under
    ``benchmarks/service_load.py``, 70-95 ms with the event loop stopped (about one per
    3,000 estimates), which every request in flight waits out; after ``gc.freeze`` 5-13
    ms. Garbage is collected first, so that only live objects are frozen.
    """
    gc.collect()
    gc.freeze()


STATIC_DIR = Path(__file__).parent / "static"
"""The plan explorer's page, script and styles (shipped in the package, no build step)."""


def _web_app_routes(app: FastAPI) -> None:
    """The plan explorer at ``/`` and its files at ``/static``: a page that talks only to
    ``/v1`` (with the token the user types, when the server requires one), so serving the
    files themselves needs no token."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


def _schema_routes(app: FastAPI, secured: list[Any]) -> None:
    """The OpenAPI document and its Swagger page, behind the token like every route."""

    @app.get("/v1/openapi.json", include_in_schema=False, dependencies=secured)
    def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/v1/docs", include_in_schema=False, dependencies=secured)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/v1/openapi.json", title="autopar API")
