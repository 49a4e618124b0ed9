"""``POST /v1/scatter``: a stored job like plans, with the CLI's result, reuse, bounded
lengths and problem+json errors before anything is queued."""

from __future__ import annotations

import json
import time
from typing import Any

from api_support import assert_problem

SMALL = {
    "model": "llama-3.1-8b",
    "cluster": "hgx-h200",
    "gpus": 8,
    "seq_lengths": [[300, 120, 9000, 70, 2100, 800, 64]],
    "time_limit": 0.2,
}


def _wait(client: Any, job_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/scatter/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def test_scatter_job_gives_the_cli_result_and_is_reused(
    make_client, sqlite_url, run_cli, tmp_path
) -> None:
    client = make_client(sqlite_url, job_workers=1)
    submitted = client.post("/v1/scatter", json=SMALL)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    assert submitted.headers["location"] == f"/v1/scatter/{job_id}"
    job = _wait(client, job_id)
    assert job["status"] == "done", job
    result = client.get(f"/v1/scatter/{job_id}/result").json()
    lengths = tmp_path / "lengths.json"
    lengths.write_text(json.dumps(SMALL["seq_lengths"]))
    cli = run_cli(
        "scatter", "--model", "llama-3.1-8b", "--cluster", "hgx-h200", "--gpus", "8",
        "--seq-lengths", str(lengths), "--time-limit", "0.2", "--json",
    )  # fmt: skip
    expected = json.loads(cli.stdout)
    assert result["gpus"] == expected["gpus"] == 8
    assert result["cost"] == expected["cost"]
    served = [b["sequences"] for b in result["batches"]]
    assert served == [b["sequences"] for b in expected["batches"]] == [7]
    again = client.post("/v1/scatter", json=SMALL)
    assert again.status_code == 200 and again.json()["reused"] and again.json()["id"] == job_id
    assert_problem(client.get("/v1/scatter/nope"), 404, "not-found")


def test_bad_scatter_requests_are_refused_before_queueing(client) -> None:
    cases = [
        ({**SMALL, "length_dist": "uniform"}, 422, "invalid-spec", "exactly one"),
        (
            {k: v for k, v in SMALL.items() if k != "seq_lengths"},
            422,
            "invalid-spec",
            "exactly one",
        ),
        ({**SMALL, "seq_lengths": [[100, 0]]}, 422, "invalid-request", None),
        ({**SMALL, "seq_lengths": [[100, -4]]}, 422, "invalid-request", None),
        ({**SMALL, "seq_lengths": [[100, "x"]]}, 422, "invalid-request", None),
        ({**SMALL, "seq_lengths": [[]]}, 422, "invalid-request", None),
        ({**SMALL, "seq_lengths": [[1] * 20_001]}, 422, "invalid-request", None),
        ({**SMALL, "seq_lengths": [[10_000_000]]}, 422, "invalid-spec", "seq_lengths"),
        ({**SMALL, "gpus": 6}, 422, "invalid-spec", "powers of two"),
        ({**SMALL, "model": "nope"}, 404, "unknown-name", "model"),
        ({**SMALL, "seq_lengths": None, "length_dist": "nope"}, 404, "unknown-name", "length-dist"),
        ({**SMALL, "time_limit": 1000}, 422, "invalid-request", None),
    ]
    for body, status, slug, words in cases:
        body = {k: v for k, v in body.items() if v is not None}
        answer = client.post("/v1/scatter", json=body)
        problem = assert_problem(answer, status, slug)
        if words:
            assert words in problem["detail"], problem
