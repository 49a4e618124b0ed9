"""Memory-plan jobs end to end on SQLite: submit, result (the CLI's JSON), reuse, errors."""

from __future__ import annotations

import json
import time
from typing import Any

from api_support import assert_problem

SMALL = {
    "model": "llama-3.1-8b",
    "cluster": "dgx-h100",
    "gpus": 8,
    "seq_len": 4096,
    "global_batch": 64,
    "tp": 2,
    "pp": 2,
    "time_limit": 4,
}


def _wait(client: Any, job_id: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/memory-plans/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def _untimed(result: dict) -> dict:
    for stage in result["stages"]:
        stage["peaks"].pop("solve_s")
    return result


def test_memory_plan_job_gives_the_cli_result_and_is_reused(make_client, sqlite_url, run_cli):
    client = make_client(sqlite_url, job_workers=1)
    submitted = client.post("/v1/memory-plans", json=SMALL)
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert submitted.headers["location"] == f"/v1/memory-plans/{job['id']}"
    assert job["progress"]["stages"] == 2
    done = _wait(client, job["id"])
    assert done["status"] == "done", done["error"]
    result = client.get(f"/v1/memory-plans/{job['id']}/result").json()
    assert result == done["result"]
    cli = run_cli(
        "memplan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "4096", "--global-batch", "64", "--tp", "2", "--pp", "2", "--json",
    )  # fmt: skip
    assert cli.exit_code == 0, cli.stderr
    assert _untimed(result) == _untimed(json.loads(cli.stdout))
    again = client.post("/v1/memory-plans", json=SMALL)
    assert again.status_code == 200 and again.json()["reused"] is True
    assert again.json()["id"] == job["id"]
    # a plan's job endpoints do not serve it, nor it a plan's
    assert client.get(f"/v1/memory-plans/{job['id']}x").status_code == 404


def test_bad_requests_are_problems_before_queueing(client) -> None:
    assert_problem(client.post("/v1/memory-plans", json={**SMALL, "tp": 3}), 422, "invalid-spec")
    body = assert_problem(
        client.post("/v1/memory-plans", json={**SMALL, "stage": 5}), 422, "invalid-spec"
    )
    assert "stage: 5" in body["detail"]
    assert_problem(
        client.post("/v1/memory-plans", json={**SMALL, "model": "nope"}), 404, "unknown-name"
    )
    assert_problem(client.post("/v1/memory-plans", json={**SMALL, "budget_gib": -1}), 422,
                   "invalid-request")  # fmt: skip
    assert_problem(client.get("/v1/memory-plans/unknown"), 404, "not-found")
    queued = client.post("/v1/memory-plans", json={**SMALL, "budget_gib": 30}).json()
    assert queued["status"] == "queued" and queued["progress"]["queue_position"] == 0
    assert_problem(client.get(f"/v1/memory-plans/{queued['id']}/result"), 409, "conflict")
    cancelled = client.delete(f"/v1/memory-plans/{queued['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert_problem(client.delete("/v1/memory-plans/unknown"), 404, "not-found")
