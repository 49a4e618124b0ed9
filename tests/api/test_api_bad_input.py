"""Bad request bodies: a 4xx problem naming the field, never a 500, never a silent fix.

Each case here was once answered wrongly (a 500, a coercion, a misleading message, the
wrong status); the test names say which.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from api_support import SMALL_ESTIMATE, SMALL_PLAN, assert_problem

from api.guards import MAX_JSON_DEPTH, json_depth
from planner.specs import limits as L


def _fields(body: dict[str, Any]) -> dict[str, str]:
    return {item["field"]: item["message"] for item in body["errors"]}


@pytest.mark.parametrize("path", ["/v1/estimate", "/v1/plans", "/v1/models/import"])
def test_a_deeply_nested_body_is_refused_not_a_500(client, path: str) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    response = client.post(path, content=deep, headers={"content-type": "application/json"})
    detail = assert_problem(response, 422, "invalid-request")["detail"]
    assert "nested 100000 levels" in detail and str(MAX_JSON_DEPTH) in detail


def test_json_depth_ignores_brackets_in_strings() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[[{{{"}]}') == 3
    assert json_depth(b'["\\"[[", [2]]') == 2
    assert json_depth(b"") == 0


@pytest.mark.parametrize("path", ["/v1/estimate", "/v1/plans"])
def test_a_body_that_is_not_json_gets_415(client, path: str) -> None:
    text = json.dumps(SMALL_ESTIMATE)
    response = client.post(path, content=text, headers={"content-type": "text/plain"})
    detail = assert_problem(response, 415, "unsupported-media-type")["detail"]
    assert "text/plain" in detail and "application/json" in detail
    form = client.post(path, data={"model": "llama-3.1-8b"})
    assert_problem(form, 415, "unsupported-media-type")


@pytest.mark.parametrize(
    ("field", "value"),
    [("gpus", True), ("gpus", "8"), ("seq_len", 4096.0), ("tp", False), ("mbs", "1")],
)
def test_no_bool_or_string_is_taken_as_a_number(client, field: str, value: Any) -> None:
    """``gpus: true`` used to mean 1 GPU and ``"8"`` 8 GPUs."""
    response = client.post("/v1/estimate", json={**SMALL_ESTIMATE, field: value})
    assert f"body.{field}" in _fields(assert_problem(response, 422, "invalid-request"))


@pytest.mark.parametrize("value", ["8", True, 8.0])
def test_pinned_knobs_are_strict_too(client, value: Any) -> None:
    response = client.post("/v1/plans", json={**SMALL_PLAN, "fix": {"tp": value}})
    assert "fix: tp=" in assert_problem(response, 422, "invalid-spec")["detail"]


def test_inline_specs_are_strict_too(client) -> None:
    model = {
        "name": "tiny", "num_layers": "2", "hidden_size": 64, "num_attention_heads": 4,
        "ffn_hidden_size": 128, "vocab_size": 100, "max_position_embeddings": 128,
        "rope_theta": 10000.0,
    }  # fmt: skip
    response = client.post("/v1/estimate", json={**SMALL_ESTIMATE, "model": model})
    assert "body.model.inline.num_layers" in _fields(
        assert_problem(response, 422, "invalid-request")
    )


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_get_a_true_message(client, number: str) -> None:
    """``NaN`` used to be answered with a misleading "should be <= 1"."""
    text = json.dumps(SMALL_ESTIMATE)[:-1] + f', "offload_optimizer": {number}}}'
    response = client.post(
        "/v1/estimate", content=text, headers={"content-type": "application/json"}
    )
    message = _fields(assert_problem(response, 422, "invalid-request"))["body.offload_optimizer"]
    assert "finite number" in message


def test_the_batch_bound_is_the_planners(client) -> None:
    response = client.post(
        "/v1/estimate", json={**SMALL_ESTIMATE, "global_batch": L.MAX_GLOBAL_BATCH + 1}
    )
    assert str(L.MAX_GLOBAL_BATCH) in assert_problem(response, 422, "invalid-request")["detail"]


def test_an_inline_model_over_the_parameter_bound_is_refused(client) -> None:
    model = {
        "name": "huge", "num_layers": 64, "hidden_size": 16384, "num_attention_heads": 128,
        "num_kv_heads": 8, "ffn_hidden_size": 131072, "vocab_size": 128256,
        "max_position_embeddings": 8192, "rope_theta": 10000.0,
        "moe": {"num_experts": 4096, "top_k": 2, "expert_ffn_hidden_size": 131072},
    }  # fmt: skip
    response = client.post("/v1/plans", json={**SMALL_PLAN, "model": model})
    assert "parameters" in assert_problem(response, 422, "invalid-request")["detail"]


def test_a_knob_that_conflicts_with_the_frameworks_default_is_a_422(client) -> None:
    body = {**SMALL_ESTIMATE, "framework": "torchtitan", "distributed_optimizer": True}
    detail = assert_problem(client.post("/v1/estimate", json=body), 422, "invalid-spec")["detail"]
    assert "zero_stage 3" in detail


@pytest.mark.parametrize("path", ["/v1/estimate", "/v1/plans"])
def test_a_precision_the_gpu_lacks_is_a_422(client, path: str) -> None:
    body = {**(SMALL_ESTIMATE if path == "/v1/estimate" else SMALL_PLAN), "cluster": "dgx-a100"}
    detail = assert_problem(
        client.post(path, json={**body, "precision": "fp8"}), 422, "invalid-spec"
    )
    assert "fp8" in detail["detail"]
