"""The plan explorer's files at / and /static, the stored-plan listing and a job's report."""

from __future__ import annotations

from api_support import SMALL_PLAN, assert_problem, wait_for

from planner.report import report_html


def test_the_page_and_its_files_are_served_without_a_token(make_client, sqlite_url) -> None:
    client = make_client(sqlite_url, api_token="secret")
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "autopar plan explorer" in page.text
    for name, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        served = client.get(f"/static/{name}")
        assert served.status_code == 200 and kind in served.headers["content-type"], name
    # the API itself still wants the token
    assert client.get("/v1/plans").status_code == 401


def test_the_page_uses_only_the_v1_api(make_client, sqlite_url) -> None:
    script = make_client(sqlite_url).get("/static/app.js").text
    paths = {line.split("`")[1] for line in script.splitlines() if "api(`" in line}
    paths |= {line.split('"')[1] for line in script.splitlines() if 'api("' in line}
    assert paths and all(path.startswith("/v1/") for path in paths), paths


def test_stored_plans_are_listed_newest_first_with_their_report(make_db_client) -> None:
    client = make_db_client(job_workers=1)
    assert client.get("/v1/plans").json() == []
    job = client.post("/v1/plans", json=SMALL_PLAN).json()
    done = wait_for(client, job["id"], states=("done", "failed"))
    assert done["status"] == "done", done["error"]
    listed = client.get("/v1/plans").json()
    assert [entry["id"] for entry in listed] == [job["id"]]
    best = done["result"]["plans"][0]
    assert listed[0]["best_step_time_s"] == best["time"]["step_time_s"]
    assert listed[0]["request"]["model"] == "llama-3.1-8b"
    report = client.get(f"/v1/plans/{job['id']}/report")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert report.text == report_html(done["result"], title=f"plan job {job['id']}")


def test_report_of_an_unknown_or_unfinished_job(make_client, sqlite_url) -> None:
    client = make_client(sqlite_url)  # no workers: a job stays queued
    assert_problem(client.get("/v1/plans/nope/report"), 404, "not-found")
    job = client.post("/v1/plans", json=SMALL_PLAN).json()
    assert_problem(client.get(f"/v1/plans/{job['id']}/report"), 409, "conflict")
    assert_problem(client.get("/v1/plans?limit=0"), 422, "invalid-request")
