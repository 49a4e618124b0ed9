"""The layout fields ``autopar estimate`` and ``autopar memplan`` have, over REST: the
uneven pipeline split (first/last stage layers, the embedding and loss counted in it),
the pipeline schedule and the attention backend. Same answer as the CLI; bad values are
problems naming the field."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from api_support import SMALL_ESTIMATE, assert_problem

PIPELINED = {**SMALL_ESTIMATE, "tp": 1, "pp": 4}
"""Llama 3.1 8B (32 layers) over 4 pipeline stages."""
UNEVEN = {
    **PIPELINED,
    "first_stage_layers": 6,
    "last_stage_layers": 6,
    "pipeline_schedule": "gpipe",
    "attention_backend": "cudnn",
}
CLI = (
    "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8", "--seq-len", "4096",
    "--global-batch", "64", "--pp", "4",
)  # fmt: skip


def test_an_uneven_split_estimate_is_exactly_the_cli_json(client, run_cli) -> None:
    response = client.post("/v1/estimate", json=UNEVEN)
    assert response.status_code == 200, response.text
    cli = run_cli(
        "estimate", *CLI, "--first-stage-layers", "6", "--last-stage-layers", "6",
        "--pipeline-schedule", "gpipe", "--attention-backend", "cudnn", "--json",
    )  # fmt: skip
    assert cli.exit_code == 0, cli.stderr
    assert response.json() == json.loads(cli.stdout)
    even = client.post("/v1/estimate", json=PIPELINED).json()
    assert response.json() != even  # the fields are not ignored


def test_each_field_changes_the_estimate(client) -> None:
    """Every field reaches the model: each one alone gives another answer than none."""
    base = client.post("/v1/estimate", json=PIPELINED).json()
    for field, value in [
        ("first_stage_layers", 5),
        ("last_stage_layers", 5),
        ("pipeline_schedule", "gpipe"),
        ("attention_backend", "unfused"),
    ]:
        response = client.post("/v1/estimate", json={**PIPELINED, field: value})
        assert response.status_code == 200, (field, response.text)
        assert response.json() != base, field


def test_embedding_and_loss_in_the_split_match_the_cli(client, run_cli) -> None:
    """32 layers + embedding + loss = 34 slots over pp 2: 16 transformer layers per stage."""
    body = {
        **SMALL_ESTIMATE, "tp": 1, "pp": 2,
        "account_for_embedding_in_pipeline_split": True,
        "account_for_loss_in_pipeline_split": True,
    }  # fmt: skip
    response = client.post("/v1/estimate", json=body)
    assert response.status_code == 200, response.text
    cli = run_cli(
        "estimate", *CLI[:-1], "2", "--account-for-embedding-in-pipeline-split",
        "--account-for-loss-in-pipeline-split", "--json",
    )  # fmt: skip
    assert cli.exit_code == 0, cli.stderr
    assert response.json() == json.loads(cli.stdout)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"first_stage_layers": 0}, "first_stage_layers"),
        ({"last_stage_layers": 1 << 20}, "last_stage_layers"),
        ({"attention_backend": "triton"}, "attention_backend"),
        ({"pipeline_schedule": "zero-bubble"}, "pipeline_schedule"),
        ({"account_for_loss_in_pipeline_split": "yes"}, "account_for_loss_in_pipeline_split"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/estimate", "/v1/memory-plans"])
def test_an_out_of_range_value_is_a_422_naming_the_field(client, path, extra, field) -> None:
    body = assert_problem(client.post(path, json={**PIPELINED, **extra}), 422, "invalid-request")
    assert any(item["field"].endswith(field) for item in body["errors"]), body


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ({"first_stage_layers": 40}, ("first_stage_layers: 40", "32 layers")),
        ({"first_stage_layers": 20, "last_stage_layers": 20}, ("20 + 20", "32 layers")),
        ({"first_stage_layers": 4, "pp": 1}, ("first_stage_layers", "pp > 1")),
        (
            {"account_for_embedding_in_pipeline_split": True},
            ("layer slots", "divisible by pp (4)"),
        ),
    ],
)
@pytest.mark.parametrize("path", ["/v1/estimate", "/v1/memory-plans"])
def test_a_split_the_model_cannot_take_is_a_422_naming_the_rule(
    client, path, extra, needles
) -> None:
    detail = assert_problem(client.post(path, json={**PIPELINED, **extra}), 422, "invalid-spec")[
        "detail"
    ]
    for needle in needles:
        assert needle in detail, detail


def _wait(client: Any, job_id: str, timeout_s: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/memory-plans/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def test_a_memory_plan_of_an_uneven_split_is_the_cli_result(make_client, sqlite_url, run_cli):
    client = make_client(sqlite_url, job_workers=1)
    body = {**UNEVEN, "stage": 0, "time_limit": 4}
    submitted = client.post("/v1/memory-plans", json=body)
    assert submitted.status_code == 202, submitted.text
    done = _wait(client, submitted.json()["id"])
    assert done["status"] == "done", done["error"]
    cli = run_cli(
        "memplan", *CLI, "--first-stage-layers", "6", "--last-stage-layers", "6",
        "--pipeline-schedule", "gpipe", "--attention-backend", "cudnn", "--stage", "0",
        "--json",
    )  # fmt: skip
    assert cli.exit_code == 0, cli.stderr
    assert _untimed(done["result"]) == _untimed(json.loads(cli.stdout))
    plain = client.post("/v1/memory-plans", json={**PIPELINED, "stage": 0, "time_limit": 4})
    assert plain.json()["id"] != submitted.json()["id"]


def _untimed(result: dict) -> dict:
    for stage in result["stages"]:
        stage["peaks"].pop("solve_s")
    return result


CP = {**SMALL_ESTIMATE, "tp": 1, "cp": 8, "seq_len": 16384, "global_batch": 8}
CP_CLI = (
    "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8", "--seq-len", "16384",
    "--global-batch", "8", "--cp", "8",
)  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "flags", "algorithm"),
    [
        ({}, (), "p2p"),  # Megatron's default ring
        ({"framework": "deepspeed", "zero": 1}, ("--framework", "deepspeed", "--zero", "1"),
         "a2a"),  # DeepSpeed's only CP is Ulysses
        ({"hierarchical_cp_sizes": [2, 4]}, ("--hierarchical-cp-sizes", "2,4"), "a2a+p2p"),
        ({"cp_comm_type": "all_gather"}, ("--cp-comm-type", "all_gather"), "all_gather"),
    ],
)  # fmt: skip
def test_the_cp_algorithm_defaults_per_framework_as_the_cli(
    client, run_cli, fields: dict, flags: tuple, algorithm: str
) -> None:
    response = client.post("/v1/estimate", json={**CP, **fields})
    assert response.status_code == 200, response.text
    assert response.json()["config"]["cp_comm_type"] == algorithm
    cli = run_cli("estimate", *CP_CLI, *flags, "--json")
    assert cli.exit_code == 0, cli.stderr
    assert response.json() == json.loads(cli.stdout)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"framework": "deepspeed", "zero": 1, "cp_comm_type": "p2p"}, "deepspeed runs a2a"),
        ({"hierarchical_cp_sizes": [2, 2]}, "must equal cp (8)"),
        ({"cp_comm_type": "a2a+p2p"}, "needs hierarchical_cp_sizes"),
    ],
)
def test_a_cp_algorithm_the_framework_or_rule_refuses_is_a_problem(
    client, fields: dict, field: str
) -> None:
    body = assert_problem(client.post("/v1/estimate", json={**CP, **fields}), 422, "invalid-spec")
    assert field in body["detail"]


def test_the_local_layer_spec_is_exactly_the_cli_json(client, run_cli) -> None:
    body = {**PIPELINED, "layer_spec": "local"}
    response = client.post("/v1/estimate", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["config"]["layer_spec"] == "local"
    cli = run_cli("estimate", *CLI, "--layer-spec", "local", "--json")
    assert cli.exit_code == 0, cli.stderr
    assert response.json() == json.loads(cli.stdout)


@pytest.mark.parametrize(
    ("extra", "kind", "needle"),
    [
        ({"layer_spec": "te"}, "invalid-request", None),
        ({"layer_spec": "local", "framework": "deepspeed"}, "invalid-spec", "deepspeed has none"),
        ({"layer_spec": "local", "attention_backend": "cudnn"}, "invalid-spec", "cudnn"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/estimate", "/v1/memory-plans"])
def test_a_layer_spec_the_run_cannot_take_is_a_422(client, path, extra, kind, needle) -> None:
    body = assert_problem(client.post(path, json={**PIPELINED, **extra}), 422, kind)
    if needle is None:
        assert any(item["field"].endswith("layer_spec") for item in body["errors"]), body
    else:
        assert "layer_spec" in body["detail"] and needle in body["detail"], body


GROUPED = {**SMALL_ESTIMATE, "seq_len": 2048, "global_batch": 16, "pp": 4, "vpp": 2}
"""16 micro-batches on 4 ranks x 2 chunks."""
GROUP = "microbatch_group_size_per_virtual_pipeline_stage"


def test_the_microbatch_group_is_exactly_the_cli_json(client, run_cli) -> None:
    response = client.post("/v1/estimate", json={**GROUPED, GROUP: 8})
    assert response.status_code == 200, response.text
    cli = run_cli(
        "estimate", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "2048", "--global-batch", "16", "--tp", "2", "--pp", "4", "--vpp", "2",
        "--microbatch-group-size-per-virtual-pipeline-stage", "8", "--json",
    )  # fmt: skip
    assert cli.exit_code == 0, cli.stderr
    assert response.json() == json.loads(cli.stdout)


@pytest.mark.parametrize(
    ("extra", "kind"),
    [
        ({GROUP: 0}, "invalid-request"),
        ({GROUP: 7}, "invalid-spec"),  # 16 mod 7 = 2 < pp
        ({GROUP: 8, "framework": "deepspeed"}, "invalid-spec"),
    ],
)
def test_a_microbatch_group_megatron_refuses_is_a_422(client, extra, kind) -> None:
    body = assert_problem(client.post("/v1/estimate", json={**GROUPED, **extra}), 422, kind)
    if kind == "invalid-request":
        assert any(item["field"].endswith(GROUP) for item in body["errors"]), body
    else:
        assert "microbatch_group_size" in body["detail"], body


def test_a_memory_plan_job_runs_the_layer_spec_and_the_group(run_cli) -> None:
    """The job's canonical inputs carry both (only when given) and its worker runs them."""
    from api.memory_jobs import MemoryPlanRequest, memory_plan_inputs, run_memory_plan

    body = {**GROUPED, "stage": 0, "time_limit": 1, "layer_spec": "local", GROUP: 8}
    inputs, stages = memory_plan_inputs(
        MemoryPlanRequest.model_validate(body), None, max_time_limit_s=1.0
    )
    assert stages == 1 and inputs["layer_spec"] == "local" and inputs["flash_attention"] is False
    assert inputs["layout"]["microbatch_group_size_per_vp_stage"] == 8
    plain, _ = memory_plan_inputs(
        MemoryPlanRequest.model_validate({**GROUPED, "stage": 0}), None, max_time_limit_s=1.0
    )
    assert "layer_spec" not in plain  # a request without them hashes as before
    assert "microbatch_group_size_per_vp_stage" not in plain["layout"]
    cli = run_cli(
        "memplan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "2048", "--global-batch", "16", "--tp", "2", "--pp", "4", "--vpp", "2",
        "--stage", "0", "--time-limit", "0.5", "--layer-spec", "local",
        "--microbatch-group-size-per-virtual-pipeline-stage", "8", "--json",
    )  # fmt: skip
    assert cli.exit_code == 0, cli.stderr
    peaks = run_memory_plan(inputs)["stages"][0]["peaks"]
    assert peaks["live_gib"] == json.loads(cli.stdout)["stages"][0]["peaks"]["live_gib"]
