"""The run-time settings over REST: ``POST /v1/plans`` takes ``autopar plan``'s flags as
fields (a job of its own, planned with them; a request that leaves them out is the job it
was), and ``/v1/estimate`` takes Megatron's kernel switches as ``autopar estimate`` does."""

from __future__ import annotations

import json

import pytest
from api_support import SMALL_ESTIMATE, SMALL_PLAN, assert_problem

from api.inputs import plan_inputs
from api.schemas import PlanRequest
from api.worker import plan_request
from planner.cost.frameworks import Runtime

SETTINGS = {
    "expandable_segments": True,
    "grad_reduce_in_bf16": True,
    "layer_spec": "local",
    "cross_entropy_loss_fusion": True,
    "gradient_accumulation_fusion": False,
}


def _inputs(body: dict) -> dict:
    return plan_inputs(PlanRequest(**body), None, max_time_limit_s=60, max_layouts=10**6)[0]  # type: ignore[arg-type]


def test_settings_left_out_or_at_their_defaults_leave_the_job_as_it_was() -> None:
    plain = _inputs(SMALL_PLAN)
    assert not set(SETTINGS) & set(plain)
    defaults = {"expandable_segments": False, "grad_reduce_in_bf16": False,
                "layer_spec": "transformer_engine"}  # fmt: skip
    assert _inputs({**SMALL_PLAN, **defaults}) == plain
    assert plan_request(plain).runtime == Runtime()


def test_settings_reach_the_planner_request() -> None:
    inputs = _inputs({**SMALL_PLAN, **SETTINGS})
    request = plan_request(inputs)
    assert request.layer_spec == "local"
    assert request.runtime == Runtime(
        expandable_segments=True, grad_reduce_in_bf16=True, cross_entropy_loss_fusion=True,
        gradient_accumulation_fusion=False,
    )  # fmt: skip


def test_a_setting_names_its_own_job(client) -> None:
    default = client.post("/v1/plans", json=SMALL_PLAN).json()
    again = client.post("/v1/plans", json={**SMALL_PLAN, "expandable_segments": False}).json()
    assert again["id"] == default["id"]
    other = client.post("/v1/plans", json={**SMALL_PLAN, "expandable_segments": True})
    assert other.status_code == 202, other.text
    assert other.json()["inputs_hash"] != default["inputs_hash"]


@pytest.mark.parametrize(
    ("path", "base", "field"),
    [
        ("/v1/plans", SMALL_PLAN, "grad_reduce_in_bf16"),
        ("/v1/plans", SMALL_PLAN, "cross_entropy_loss_fusion"),
        ("/v1/estimate", {**SMALL_ESTIMATE, "tp": 1}, "cross_entropy_loss_fusion"),
    ],
)
def test_a_setting_the_framework_lacks_is_a_422_naming_the_field(client, path, base, field):
    body = {**base, "framework": "deepspeed", field: True}
    detail = assert_problem(client.post(path, json=body), 422, "invalid-spec")["detail"]
    assert detail.startswith(f"{field}: ") and "deepspeed" in detail


def test_estimate_kernel_switches_are_the_cli_flags(client, run_cli) -> None:
    body = {**SMALL_ESTIMATE, "cross_entropy_loss_fusion": True,
            "gradient_accumulation_fusion": False}  # fmt: skip
    response = client.post("/v1/estimate", json=body)
    assert response.status_code == 200, response.text
    cli = run_cli(
        "estimate", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "4096", "--global-batch", "64", "--tp", "2",
        "--cross-entropy-loss-fusion", "--no-gradient-accumulation-fusion", "--json",
    )  # fmt: skip
    assert cli.exit_code == 0, cli.stderr
    assert response.json() == json.loads(cli.stdout)
    plain = client.post("/v1/estimate", json=SMALL_ESTIMATE).json()
    assert plain["time"]["step_time_s"] != response.json()["time"]["step_time_s"]
