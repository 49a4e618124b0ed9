"""Expert-placement jobs: submit, result (as ``autopar place-experts --json``), files,
reuse, and the errors that come back before anything is queued."""

from __future__ import annotations

import time
from typing import Any

import pytest
from api_support import assert_problem

REQUEST = {
    "model": "mixtral-8x7b",
    "cluster": "dgx-h100",
    "ep": 4,
    "synthetic": "zipf:1.2,seed:4",
    "replicas": 4,
    "time_limit": 1,
}


def _wait(client: Any, job_id: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/expert-placements/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, f"job stayed {job['status']}"
        time.sleep(0.2)


def test_job_runs_gives_files_and_is_reused(make_client, sqlite_url: str) -> None:
    client = make_client(sqlite_url, job_workers=1)
    submitted = client.post("/v1/expert-placements", json=REQUEST)
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert submitted.headers["location"] == f"/v1/expert-placements/{job['id']}"
    done = _wait(client, job["id"])
    assert done["status"] == "done", done["error"]
    result = done["result"]
    assert result["ep"] == 4 and len(result["layers"]) == 32 and len(result["phy2log"][0]) == 12
    by_name = {b["name"]: b for b in result["baselines"]}
    assert by_name["ours"]["straggler_tokens"] <= by_name["greedy_global"]["straggler_tokens"]
    files = client.get(f"/v1/expert-placements/{job['id']}/files").json()
    assert files["sglang"]["physical_to_logical_map"] == result["phy2log"]
    assert files["eplb"]["phy2log"] == result["phy2log"]
    assert sum(files["eplb"]["logcnt"][0]) == 12 and files["table"].startswith("layer")
    again = client.post("/v1/expert-placements", json=REQUEST)
    assert again.status_code == 200 and again.json()["reused"] is True
    assert again.json()["id"] == job["id"]
    # A plan id is not an expert-placement job, and the reverse.
    assert_problem(client.get("/v1/expert-placements/nope"), 404, "not-found")


@pytest.mark.parametrize(
    ("change", "status", "slug", "words"),
    [
        ({"model": "llama-3.1-8b"}, 422, "invalid-spec", "has no MoE layers"),
        ({"model": "no-such-model"}, 404, "unknown-name", "unknown 'no-such-model'"),
        ({"ep": 5}, 422, "invalid-spec", "do not divide over ep 5"),
        ({"synthetic": None, "loads": [[1, 2, 3, 4, 5, 6, 7, 8]]}, 422, "invalid-spec",
         "routing: 1 layers, mixtral-8x7b has 32 MoE layers"),
        ({"synthetic": None, "loads": [[1, 2], [3]]}, 422, "invalid-spec", "loads"),
        ({"loads": [[1] * 8] * 32}, 422, "", "exactly one of loads and synthetic"),
        ({"replicas": 0, "objective": "traffic"}, 422, "invalid-spec", "no affinity"),
    ],
)  # fmt: skip
def test_bad_requests_fail_before_queueing(
    client: Any, change: dict, status: int, slug: str, words: str
) -> None:
    body = {k: v for k, v in {**REQUEST, **change}.items() if v is not None}
    response = client.post("/v1/expert-placements", json=body)
    assert response.status_code == status, response.text
    assert words in response.text
    if slug:
        assert_problem(response, status, slug)
