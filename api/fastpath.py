"""``POST /v1/estimate`` answered without FastAPI's per-request machinery when none is needed.

The estimate is the service's hot route, and FastAPI's handling of one request (matching
it against every route of every router, reading and parsing the body, solving the
endpoint's parameters, its exit stacks and telemetry hooks) cost about as much server CPU
as a small estimate itself. Measured with ``benchmarks/service_load.py``'s client at 256
requests in flight on the 2-core machine, server CPU per estimate: 0.81-0.86 ms through
FastAPI, 0.61-0.63 ms through this path; with the estimate itself stubbed out, 0.17-0.19
against 0.06-0.08 ms.

:class:`EstimateFastPath` is the outermost of the app's own middlewares. It answers a
request itself only when nothing about it is unusual:

* ``POST /v1/estimate`` with ``Content-Type: application/json`` and a body within
  ``max_body_bytes``;
* the right ``Authorization: Bearer`` token, where the server has one;
* a body that is JSON and validates as an :class:`~api.schemas.EstimateRequest`;
* no ``memplan`` (its simulation takes seconds: the route runs it in a thread);
* a model from the catalogue (an imported one is read from the database, in a thread) and
  a schedule small enough to run on the event loop (``INLINE_PIPELINE_OPS``);
* no error while resolving and estimating.

It then runs what the route runs for such a request (``prepare_estimate``,
``estimate_json``) and sends the same response (200, ``application/json``, the
Estimate's JSON). Anything else is handed to the app unchanged, the body replayed as it
arrived, so that every error and every other case is answered by the route, its
validation and its problem handlers, exactly as without this path; a request that fails
here is therefore parsed (and resolved) twice, which costs little next to an estimate.
``tests/api/test_api_fastpath.py`` compares the two paths' answers.
"""

from __future__ import annotations

import hmac
import json

from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from api.estimator import estimate_json
from api.guards import read_body, replay_body
from api.inline import InlineEstimates
from api.inputs import needs_store, prepare_estimate
from api.routers.estimates import INLINE_PIPELINE_OPS
from api.schemas import EstimateRequest

ESTIMATE_PATH = "/v1/estimate"
_READ = (b"content-type", b"content-length", b"authorization")


class EstimateFastPath:
    """Answer plain ``POST /v1/estimate`` requests directly (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, api_token: str | None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.api_token = api_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != ESTIMATE_PATH
            or scope["method"] != "POST"
            or not self._plain(scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        read = await read_body(receive, limit=self.max_body_bytes)
        if read is None:
            return
        text = None if read.over_limit else await self._answer(scope, read.body)
        if text is None:  # the app answers: its body limit, its route and problems
            await self.app(scope, replay_body(read, receive), send)
            return
        payload = text.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(payload)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _plain(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """A JSON body no larger than the limit and, where required, the right token."""
        found: dict[bytes, bytes] = {}
        for name, value in headers:
            if name in _READ and name not in found:  # the first one, as Starlette reads
                found[name] = value
        content_type = found.get(b"content-type", b"")
        if content_type.strip().lower() != b"application/json":
            return False
        length = found.get(b"content-length", b"")
        if not length.isdigit() or int(length) > self.max_body_bytes:
            return False
        if self.api_token is None:
            return True
        # as HTTPBearer and require_token read it: latin-1 text, the credentials stripped
        scheme, _, given = found.get(b"authorization", b"").decode("latin-1").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.api_token.encode()
        )

    async def _answer(self, scope: Scope, body: bytes) -> str | None:
        """The estimate's JSON, or None where the route should answer instead."""
        try:
            request = EstimateRequest.model_validate(json.loads(body))
        except (ValueError, ValidationError, RecursionError):  # JSONDecodeError, Unicode...
            return None
        if needs_store(request) or request.memplan:  # memplan: seconds, in a thread
            return None
        state = scope["app"].state
        try:
            call = prepare_estimate(request, state.models)
            if call.pipeline_ops > INLINE_PIPELINE_OPS:
                return None
            inline: InlineEstimates = state.inline
            return await inline.run(estimate_json, call)
        except Exception:  # the route raises it again and answers with its problem
            return None
