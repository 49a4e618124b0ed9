"""``POST /v1/plans`` with lengths (``length_dist`` or ``seq_lengths``): the layouts are
priced over them as ``autopar plan --length-dist | --seq-lengths`` prices them, the stored
result carries ``length_pricing`` and the best plan's ``scattering`` block, and bad
lengths are problem+json errors before anything is queued."""

from __future__ import annotations

import json

from api_support import assert_problem, wait_for

PLAN = {
    "model": "llama-3.1-8b",
    "cluster": "hgx-h200",
    "gpus": 8,
    "seq_len": 8192,
    "global_batch": 16,
    "top_k": 2,
    "time_limit": 60,
}
LENGTHS = [[8192, 8192, 4096] + [1024] * 12 + [512] * 40]


def test_lengths_are_priced_stored_and_returned_as_the_cli_does(
    make_client, sqlite_url, run_cli, tmp_path
) -> None:
    client = make_client(sqlite_url, job_workers=1)
    body = {**PLAN, "seq_lengths": LENGTHS}
    submitted = client.post("/v1/plans", json=body)
    assert submitted.status_code == 202, submitted.text
    job = wait_for(client, submitted.json()["id"], states=("done", "failed"), timeout_s=120)
    assert job["status"] == "done", job["error"]
    assert job["request"]["seq_lengths"] == LENGTHS
    result = client.get(f"/v1/plans/{job['id']}/result").json()
    best, runner_up = result["plans"]
    assert best["scattering"]["decided_by"] == "search"
    assert best["length_pricing"]["lengths_source"] == "request seq_lengths"
    assert "length_pricing" in runner_up and "scattering" not in runner_up
    path = tmp_path / "lengths.json"
    path.write_text(json.dumps(LENGTHS))
    cli = run_cli(
        "plan", "--model", "llama-3.1-8b", "--cluster", "hgx-h200", "--gpus", "8",
        "--seq-len", "8192", "--global-batch", "16", "--top-k", "2", "--time-limit", "60",
        "--seq-lengths", str(path), "--json",
    )  # fmt: skip
    expected = json.loads(cli.stdout)["plans"]
    assert [p["config"] for p in result["plans"]] == [p["config"] for p in expected]
    assert [p["time"] for p in result["plans"]] == [p["time"] for p in expected]
    assert [
        {k: v for k, v in p["length_pricing"].items() if k != "lengths_source"}
        for p in result["plans"]
    ] == [{k: v for k, v in p["length_pricing"].items() if k != "lengths_source"} for p in expected]
    # one flat list is one batch: the same canonical inputs, so the same job
    again = client.post("/v1/plans", json={**PLAN, "seq_lengths": LENGTHS[0]})
    assert again.status_code == 200 and again.json()["id"] == job["id"], again.text
    # without lengths the inputs differ (and the hash of older requests is unchanged)
    plain = client.post("/v1/plans", json=PLAN)
    assert plain.json()["id"] != job["id"] and "seq_lengths" not in plain.json()["request"]


def test_a_distribution_is_sampled_with_the_request_seed(make_client, sqlite_url) -> None:
    client = make_client(sqlite_url, job_workers=1)
    body = {**PLAN, "length_dist": "wikipedia-flexsp", "length_samples": 1, "length_seed": 5}
    job = client.post("/v1/plans", json=body).json()
    assert {k: job["request"][k] for k in body} == body
    done = wait_for(client, job["id"], states=("done", "failed"), timeout_s=120)
    assert done["status"] == "done", done["error"]
    pricing = done["result"]["plans"][0]["length_pricing"]
    assert "seed 5" in pricing["lengths_source"]
    assert pricing["token_mean_len"] > pricing["mean_len"]


def test_bad_lengths_are_refused_before_queueing(client) -> None:
    cases = [
        ({"length_dist": "uniform", "seq_lengths": [[100]]}, 422, "invalid-spec", "not both"),
        ({"length_dist": "zipf"}, 404, "unknown-name", "length-dist: unknown 'zipf'"),
        ({"length_dist": "../uniform"}, 422, "invalid-request", None),
        ({"seq_lengths": [[100, 0]]}, 422, "invalid-request", None),
        ({"seq_lengths": [100, -4]}, 422, "invalid-request", None),
        ({"seq_lengths": [[100, "x"]]}, 422, "invalid-request", None),
        ({"seq_lengths": [[100, 1.5]]}, 422, "invalid-request", None),
        ({"seq_lengths": []}, 422, "invalid-request", None),
        ({"seq_lengths": [[]]}, 422, "invalid-request", None),
        ({"seq_lengths": [[1] * 20_001]}, 422, "invalid-request", None),
        ({"seq_lengths": [[1]] * 17}, 422, "invalid-request", None),
        ({"seq_lengths": [[1 << 25]]}, 422, "invalid-request", None),
        ({"length_dist": "uniform", "length_samples": 0}, 422, "invalid-request", None),
        ({"length_dist": "uniform", "length_samples": 17}, 422, "invalid-request", None),
        ({"length_dist": "uniform", "gpus": 6}, 422, "invalid-spec", "(got 6)"),
        ({"lengthDist": "uniform"}, 422, "invalid-request", None),
    ]
    for extra, status, slug, words in cases:
        answer = client.post("/v1/plans", json={**PLAN, **extra})
        problem = assert_problem(answer, status, slug)
        if words:
            assert words in problem["detail"], problem
