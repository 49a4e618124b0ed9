"""OpenAPI documentation of the error responses and the server's bounds.

Routes declare their error statuses with :func:`errors`; each is documented as
``application/problem+json`` with the ``Problem`` schema (and its headers: ``Retry-After``
on 503, ``WWW-Authenticate`` on 401). :func:`install_openapi` adds the ``Problem``
schemas to the components and writes the server's active bounds into the description;
the bearer scheme appears only when the server sets ``AUTOPAR_API_TOKEN``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.problems import PROBLEM_MEDIA_TYPE, TITLES, Problem
from api.settings import ApiSettings
from planner.specs import limits as L

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_DESCRIPTIONS = {
    400: "the body cannot be read (not UTF-8 JSON)",
    401: "missing or wrong bearer token (only when the server sets AUTOPAR_API_TOKEN)",
    404: "unknown name or id",
    409: "the job is not in a state that allows this",
    413: "request body over the server's limit",
    415: "the request body is not JSON (Content-Type)",
    422: "the request breaks the schema or a rule (detail names the field)",
    503: "job queue full, or the database unreachable; retry after Retry-After seconds",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
    503: {
        "Retry-After": {
            "schema": {"type": "string"},
            "description": "seconds to wait before trying again",
        }
    },
}
ALWAYS = (401, 503)
"""Statuses every route but health can answer."""


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries for these error statuses (plus 401 and 503; and 400 and
    415 with 413, for routes that read a body)."""
    if 413 in statuses:
        statuses = (*statuses, 400, 415)
    documented: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, *ALWAYS}):
        entry: dict[str, Any] = {
            "description": _DESCRIPTIONS.get(status, TITLES["http-error"]),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}},
        }
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
        documented[status] = entry
    return documented


def describe(settings: ApiSettings) -> str:
    return (
        "Plans and estimates of parallel layouts for training transformers: the REST face "
        "of the `autopar` CLI. Errors are RFC 9457 problem details "
        "(`application/problem+json`, `type` = `urn:autopar:problem:<slug>`).\n\n"
        "Bounds of this server: clusters up to "
        f"{L.MAX_GPUS} GPUs; global batch up to {L.MAX_GLOBAL_BATCH} sequences; an "
        f"estimate's pipeline schedule up to {L.MAX_PIPELINE_OPS} operations "
        "(micro-batches x pp x vpp); a plan's search space up to "
        f"{settings.max_search_layouts} candidate layouts; a plan's time limit at most "
        f"{settings.max_time_limit_s:g} s (AUTOPAR_MAX_TIME_LIMIT_S; a job is stopped at its "
        "limit plus "
        f"max({settings.job_grace_s:g} s, a quarter of the limit)); "
        f"request bodies up to {settings.max_body_bytes} bytes; {settings.max_queued_jobs} "
        "queued jobs, beyond which a submission gets 503 with Retry-After."
    )


def install_openapi(app: FastAPI, settings: ApiSettings) -> None:
    """Generate the schema once, with the Problem components and the bounds."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=describe(settings),
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(problem.pop("$defs", {}))
        components["Problem"] = problem
        # the one time-limit rule: the schema's maximum is this server's cap
        time_limit = components["PlanRequest"]["properties"]["time_limit"]
        time_limit["maximum"] = settings.max_time_limit_s
        if settings.api_token is None:
            _drop_security(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _drop_security(schema: dict[str, Any]) -> None:
    """This server asks for no token: say so (the bearer scheme is only documented when set)."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            operation.pop("security", None)
    schema.get("components", {}).pop("securitySchemes", None)
