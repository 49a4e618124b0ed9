"""``memplan`` on POST /v1/estimate and POST /v1/plans: the memory section carries the
simulated and planned peaks per stage and the fits basis, as the CLI's ``--memplan``."""

from __future__ import annotations

import json

from api_support import SMALL_ESTIMATE, SMALL_PLAN, assert_problem, wait_for

from planner.memplan.fits import PLAN_TOP

STABLE = ("stage", "live_gib", "allocator_gib", "allocator_expandable_gib", "reserved_total_gib")
"""Simulated-peak fields that do not depend on the placement solver's time limit."""


def _stable(memory: dict) -> dict:
    simulated = [{k: peak[k] for k in STABLE} for peak in memory["simulated"]]
    return {**memory, "simulated": simulated}


def test_estimate_memplan_is_the_cli_memory_section(client, run_cli) -> None:
    response = client.post("/v1/estimate", json={**SMALL_ESTIMATE, "pp": 2, "memplan": True})
    assert response.status_code == 200, response.text
    memory = response.json()["memory"]
    assert [peak["stage"] for peak in memory["simulated"]] == [0, 1]
    for peak in memory["simulated"]:
        assert peak["live_gib"] <= peak["planned_gib"] <= peak["allocator_gib"]
    assert memory["fits_basis"].startswith("Fits decided on the")
    cli = run_cli(
        "estimate", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "4096", "--global-batch", "64", "--tp", "2", "--pp", "2", "--memplan",
        "--json",
    )  # fmt: skip
    assert cli.exit_code == 0, cli.stderr
    assert _stable(memory) == _stable(json.loads(cli.stdout)["memory"])
    plain = client.post("/v1/estimate", json={**SMALL_ESTIMATE, "pp": 2}).json()["memory"]
    assert "simulated" not in plain and "fits_basis" not in plain


def test_bad_memplan_values_are_422_problems(client) -> None:
    for value in ("maybe", [True], {"on": 1}):
        response = client.post("/v1/estimate", json={**SMALL_ESTIMATE, "memplan": value})
        problem = assert_problem(response, 422, "invalid-request")
        assert "memplan" in json.dumps(problem)
        response = client.post("/v1/plans", json={**SMALL_PLAN, "memplan": value})
        assert "memplan" in json.dumps(assert_problem(response, 422, "invalid-request"))


def test_plan_memplan_simulates_the_best_plans(make_client, sqlite_url) -> None:
    client = make_client(sqlite_url, job_workers=1)
    body = {**SMALL_PLAN, "fix": {"pp": 1}, "memplan": True}
    submitted = client.post("/v1/plans", json=body)
    assert submitted.status_code == 202, submitted.text
    done = wait_for(client, submitted.json()["id"], states=("done", "failed"), timeout_s=120)
    assert done["status"] == "done", done["error"]
    plans = done["result"]["plans"]
    assert len(plans) > PLAN_TOP
    for rank, entry in enumerate(plans):
        memory = entry["memory"]
        assert ("simulated" in memory) == (rank < PLAN_TOP), rank
        if rank < PLAN_TOP:
            assert memory["fits_basis"] and memory["simulated"][0]["stage"] == 0
    plain = client.post("/v1/plans", json={**SMALL_PLAN, "fix": {"pp": 1}})
    assert plain.json()["id"] != submitted.json()["id"]  # memplan is part of the job's inputs
