"""``framework_version`` on ``POST /v1/plans``: the CLI's ``plan --torchtitan-version``.

A known torchtitan release is planned for (and names its own job); an unknown one, or
one given with a framework that has no versions, is a 422 naming the field.
"""

from __future__ import annotations

import json

import pytest
from api_support import SMALL_PLAN, assert_problem, wait_for

from api.worker import plan_request
from planner import WorkloadSpec, load_cluster, load_model
from planner.emit import emit_files

TORCHTITAN = {**SMALL_PLAN, "framework": "torchtitan"}


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        pytest.param({**TORCHTITAN, "framework_version": "0.9"}, ("'0.9'", "current, 0.2"),
                     id="unknown"),
        pytest.param({**SMALL_PLAN, "framework_version": "0.2"}, ("megatron", "no versions"),
                     id="megatron"),
        pytest.param({**SMALL_PLAN, "framework": "deepspeed", "framework_version": "current"},
                     ("deepspeed", "no versions"), id="deepspeed"),
    ],
)  # fmt: skip
def test_a_bad_framework_version_is_a_422_naming_the_field(client, body, needles) -> None:
    detail = assert_problem(client.post("/v1/plans", json=body), 422, "invalid-spec")["detail"]
    assert detail.startswith("framework_version: ")
    for needle in needles:
        assert needle in detail, detail


def test_a_framework_version_that_is_not_a_name_is_refused(client) -> None:
    body = {**TORCHTITAN, "framework_version": "0.2; rm -rf"}
    assert_problem(client.post("/v1/plans", json=body), 422, "invalid-request")


def test_the_version_reaches_the_planner_and_names_its_own_job(client) -> None:
    """0.2 is a job of its own whose planner request carries the version; ``current`` is
    the default release, so naming it is the same job as not naming it."""
    default = client.post("/v1/plans", json=TORCHTITAN).json()
    current = client.post("/v1/plans", json={**TORCHTITAN, "framework_version": "current"})
    assert current.json()["id"] == default["id"] and current.json()["reused"] is True
    old = client.post("/v1/plans", json={**TORCHTITAN, "framework_version": "0.2"})
    assert old.status_code == 202, old.text
    assert old.json()["id"] != default["id"]
    assert old.json()["inputs_hash"] != default["inputs_hash"]
    rows = {job["id"]: job for job in client.get("/v1/plans").json()}
    assert set(rows) == {default["id"], old.json()["id"]}


def test_the_worker_plans_for_the_stored_version() -> None:
    inputs = {"framework": "torchtitan", "framework_version": "0.2"}
    assert _request(inputs).framework_version == "0.2"
    assert _request({"framework": "torchtitan"}).framework_version is None


def _request(knobs: dict):
    inputs = {
        "model": load_model("llama-3.1-8b").model_dump(mode="json"),
        "cluster": load_cluster("dgx-h100", gpus=8).model_dump(mode="json"),
        "workload": WorkloadSpec(seq_len=4096, global_batch=64).model_dump(mode="json"),
        "objective": "throughput", "fix": {}, "max": {}, "headroom_gib": 0.0, "top_k": 5,
        "time_limit_s": 30.0, **knobs,
    }  # fmt: skip
    return plan_request(inputs)


def test_a_0_2_job_is_the_cli_plan_and_launches_as_0_2(make_client, sqlite_url, run_cli) -> None:
    """The job gives ``autopar plan --torchtitan-version 0.2``'s plans, and its torchtitan
    launch files are the 0.2 TOML job file unless another version is asked for."""
    client = make_client(sqlite_url, job_workers=1)
    job = client.post("/v1/plans", json={**TORCHTITAN, "framework_version": "0.2"}).json()
    done = wait_for(client, job["id"], states=("done", "failed"))
    assert done["status"] == "done", done["error"]
    cli = run_cli(
        "plan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "4096", "--global-batch", "64", "--time-limit", "30",
        "--framework", "torchtitan", "--torchtitan-version", "0.2", "--json",
    )  # fmt: skip
    assert cli.exit_code == 0, cli.stderr
    assert done["result"]["plans"] == json.loads(cli.stdout)["plans"]
    launch = client.get(f"/v1/plans/{job['id']}/launch/torchtitan").json()
    assert launch["format"] == "torchtitan-toml"
    assert launch["files"] == emit_files(done["result"]["plans"][0], format="torchtitan-toml")
    current = client.get(f"/v1/plans/{job['id']}/launch/torchtitan?torchtitan_version=current")
    if current.status_code == 200:
        assert current.json()["format"] == "torchtitan"
    else:  # the 0.2 plan uses what the current release dropped (p2p context parallelism)
        assert "runs with version 0.2" in assert_problem(current, 422, "invalid-spec")["detail"]
