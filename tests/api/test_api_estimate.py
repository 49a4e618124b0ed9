"""POST /v1/estimate: the CLI's JSON over HTTP, and every bad input as a problem."""

from __future__ import annotations

import json

from api_support import SMALL_ESTIMATE, assert_problem

from api.estimator import estimate_json
from api.inputs import EstimateCall, prepare_estimate
from api.routers.estimates import INLINE_PIPELINE_OPS
from api.schemas import EstimateRequest
from planner import catalog


def test_estimate_is_exactly_the_cli_json(client, run_cli) -> None:
    response = client.post("/v1/estimate", json=SMALL_ESTIMATE)
    assert response.status_code == 200, response.text
    cli = run_cli(
        "estimate", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "4096", "--global-batch", "64", "--tp", "2", "--json",
    )  # fmt: skip
    assert cli.exit_code == 0, cli.stderr
    assert response.json() == json.loads(cli.stdout)


def test_offloaded_estimate_is_the_cli_json_too(client, run_cli) -> None:
    body = {**SMALL_ESTIMATE, "framework": "deepspeed", "zero": 2, "offload_optimizer": 1.0}
    response = client.post("/v1/estimate", json=body)
    assert response.status_code == 200, response.text
    cli = run_cli(
        "estimate", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "4096", "--global-batch", "64", "--tp", "2", "--framework", "deepspeed",
        "--zero", "2", "--offload-optimizer", "1", "--json",
    )  # fmt: skip
    assert cli.exit_code == 0, cli.stderr
    assert response.json() == json.loads(cli.stdout)
    bad = client.post("/v1/estimate", json={**body, "offload_optimizer": 1.5})
    problem = assert_problem(bad, 422, "invalid-request")
    assert "offload_optimizer" in json.dumps(problem)


def test_inline_specs_give_the_same_estimate_as_names(client) -> None:
    by_name = client.post("/v1/estimate", json=SMALL_ESTIMATE).json()
    model = catalog.load_model("llama-3.1-8b").model_dump(mode="json")
    cluster = {
        "name": "dgx-h100",
        "gpu": "h100-sxm",
        "gpus_per_node": 8,
        "intra_node": "nvlink4",
        "inter_node": catalog.load_link("ib-ndr").model_dump(mode="json"),
        "nics_per_node": 8,
    }
    inline = client.post(
        "/v1/estimate", json={**SMALL_ESTIMATE, "model": model, "cluster": cluster}
    )
    assert inline.status_code == 200, inline.text
    assert inline.json() == by_name


def test_batch_in_tokens_equals_batch_in_sequences(client) -> None:
    sequences = client.post("/v1/estimate", json=SMALL_ESTIMATE).json()
    body = {**SMALL_ESTIMATE, "global_batch_tokens": 64 * 4096}
    del body["global_batch"]
    assert client.post("/v1/estimate", json=body).json() == sequences


def test_a_broken_layout_rule_is_a_422_naming_it(client) -> None:
    body = assert_problem(
        client.post("/v1/estimate", json={**SMALL_ESTIMATE, "tp": 3}), 422, "invalid-spec"
    )
    assert "tp x cp x pp = 3 x 1 x 1" in body["detail"]


def test_a_schema_violation_names_each_field(client) -> None:
    model = {**catalog.load_model("llama-3.1-8b").model_dump(mode="json"), "num_layers": 5000}
    response = client.post("/v1/estimate", json={**SMALL_ESTIMATE, "model": model, "tp": 0})
    body = assert_problem(response, 422, "invalid-request")
    fields = {item["field"] for item in body["errors"]}
    assert fields == {"body.model.inline.num_layers", "body.tp"}
    assert "less than or equal to 1024" in body["detail"]


def test_unknown_names_are_404(client) -> None:
    body = assert_problem(
        client.post("/v1/estimate", json={**SMALL_ESTIMATE, "model": "llama-9"}),
        404,
        "unknown-name",
    )
    assert "llama-9" in body["detail"]
    body = assert_problem(
        client.post("/v1/estimate", json={**SMALL_ESTIMATE, "cluster": "dgx-z9"}),
        404,
        "unknown-name",
    )
    assert "dgx-h100" in body["detail"]  # lists the known presets


def test_names_cannot_reach_files(client) -> None:
    for name in ("../../etc/passwd", "/etc/passwd", "x.json"):
        response = client.post("/v1/estimate", json={**SMALL_ESTIMATE, "cluster": name})
        assert response.status_code in (404, 422), response.text
        assert "root:" not in response.text


def test_too_many_gpus_is_refused(client) -> None:
    body = assert_problem(
        client.post("/v1/estimate", json={**SMALL_ESTIMATE, "gpus": None, "nodes": 4096}),
        422,
        "invalid-spec",
    )
    assert "16384" in body["detail"]
    assert_problem(
        client.post("/v1/estimate", json={**SMALL_ESTIMATE, "gpus": 16385}), 422, "invalid-request"
    )


def test_a_pipeline_schedule_too_large_to_simulate_is_refused(client) -> None:
    body = {**SMALL_ESTIMATE, "gpus": 64, "tp": 1, "pp": 64, "global_batch": 16384}
    problem = assert_problem(client.post("/v1/estimate", json=body), 422, "invalid-spec")
    assert problem["detail"].startswith("global_batch: 16384 micro-batches x pp 64")


def test_oversized_and_malformed_bodies(make_client, sqlite_url) -> None:
    client = make_client(sqlite_url, max_body_bytes=4096)
    big = json.dumps({**SMALL_ESTIMATE, "padding": "x" * 5000})
    response = client.post(
        "/v1/estimate", content=big, headers={"content-type": "application/json"}
    )
    assert "4096 bytes" in assert_problem(response, 413, "payload-too-large")["detail"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b" " * 1000

    response = client.post(
        "/v1/estimate", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "payload-too-large")
    response = client.post(
        "/v1/estimate", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, "invalid-request")


def test_unknown_routes_and_methods_are_problems(client) -> None:
    assert_problem(client.get("/v1/nothing-here"), 404, "not-found")
    response = client.put("/v1/estimate", json={})
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"


LARGE_ESTIMATE = {**SMALL_ESTIMATE, "tp": 1, "pp": 8, "global_batch": 4096}
"""4,096 micro-batches x pp 8 = 32,768 pipeline ops: past INLINE_PIPELINE_OPS."""


def test_large_estimates_run_elsewhere_with_the_same_result(make_client, sqlite_url) -> None:
    """A schedule too large for the event loop goes to the estimate process (or, without
    one, a worker thread); the answer is the very JSON the loop would give."""
    call = prepare_estimate(EstimateRequest.model_validate(LARGE_ESTIMATE), None)
    assert call.pipeline_ops > INLINE_PIPELINE_OPS
    expected = json.loads(estimate_json(call))
    for processes in (1, 0):
        client = make_client(sqlite_url, estimate_processes=processes)
        assert (client.app.state.estimator is not None) == bool(processes)
        response = client.post("/v1/estimate", json=LARGE_ESTIMATE)
        assert response.status_code == 200, response.text
        assert response.json() == expected
        bad = {**LARGE_ESTIMATE, "recompute_layers": 3}  # a rule the planner checks
        assert_problem(client.post("/v1/estimate", json=bad), 422, "invalid-spec")
    assert EstimateCall.from_json(json.loads(json.dumps(call.to_json()))) == call


def test_a_dead_estimate_process_is_replaced(make_client, sqlite_url) -> None:
    client = make_client(sqlite_url, estimate_processes=1)
    assert client.post("/v1/estimate", json=LARGE_ESTIMATE).status_code == 200
    process = client.app.state.estimator._process
    process.kill()
    client.portal.call(process.wait)
    # the next request finds it gone and starts another
    response = client.post("/v1/estimate", json=LARGE_ESTIMATE)
    assert response.status_code == 200, response.text
    assert client.app.state.estimator._process.pid != process.pid


def test_expandable_segments_over_rest_is_the_cli_flag(client, run_cli) -> None:
    """NVIDIA's DGX Cloud Llama-3.1-8B recipe (cp 2, 8192 tokens): over its capacity with the
    default allocator's measured share, inside it with expandable segments', as the CLI."""
    body = {**SMALL_ESTIMATE, "tp": 1, "cp": 2, "seq_len": 8192, "global_batch": 128,
            "distributed_optimizer": True}  # fmt: skip
    default = client.post("/v1/estimate", json=body)
    expandable = client.post("/v1/estimate", json={**body, "expandable_segments": True})
    assert default.status_code == expandable.status_code == 200, expandable.text
    assert not default.json()["memory"]["fits"] and expandable.json()["memory"]["fits"]
    cli = run_cli(
        "estimate", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "8192", "--global-batch", "128", "--cp", "2", "--distributed-optimizer",
        "--expandable-segments", "--json",
    )  # fmt: skip
    assert cli.exit_code == 0, cli.stderr
    assert expandable.json() == json.loads(cli.stdout)
