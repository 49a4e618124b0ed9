"""POST /v1/estimate's fast path answers exactly as the route does, and only when it may.

Every request is sent to two apps on the same settings, one with
:class:`api.fastpath.EstimateFastPath` and one without it; status, content type and body
must be equal, for plain estimates and for every kind of unusual or bad request (which
the fast path hands to the route).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from types import SimpleNamespace
from typing import Any

from api_support import SMALL_ESTIMATE
from fastapi.testclient import TestClient
from starlette.datastructures import State

from api.app import create_app
from api.fastpath import EstimateFastPath
from api.inline import InlineEstimates
from api.settings import ApiSettings
from planner import catalog

TOKEN = "fast-path-token"
JSON = {"content-type": "application/json"}
CASES: list[tuple[str, Any, dict[str, str]]] = [
    ("plain", SMALL_ESTIMATE, JSON),
    ("pipeline", {**SMALL_ESTIMATE, "tp": 2, "pp": 2, "global_batch": 512}, JSON),
    ("interleaved", {**SMALL_ESTIMATE, "tp": 1, "pp": 4, "vpp": 2}, JSON),
    ("fp8 in tokens", {**SMALL_ESTIMATE, "precision": "fp8", "global_batch": None,
                       "global_batch_tokens": 64 * 4096}, JSON),
    ("inline model", {**SMALL_ESTIMATE,
                      "model": catalog.load_model("llama-3.1-8b").model_dump(mode="json")}, JSON),
    ("large: estimated in a thread", {**SMALL_ESTIMATE, "tp": 1, "pp": 8, "global_batch": 4096},
     JSON),
    ("schema violation", {**SMALL_ESTIMATE, "tp": 0}, JSON),
    ("unknown field", {**SMALL_ESTIMATE, "warp": 9}, JSON),
    ("unknown model", {**SMALL_ESTIMATE, "model": "llama-9"}, JSON),
    ("unknown cluster", {**SMALL_ESTIMATE, "cluster": "dgx-z9"}, JSON),
    ("broken layout rule", {**SMALL_ESTIMATE, "tp": 3}, JSON),
    ("schedule too large", {**SMALL_ESTIMATE, "gpus": 64, "tp": 1, "pp": 64,
                            "global_batch": 16384}, JSON),
    ("not JSON", b"{not json", JSON),
    ("empty body", b"", JSON),
    ("a list", b"[1, 2]", JSON),
    ("not UTF-8", b'{"model": "\xff"}', JSON),
    ("text/plain", SMALL_ESTIMATE, {"content-type": "text/plain"}),
    ("charset", SMALL_ESTIMATE, {"content-type": "application/json; charset=utf-8"}),
    ("problem+json", SMALL_ESTIMATE, {"content-type": "application/problem+json"}),
    ("no content type", SMALL_ESTIMATE, {}),
    ("too large", {**SMALL_ESTIMATE, "padding": "x" * 5000}, JSON),
]  # fmt: skip
TOKEN_CASES = [
    ("right token", {"authorization": f"Bearer {TOKEN}"}),
    ("scheme in lower case", {"authorization": f"bearer {TOKEN}"}),
    ("spaces around the token", {"authorization": f"Bearer  {TOKEN} "}),
    ("wrong token", {"authorization": "Bearer nope"}),
    ("no token", {}),
    ("another scheme", {"authorization": f"Basic {TOKEN}"}),
]


@contextmanager
def two_apps(url: str, **settings: Any) -> Iterator[tuple[TestClient, TestClient]]:
    """Clients of the app with its fast path and of the same app without it."""
    options: dict[str, Any] = {"job_workers": 0, "estimate_processes": 0, **settings}
    fast = create_app(ApiSettings(database_url=url, **options))
    plain = create_app(ApiSettings(database_url=url, **options))
    assert any(m.cls is EstimateFastPath for m in fast.user_middleware)
    plain.user_middleware = [m for m in plain.user_middleware if m.cls is not EstimateFastPath]
    with ExitStack() as stack:
        yield stack.enter_context(TestClient(fast)), stack.enter_context(TestClient(plain))


def _send(client: TestClient, body: Any, headers: dict[str, str]) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/v1/estimate", content=content, headers=headers)


def _same(fast: Any, plain: Any, case: str) -> None:
    assert fast.status_code == plain.status_code, (case, fast.text, plain.text)
    assert fast.headers.get("content-type") == plain.headers.get("content-type"), case
    assert fast.headers.get("www-authenticate") == plain.headers.get("www-authenticate"), case
    assert fast.content == plain.content, case


def test_both_paths_answer_alike(sqlite_url: str) -> None:
    with two_apps(sqlite_url, max_body_bytes=4096) as (fast, plain):
        statuses = set()
        for case, body, headers in CASES:
            answers = _send(fast, body, headers), _send(plain, body, headers)
            _same(*answers, case)
            statuses.add(answers[0].status_code)
        assert statuses == {200, 400, 404, 413, 415, 422}  # 415: a body that is not JSON


def test_both_paths_check_the_token_alike(sqlite_url: str) -> None:
    with two_apps(sqlite_url, api_token=TOKEN) as (fast, plain):
        statuses = set()
        for case, auth in TOKEN_CASES:
            answers = (
                _send(fast, SMALL_ESTIMATE, {**JSON, **auth}),
                _send(plain, SMALL_ESTIMATE, {**JSON, **auth}),
            )
            _same(*answers, case)
            statuses.add(answers[0].status_code)
        assert statuses == {200, 401}


def test_an_imported_model_is_resolved_by_the_route(sqlite_url: str) -> None:
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 1024,
        "intermediate_size": 2816, "num_hidden_layers": 8, "num_attention_heads": 16,
        "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 4096,
    }  # fmt: skip
    with two_apps(sqlite_url) as (fast, plain):
        imported = fast.post("/v1/models/import?name=tiny-llama", json=config)
        assert imported.status_code == 201, imported.text
        body = {**SMALL_ESTIMATE, "model": "tiny-llama"}
        _same(_send(fast, body, JSON), _send(plain, body, JSON), "imported model")


def _through_fast_path(body: bytes, headers: dict[str, str]) -> tuple[int, bytes | None]:
    """(status answered, body the app behind the fast path received; None if not called)."""
    received: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        received.append(message["body"])
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def run() -> int:
        state = State({"models": None, "inline": InlineEstimates()})
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/estimate",
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()]
            + [(b"content-length", str(len(body)).encode())],
            "app": SimpleNamespace(state=state),
        }
        sent: list[dict[str, Any]] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await EstimateFastPath(app, max_body_bytes=4096, api_token=None)(scope, receive, send)
        await state.inline.stop()
        return sent[0]["status"]

    status = asyncio.run(run())
    return status, received[0] if received else None


def test_only_plain_requests_skip_the_route() -> None:
    """The fast path answers a plain estimate itself; anything else reaches the app with
    its body as sent."""
    plain = json.dumps(SMALL_ESTIMATE).encode()
    assert _through_fast_path(plain, JSON) == (200, None)
    for body, headers in [
        (json.dumps({**SMALL_ESTIMATE, "tp": 3}).encode(), JSON),  # the route's problem
        (json.dumps({**SMALL_ESTIMATE, "tp": 0}).encode(), JSON),
        (json.dumps({**SMALL_ESTIMATE, "padding": "x" * 5000}).encode(), JSON),
        (b"{not json", JSON),
        (plain, {"content-type": "text/plain"}),
    ]:
        assert _through_fast_path(body, headers) == (418, body)
