"""Jobs and results survive a restart of a real server process (``autopar serve``)."""

from __future__ import annotations

from api_support import SMALL_PLAN, wait_for
from live_server import running_server


def test_jobs_and_results_survive_a_restart(sqlite_url, tmp_path) -> None:
    with running_server(sqlite_url, tmp_path) as server:
        first = server.post("/v1/plans", json=SMALL_PLAN).json()
        result = wait_for(server, first["id"], states=("done", "failed"))["result"]
        assert result is not None
        # submitted right before the stop: queued or running, then handed back to the queue
        second = server.post("/v1/plans", json={**SMALL_PLAN, "global_batch": 128}).json()
        assert second["status"] in ("queued", "running")

    with running_server(sqlite_url, tmp_path) as server:
        again = server.get(f"/v1/plans/{first['id']}").json()
        assert again["status"] == "done" and again["result"] == result
        reused = server.post("/v1/plans", json=SMALL_PLAN)
        assert reused.status_code == 200 and reused.json()["id"] == first["id"]
        finished = wait_for(server, second["id"], states=("done", "failed"))
        assert finished["status"] == "done"
        assert finished["result"]["plans"][0]["config"]["global_batch"] == 128
