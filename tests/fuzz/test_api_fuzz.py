"""Fuzzing the REST service: whatever the body, a 2xx answer or a 4xx problem, never a 5xx.

Two generators: hypothesis strategies over the request bodies of ``POST /v1/estimate``,
``POST /v1/plans`` and ``POST /v1/models/import`` (fields from plausible values, values at
and past the bounds, junk of every JSON type, unknown keys, deep nesting, other content
types), and schemathesis over the app's own OpenAPI document (every operation, valid and
invalid requests). Every error must be ``application/problem+json`` with the RFC 9457
fields. The app runs in-process with no planning workers (plans are validated, resolved
and queued, not solved) and a queue large enough never to fill (a full queue is a
deliberate 503, tested elsewhere).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from fuzz_support import anything, examples, floats, fuzz_settings, ints, text
from hypothesis import event, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance

from api.app import create_app
from api.settings import ApiSettings

BOUND_S = 20.0
"""Per request, on a busy machine (an estimate takes milliseconds)."""
QUEUE = 1_000_000


def _app(folder: str) -> Any:
    database = Path(folder) / "autopar.db"
    return create_app(
        ApiSettings(
            database_url=f"sqlite:///{database}",
            job_workers=0,
            estimate_processes=0,
            max_queued_jobs=QUEUE,
        )
    )


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    folder = tempfile.mkdtemp(prefix="autopar-fuzz-")
    with TestClient(_app(folder)) as test_client:
        yield test_client


def _field(plausible: list[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(plausible), st.sampled_from(plausible), anything)


FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": _field(["llama-3.1-8b", "mixtral-8x7b", "deepseek-v3", "nope", "../etc/passwd"]),
    "cluster": _field(["dgx-h100", "mi300x-8", "nope"]),
    "gpus": _field([1, 8, 64, 16384, 16385, 10**9]),
    "nodes": _field([1, 8, 2049]),
    "seq_len": _field([128, 4096, 8192, 2**20, 2**20 + 1]),
    "global_batch": _field([1, 64, 512, 16384, 99999999999]),
    "global_batch_tokens": _field([2**20, 2**24, 2**40]),
    "precision": _field(["bf16", "fp8", "fp4"]),
    "framework": _field(["megatron", "deepspeed", "torchtitan", "pytorch", "jax"]),
    "tp": _field([1, 2, 8]),
    "pp": _field([1, 4, 64]),
    "vpp": _field([2, 4]),
    "mbs": _field([1, 4]),
    "zero": _field([0, 1, 3, 4]),
    "recompute": _field(["none", "selective", "full"]),
    "offload_optimizer": _field([0.0, 0.5, 1.0]),
    "time_limit": _field([0.1, 1, 30, 60, 61, 3600]),
    "top_k": _field([1, 5, 51]),
    "fix": _field([{"tp": 8}, {"warp": 9}, {"tp": "eight"}, {"recompute": "none"}]),
    "max": _field([{"pp": 4}, {"tp": "8"}, {"mbs": 0}]),
    "objective": _field(["throughput", "cost", "min-gpus"]),
    "token_budget": _field([1e12, 1e17]),
    "price_per_gpu_hour": _field([2.5, 1e5]),
    "deadline_hours": _field([10.0, 0.0]),
    "headroom_gib": _field([0.0, 5.0, 2048.0]),
}


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A request body: each known field present or not, sometimes an unknown one."""
    body = {name: draw(value) for name, value in FIELDS.items() if draw(st.integers(0, 2)) == 0}
    for name in ("model", "cluster", "seq_len"):  # mostly present, so runs go deeper
        if name not in body and draw(st.integers(0, 4)) > 0:
            body[name] = draw(FIELDS[name])
    if draw(st.integers(0, 9)) == 0:
        body[draw(text)] = draw(anything)
    return body


def _payload(draw: st.DrawFn, body: Any) -> tuple[bytes, str]:
    """The body as bytes and a content type: mostly JSON, sometimes not (NaN kept as the
    non-standard literal Python writes, which a server must refuse with a true message)."""
    encoded = json.dumps(body, allow_nan=True).encode()
    kind = draw(st.sampled_from(["json"] * 8 + ["text", "deep", "truncated"]))
    if kind == "text":
        return encoded, "text/plain"
    if kind == "deep":
        depth = draw(st.integers(1, 200_000))
        return b"[" * depth + b"]" * depth, "application/json"
    if kind == "truncated":
        return encoded[: draw(st.integers(0, max(0, len(encoded) - 1)))], "application/json"
    return encoded, "application/json"


def _check(response: Any, seconds: float) -> None:
    event(f"status {response.status_code}")
    assert response.status_code < 500, response.text
    assert seconds < BOUND_S
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json", response.text
        problem = response.json()
        assert problem["status"] == response.status_code
        assert problem["type"].startswith("urn:autopar:problem:") and problem["detail"]
        assert "Traceback" not in response.text


@fuzz_settings(default=30)
@given(data=st.data(), path=st.sampled_from(["/v1/estimate", "/v1/plans"]))
def test_request_bodies_never_give_a_server_error(client, data, path: str) -> None:
    content, media = _payload(data.draw, data.draw(bodies()))
    started = time.perf_counter()
    response = client.post(path, content=content, headers={"content-type": media})
    _check(response, time.perf_counter() - started)


CONFIG_KEYS = st.sampled_from(
    ["model_type", "hidden_size", "num_hidden_layers", "vocab_size", "num_attention_heads",
     "intermediate_size", "rope_scaling", "max_position_embeddings", "text_config"]
)  # fmt: skip
CONFIG_VALUES = st.one_of(anything, ints, floats, st.sampled_from(["llama", "mixtral", "gpt2"]))


@fuzz_settings(default=10)
@given(
    config=st.dictionaries(CONFIG_KEYS | text, CONFIG_VALUES, max_size=10),
    name=st.sampled_from(["my-model", "bad name/with slash", ""]) | text,
)
def test_model_imports_never_give_a_server_error(client, config, name) -> None:
    started = time.perf_counter()
    response = client.post(
        "/v1/models/import",
        params={"name": name},
        content=json.dumps(config, allow_nan=True),
        headers={"content-type": "application/json"},
    )
    _check(response, time.perf_counter() - started)


_folder = tempfile.mkdtemp(prefix="autopar-fuzz-schema-")
schema = schemathesis.openapi.from_asgi("/v1/openapi.json", _app(_folder))


@schema.parametrize()
@settings(
    max_examples=examples(3),
    deadline=None,
    database=None,
    suppress_health_check=list(schemathesis.HealthCheck)
    if hasattr(schemathesis, "HealthCheck")
    else [],
)
def test_openapi_operations_never_give_a_server_error(case) -> None:
    case.call_and_validate(checks=[not_a_server_error, content_type_conformance])
