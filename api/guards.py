"""Request guards: the body checks (ASGI middleware) and the optional bearer token.

The body checks run before FastAPI reads anything:

* size: a ``Content-Length`` over the limit is refused at once, and a body sent without
  one is counted as it arrives and refused as soon as it passes the limit, so an
  oversized upload never sits in memory whole (413);
* media type: every body the service reads is JSON, so a body declared as anything else
  (``text/plain``, a form) is refused with 415 (a body with no ``Content-Type`` is read
  as JSON, as FastAPI does);
* nesting: a JSON body nested deeper than ``MAX_JSON_DEPTH`` is refused with 422 before
  any parser recurses into it (100,000 nested lists used to exhaust Python's recursion
  limit inside the JSON parser: a 500). Counted in one pass over the bytes, strings
  left out.

The token (``AUTOPAR_API_TOKEN``) is compared in constant time; a missing or wrong token
answers 401 with ``WWW-Authenticate: Bearer``. ``/v1/health`` stays open for load
balancers.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import ApiProblem, problem_response


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, f"{declared} bytes")
            return
        read = await read_body(receive, limit=self.max_bytes)
        if read is None:
            return
        if read.over_limit:
            await self._refuse(scope, receive, send, f"more than {self.max_bytes} bytes")
            return
        problem = body_problem(scope, read.body)
        if problem is not None:
            await respond(problem, scope, receive, send)
            return
        await self.app(scope, replay_body(read, receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        problem = ApiProblem(
            413,
            "payload-too-large",
            f"request body: {size} exceeds this server's limit of {self.max_bytes} bytes "
            "(AUTOPAR_MAX_BODY_BYTES)",
        )
        await respond(problem, scope, receive, send)


MAX_JSON_DEPTH = 32
"""Deepest nesting of a request body: the schemas nest at most 5 levels (a plan request's
inline cluster's GPU's peaks); 32 leaves room and stays far below Python's recursion
limit."""
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSE = np.frombuffer(b"]}", dtype=np.uint8)


def json_depth(body: bytes) -> int:
    """How deeply ``body``'s arrays and objects nest (brackets inside strings not counted)."""
    data = np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8)
    steps = np.isin(data, _OPEN).astype(np.int64) - np.isin(data, _CLOSE)
    return int(np.cumsum(steps).max(initial=0))


def _media_type(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return value.decode("latin-1").split(";", 1)[0].strip().lower()
    return None


def body_problem(scope: Scope, body: bytes) -> ApiProblem | None:
    """The problem with a request body the service would read (see the module docstring)."""
    if not body or scope.get("method") not in ("POST", "PUT", "PATCH"):
        return None
    media = _media_type(scope)
    if media is not None and media != "application/json" and not media.endswith("+json"):
        return ApiProblem(
            415,
            "unsupported-media-type",
            f"request body: Content-Type '{media}' is not JSON; send the body as application/json",
        )
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        return ApiProblem(
            422,
            "invalid-request",
            f"request body: JSON nested {depth} levels deep, more than this server's limit "
            f"of {MAX_JSON_DEPTH}",
        )
    return None


async def respond(problem: ApiProblem, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer with ``problem`` and close the connection (the body may not all be read)."""
    response = problem_response(problem)
    response.headers["connection"] = "close"
    await response(scope, receive, send)


@dataclass(frozen=True)
class ReadBody:
    """A request body as far as it was read: all of it, or up to past the limit."""

    body: bytes
    more: bool
    """The stream goes on after ``body`` (reading stopped past the limit)."""
    over_limit: bool


async def read_body(receive: Receive, *, limit: int) -> ReadBody | None:
    """Read the body until it ends or passes ``limit`` bytes; None if the client left."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
        if size > limit or not more:
            return ReadBody(b"".join(chunks), more=more, over_limit=size > limit)


def replay_body(read: ReadBody, receive: Receive) -> Receive:
    """``receive`` for the app: the body read so far first, then the rest of the stream."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": read.body, "more_body": read.more}
        return await receive()

    return replay


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


bearer = HTTPBearer(
    auto_error=False,
    description="Required on every route but /v1/health when the server sets AUTOPAR_API_TOKEN.",
)


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Check the bearer token when the server has one (``request.app.state.settings``).

    ``async`` so that FastAPI runs it on the event loop, not in a thread (``api.deps``)."""
    expected: str | None = request.app.state.settings.api_token
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiProblem(
            401,
            "unauthorized",
            "this server requires 'Authorization: Bearer <token>' (AUTOPAR_API_TOKEN); "
            + ("the token given is wrong" if credentials is not None else "none was given"),
            headers={"WWW-Authenticate": "Bearer"},
        )
