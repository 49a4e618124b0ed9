"""Helpers shared by the REST service tests: sample requests, polling, problem checks."""

from __future__ import annotations

import time
from typing import Any

SMALL_PLAN = {
    "model": "llama-3.1-8b",
    "cluster": "dgx-h100",
    "gpus": 8,
    "seq_len": 4096,
    "global_batch": 64,
    "time_limit": 30,
}
"""About a second of planning (several hundred candidate layouts)."""
SMALL_ESTIMATE = {
    "model": "llama-3.1-8b",
    "cluster": "dgx-h100",
    "gpus": 8,
    "seq_len": 4096,
    "global_batch": 64,
    "tp": 2,
}


def wait_for(client: Any, job_id: str, *, states: tuple[str, ...], timeout_s: float = 45.0) -> Any:
    """Poll ``GET /v1/plans/{id}`` until the job reaches one of ``states``."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/plans/{job_id}").json()
        if job["status"] in states:
            return job
        assert time.monotonic() < deadline, f"job stayed {job['status']}: {job}"
        time.sleep(0.1)


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    """A problem+json body with this status and kind, and nothing that leaks internals."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["type"] == f"urn:autopar:problem:{slug}"
    assert body["title"] and body["detail"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body
