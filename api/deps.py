"""Annotated dependencies: what ``create_app`` put on ``app.state``, typed for the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.jobs import JobRunner
from api.settings import ApiSettings
from api.store import JobStore, ModelStore


def _settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def _jobs(request: Request) -> JobStore:
    return request.app.state.jobs


def _models(request: Request) -> ModelStore:
    return request.app.state.models


def _runner(request: Request) -> JobRunner:
    return request.app.state.runner


SettingsDep = Annotated[ApiSettings, Depends(_settings)]
JobsDep = Annotated[JobStore, Depends(_jobs)]
ModelsDep = Annotated[ModelStore, Depends(_models)]
RunnerDep = Annotated[JobRunner, Depends(_runner)]
