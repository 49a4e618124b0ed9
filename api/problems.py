"""Errors as RFC 9457 problem details: one JSON shape for every error the service returns.

Every error response has ``Content-Type: application/problem+json`` and a body with
``type`` (a URN naming the kind of problem, ``urn:autopar:problem:<slug>``), ``title``,
``status``, ``detail`` (what was wrong, naming the field) and ``instance`` (the request
path); a request that breaks the schema also lists each broken field under ``errors``.
No traceback, file path or exception class ever reaches a client: an unexpected
exception is logged with an id and answered with a 500 that quotes only that id.

How autopar's own errors map (``planner.errors``): ``Infeasible`` -> 422 ``infeasible``;
``ImportFormatError`` -> 422 ``import-failed``; ``TimeLimitReached`` -> 422 ``time-limit``;
other ``SpecError`` -> 422 ``invalid-spec``; ``UnknownNameError`` -> 404 ``unknown-name``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from planner.errors import (
    AutoparError,
    ImportFormatError,
    Infeasible,
    SpecError,
    TimeLimitReached,
    UnknownNameError,
)

log = logging.getLogger("autopar.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:autopar:problem:"

TITLES: dict[str, str] = {
    "invalid-request": "The request does not match the schema",
    "invalid-spec": "An input breaks a rule",
    "infeasible": "No layout fits",
    "import-failed": "The config.json cannot be imported",
    "unknown-name": "Unknown name",
    "not-found": "Not found",
    "conflict": "Conflict with the current state",
    "unauthorized": "Missing or wrong bearer token",
    "payload-too-large": "Request body too large",
    "unsupported-media-type": "The request body is not JSON",
    "queue-full": "The job queue is full",
    "unavailable": "Service unavailable",
    "time-limit": "The job ran past its time limit",
    "internal-error": "Internal error",
    "http-error": "HTTP error",
}


class FieldProblem(BaseModel):
    field: str = Field(description="where in the request, e.g. body.model.inline.num_layers")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="urn:autopar:problem:<slug>, or about:blank")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str | None = Field(default=None, description="the request path")
    errors: list[FieldProblem] | None = Field(
        default=None, description="each field the request got wrong (schema errors only)"
    )


class ApiProblem(Exception):
    """Raise anywhere in a request to answer with a problem."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        errors: list[FieldProblem] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.slug, self.detail = status, slug, detail
        self.headers = headers or {}
        self.errors = errors

    def problem(self, instance: str | None = None) -> Problem:
        return Problem(
            type=TYPE_PREFIX + self.slug,
            title=TITLES.get(self.slug, self.slug),
            status=self.status,
            detail=self.detail,
            instance=instance,
            errors=self.errors,
        )


def from_autopar_error(error: AutoparError) -> ApiProblem:
    """The status and kind of one of autopar's own errors (see the module docstring)."""
    detail = " ".join(str(error).split())
    if isinstance(error, UnknownNameError):
        return ApiProblem(404, "unknown-name", detail)
    if isinstance(error, Infeasible):
        return ApiProblem(422, "infeasible", detail)
    if isinstance(error, TimeLimitReached):
        return ApiProblem(422, "time-limit", detail)
    if isinstance(error, ImportFormatError):
        return ApiProblem(422, "import-failed", detail)
    if isinstance(error, SpecError):
        return ApiProblem(422, "invalid-spec", detail)
    return ApiProblem(422, "invalid-spec", detail)


def internal_error(error_id: str) -> ApiProblem:
    return ApiProblem(
        500,
        "internal-error",
        f"an internal error occurred; the server log has it under id {error_id}",
    )


def problem_response(problem: ApiProblem, request: Request | None = None) -> JSONResponse:
    instance = request.url.path if request is not None else None
    body = problem.problem(instance).model_dump(mode="json", exclude_none=True)
    return JSONResponse(
        body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_MEDIA_TYPE
    )


def _field_path(loc: tuple[Any, ...]) -> str:
    """('body', 'fix', 'warp', '[key]') -> 'body.fix.warp' (pydantic marks a bad dict key)."""
    return ".".join(str(part) for part in loc if part != "[key]") or "(body)"


def validation_problem(error: RequestValidationError) -> ApiProblem:
    """A 422 naming every field the request got wrong (pydantic's messages, one line each)."""
    fields = []
    for item in error.errors():
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        if item.get("type") == "extra_forbidden":
            message = "unknown field"
        elif item.get("type") == "missing":
            message = "required field is missing"
        fields.append(FieldProblem(field=_field_path(tuple(item.get("loc", ()))), message=message))
    detail = "; ".join(f"{f.field}: {f.message}" for f in fields) or "the request is invalid"
    return ApiProblem(422, "invalid-request", detail, errors=fields)


def install_handlers(app: FastAPI) -> None:
    """Every error path of the app answers with a problem (see the module docstring)."""

    @app.exception_handler(ApiProblem)
    async def _api_problem(request: Request, error: ApiProblem) -> JSONResponse:
        return problem_response(error, request)

    @app.exception_handler(AutoparError)
    async def _autopar(request: Request, error: AutoparError) -> JSONResponse:
        return problem_response(from_autopar_error(error), request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        return problem_response(validation_problem(error), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        slug = {
            400: "invalid-request",
            401: "unauthorized",
            404: "not-found",
            413: "payload-too-large",
        }.get(error.status_code, "http-error")
        detail = error.detail if isinstance(error.detail, str) else "HTTP error"
        headers = dict(error.headers or {})
        problem = ApiProblem(error.status_code, slug, detail, headers=headers)
        return problem_response(problem, request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        log.exception("internal error %s on %s %s", error_id, request.method, request.url.path)
        return problem_response(internal_error(error_id), request)
