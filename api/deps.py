"""Annotated dependencies: what ``create_app`` put on ``app.state``, typed for the routers.

They are ``async def`` although they never await: FastAPI runs a plain ``def``
dependency in its thread pool, and a thread hop per dependency per request cost more
CPU than the rest of FastAPI's request handling (measured under
``benchmarks/service_load.py``: three sync dependencies added about 0.35 ms of server CPU
to each estimate).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.jobs import JobRunner
from api.settings import ApiSettings
from api.store import JobStore, ModelStore


async def _settings(request: Request) -> ApiSettings:
    return request.app.state.settings


async def _jobs(request: Request) -> JobStore:
    return request.app.state.jobs


async def _models(request: Request) -> ModelStore:
    return request.app.state.models


async def _runner(request: Request) -> JobRunner:
    return request.app.state.runner


SettingsDep = Annotated[ApiSettings, Depends(_settings)]
JobsDep = Annotated[JobStore, Depends(_jobs)]
ModelsDep = Annotated[ModelStore, Depends(_models)]
RunnerDep = Annotated[JobRunner, Depends(_runner)]
