"""Plan jobs end to end, on SQLite and on PostgreSQL: submit, progress, result, reuse,
launch files, the bounded queue, cancellation and the hard time limit."""

from __future__ import annotations

import itertools
import json
import time

from api_support import SMALL_PLAN, assert_problem, wait_for

from planner import WorkloadSpec, load_cluster, load_model
from planner.emit import emit_files
from planner.search.candidates import enumerate_space

TIMINGS = ("wall_s", "solver_wall_s")
"""Search fields that measure this run's duration: everything else must match the CLI."""
LONG_PLAN = {
    "model": "llama-3.1-405b",
    "cluster": "dgx-h100",
    "gpus": 1024,
    "seq_len": 8192,
    "global_batch": 2048,
}
"""About 20 s of planning on one core (1,281 candidate layouts)."""


def _legal_layouts(request: dict) -> int:
    """The planner's own count of candidate layouts for a request (what progress shows)."""
    space = enumerate_space(
        load_model(request["model"]),
        load_cluster(request["cluster"], gpus=request["gpus"]),
        WorkloadSpec(seq_len=request["seq_len"], global_batch=request["global_batch"]),
    )
    return len(space.layouts)


def _without_timings(result: dict) -> dict:
    return {**result, "search": {k: v for k, v in result["search"].items() if k not in TIMINGS}}


def test_plan_job_gives_the_cli_result_and_is_reused(make_db_client, run_cli, request) -> None:
    client = make_db_client(job_workers=1)
    submitted = client.post("/v1/plans", json=SMALL_PLAN)
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert submitted.headers["location"] == f"/v1/plans/{job['id']}"
    assert job["status"] in ("queued", "running")
    assert job["progress"]["layouts"] == _legal_layouts(SMALL_PLAN)

    done = wait_for(client, job["id"], states=("done", "failed"))
    assert done["status"] == "done", done["error"]
    assert done["progress"]["elapsed_s"] > 0
    result = client.get(f"/v1/plans/{job['id']}/result").json()
    assert result == done["result"]
    if "sqlite" in request.node.callspec.id:  # the same result on both; one CLI run is enough
        cli = run_cli(
            "plan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
            "--seq-len", "4096", "--global-batch", "64", "--time-limit", "30", "--json",
        )  # fmt: skip
        assert cli.exit_code == 0, cli.stderr
        assert _without_timings(result) == _without_timings(json.loads(cli.stdout))

    same = {**SMALL_PLAN, "global_batch_tokens": 64 * 4096}
    del same["global_batch"]
    again = client.post("/v1/plans", json=same)
    assert again.status_code == 200
    assert again.json()["id"] == job["id"] and again.json()["reused"] is True
    assert again.json()["result"] == result

    launch = client.get(f"/v1/plans/{job['id']}/launch/megatron")
    assert launch.status_code == 200, launch.text
    assert launch.json()["files"] == emit_files(result["plans"][0], format="megatron")
    second = client.get(f"/v1/plans/{job['id']}/launch/megatron?rank=2").json()
    assert second["files"] == emit_files(result["plans"][1], format="megatron")
    assert_problem(client.get(f"/v1/plans/{job['id']}/launch/megatron?rank=6"), 404, "not-found")
    assert_problem(client.delete(f"/v1/plans/{job['id']}"), 409, "conflict")


def test_plan_progress_comes_from_the_planner_and_ends_complete(make_client, sqlite_url) -> None:
    """While running, the job shows the planner's phase and counts, which never go back;
    done, every candidate layout was evaluated."""
    client = make_client(sqlite_url, job_workers=1)
    request = {**SMALL_PLAN, "model": "llama-3.1-70b", "gpus": 64, "global_batch": 256}
    job = client.post("/v1/plans", json=request).json()
    legal = _legal_layouts(request)
    seen: list[dict] = []
    while True:
        view = client.get(f"/v1/plans/{job['id']}").json()
        if view["status"] not in ("queued", "running"):
            break
        if view["status"] == "running" and view["progress"]["phase"] is not None:
            seen.append(view["progress"])
        time.sleep(0.02)
    assert view["status"] == "done", view["error"]
    final = view["progress"]
    assert final["phase"] == "done"
    assert final["layouts_evaluated"] == final["layouts_total"] == legal
    assert final["fraction_evaluated"] == 1.0
    assert final["layouts_timed"] == view["result"]["search"]["layouts_timed"]
    assert seen, "no running progress was seen"
    assert seen[0]["layouts_total"] == legal
    assert seen[0]["layouts_evaluated"] < legal
    for before, after in itertools.pairwise([*seen, final]):
        assert after["layouts_evaluated"] >= before["layouts_evaluated"]
        assert after["layouts_timed"] >= before["layouts_timed"]


def test_bounded_queue_progress_and_cancelling_queued_jobs(make_db_client) -> None:
    client = make_db_client(job_workers=0, max_queued_jobs=2)
    first = client.post("/v1/plans", json=SMALL_PLAN).json()
    second = client.post("/v1/plans", json={**SMALL_PLAN, "global_batch": 128}).json()
    assert client.get(f"/v1/plans/{second['id']}").json()["progress"]["queue_position"] == 1

    full = client.post("/v1/plans", json={**SMALL_PLAN, "global_batch": 256})
    assert "2 plan jobs are queued" in assert_problem(full, 503, "queue-full")["detail"]
    assert int(full.headers["retry-after"]) >= 1
    assert client.get("/v1/health").json()["queued_jobs"] == 2

    assert_problem(client.get(f"/v1/plans/{first['id']}/result"), 409, "conflict")
    assert_problem(client.get(f"/v1/plans/{first['id']}/launch/deepspeed"), 409, "conflict")
    cancelled = client.delete(f"/v1/plans/{first['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.delete(f"/v1/plans/{first['id']}").json()["status"] == "cancelled"
    assert client.get(f"/v1/plans/{second['id']}").json()["progress"]["queue_position"] == 0

    resubmitted = client.post("/v1/plans", json=SMALL_PLAN)  # a cancelled job is not reused
    assert resubmitted.status_code == 202 and resubmitted.json()["id"] != first["id"]
    assert_problem(client.get("/v1/plans/no-such-job"), 404, "not-found")
    assert_problem(client.delete("/v1/plans/no-such-job"), 404, "not-found")


def test_bad_plan_requests_are_refused_before_queueing(make_client, sqlite_url) -> None:
    client = make_client(sqlite_url, max_search_layouts=100)
    body = assert_problem(client.post("/v1/plans", json=SMALL_PLAN), 422, "invalid-spec")
    expected = f"{_legal_layouts(SMALL_PLAN)} candidate layouts"
    assert expected in body["detail"] and "100" in body["detail"]
    pinned = client.post("/v1/plans", json={**SMALL_PLAN, "fix": {"tp": 8, "recompute": "none"}})
    assert pinned.status_code == 202, pinned.text
    bad_knob = client.post("/v1/plans", json={**SMALL_PLAN, "fix": {"tp": "eight"}})
    assert "tp" in assert_problem(bad_knob, 422, "invalid-spec")["detail"]
    unknown = client.post("/v1/plans", json={**SMALL_PLAN, "fix": {"warp": 9}})
    assert assert_problem(unknown, 422, "invalid-request")["errors"][0]["field"] == "body.fix.warp"
    too_long = client.post("/v1/plans", json={**SMALL_PLAN, "time_limit": 3601})
    assert_problem(too_long, 422, "invalid-request")
    assert client.get("/v1/health").json()["queued_jobs"] == 1


def test_a_time_limit_over_the_server_cap_is_refused_not_cut(make_client, sqlite_url) -> None:
    """One rule, stated once: the schema's maximum is AUTOPAR_MAX_TIME_LIMIT_S; a larger
    limit is a 422 naming it (it used to be cut silently, and then matched an earlier job
    submitted with the cap itself)."""
    client = make_client(sqlite_url, max_time_limit_s=5)
    schema = client.get("/v1/openapi.json").json()["components"]["schemas"]["PlanRequest"]
    assert schema["properties"]["time_limit"]["maximum"] == 5
    first = client.post("/v1/plans", json={**SMALL_PLAN, "time_limit": 5}).json()
    assert first["progress"]["time_limit_s"] == 5
    over = client.post("/v1/plans", json={**SMALL_PLAN, "time_limit": 300})
    detail = assert_problem(over, 422, "invalid-spec")["detail"]
    assert "time_limit" in detail and "AUTOPAR_MAX_TIME_LIMIT_S" in detail and "5 s" in detail
    other = client.post("/v1/plans", json={**SMALL_PLAN, "time_limit": 4}).json()
    assert other["id"] != first["id"] and other["reused"] is False


def test_running_jobs_are_cancelled_or_stopped_at_their_deadline(make_client, sqlite_url) -> None:
    # no grace: a job is stopped at its time limit (plus a quarter); this one needs longer
    client = make_client(sqlite_url, job_workers=2, job_grace_s=0.0)
    overrun = client.post("/v1/plans", json={**LONG_PLAN, "time_limit": 0.2}).json()
    long = client.post("/v1/plans", json={**LONG_PLAN, "time_limit": 60}).json()
    wait_for(client, long["id"], states=("running",))
    stopping = client.delete(f"/v1/plans/{long['id']}")
    assert stopping.status_code in (200, 202)
    assert stopping.json()["progress"]["cancel_requested"] is True
    assert wait_for(client, long["id"], states=("cancelled", "done"))["status"] == "cancelled"

    failed = wait_for(client, overrun["id"], states=("failed", "done"))
    assert failed["status"] == "failed", failed
    assert failed["error"]["type"] == "urn:autopar:problem:time-limit"
    assert "time limit of 0.2 s" in failed["error"]["detail"]
    # both workers were killed; fresh ones take the next job
    small = client.post("/v1/plans", json=SMALL_PLAN).json()
    assert wait_for(client, small["id"], states=("done", "failed"))["status"] == "done"


def test_a_result_stored_by_another_version_is_reported_not_served(make_client, sqlite_url) -> None:
    client = make_client(sqlite_url)
    job = client.post("/v1/plans", json=SMALL_PLAN).json()
    store = client.app.state.jobs
    store.claim_next("test")
    store.finish(job["id"], "test", status="done", result={"plans": "an older shape"})
    shown = client.get(f"/v1/plans/{job['id']}").json()
    assert shown["status"] == "done" and shown["result"] is None
    assert "submit the request again" in shown["error"]["detail"]
    assert_problem(client.get(f"/v1/plans/{job['id']}/result"), 409, "conflict")
    assert_problem(client.get(f"/v1/plans/{job['id']}/launch/megatron"), 409, "conflict")
