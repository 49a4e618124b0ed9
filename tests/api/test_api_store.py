"""The job table's state machine, on SQLite and on PostgreSQL (one contract, both stores)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import inspect, text, update

from api.db import jobs, make_engine
from api.store import MAX_ATTEMPTS, JobStore, ModelStore, utcnow


@pytest.fixture
def store(database_url: str):
    engine = make_engine(database_url)
    yield JobStore(engine)
    engine.dispose()


def _job(store: JobStore, key: str = "k") -> str:
    return store.create(
        inputs_hash=key, request={"r": 1}, inputs={"i": 1}, time_limit_s=10.0, layouts=5
    ).id


def test_the_oldest_queued_job_is_claimed_first(store) -> None:
    first, second = _job(store, "a"), _job(store, "b")
    assert store.claim_next("me").id == first
    assert store.claim_next("me").id == second
    assert store.claim_next("me") is None


def test_each_job_is_claimed_by_one_owner_only(store) -> None:
    ids = [_job(store, key=f"k{n}") for n in range(6)]
    claimed: list[str] = []
    lock = threading.Lock()

    def claim(owner: str) -> None:
        while (row := store.claim_next(owner)) is not None:
            with lock:
                claimed.append(row.id)

    threads = [threading.Thread(target=claim, args=(f"owner-{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(ids)  # each exactly once
    assert store.count_queued() == 0
    assert store.get(ids[0]).status == "running" and store.get(ids[0]).attempts == 1


def test_finish_needs_the_owner_and_a_running_job(store) -> None:
    job_id = _job(store)
    assert not store.finish(job_id, "me", status="done", result={"plans": []})  # still queued
    store.claim_next("me")
    assert not store.finish(job_id, "someone-else", status="done", result={})
    assert store.finish(job_id, "me", status="done", result={"plans": [1]})
    row = store.get(job_id)
    assert row.status == "done" and row.result == {"plans": [1]} and row.finished_at is not None
    assert store.find_reusable("k").id == job_id


def test_cancel_is_immediate_when_queued_and_flagged_when_running(store) -> None:
    queued, running = _job(store, "a"), _job(store, "b")
    assert store.request_cancel(queued).status == "cancelled"
    assert store.claim_next("me").id == running
    assert store.request_cancel(running).status == "running"
    assert store.heartbeat(running, "me") is True  # the dispatcher learns of it
    assert store.find_reusable("a") is None  # cancelled jobs are not reused


def test_silent_owners_lose_their_jobs_and_stopping_owners_hand_them_back(store) -> None:
    silent, stopping, flagged = _job(store, "s"), _job(store, "t"), _job(store, "f")
    store.claim_next("crashed")
    store.claim_next("stopping")
    store.claim_next("crashed")
    store.request_cancel(flagged)
    assert store.requeue(stale_after_s=60) == 0  # heartbeats are fresh
    assert store.requeue(owner="stopping") == 1
    assert store.get(stopping).status == "queued" and store.get(stopping).owner is None
    assert store.requeue(stale_after_s=0) == 1
    assert store.get(silent).status == "queued"
    assert store.get(flagged).status == "cancelled"


def test_a_job_lost_too_often_fails(store) -> None:
    job_id = _job(store)
    with store.engine.begin() as conn:
        conn.execute(update(jobs).values(attempts=MAX_ATTEMPTS - 1))
    store.claim_next("crashed")
    with store.engine.begin() as conn:
        conn.execute(update(jobs).values(heartbeat_at=utcnow().replace(year=2000)))
    assert store.requeue() == 0
    row = store.get(job_id)
    assert row.status == "failed" and "lost 3 times" in row.error["detail"]
    assert store.find_reusable("k") is None  # an internal failure is tried again


def test_failures_the_inputs_would_repeat_are_reused(store) -> None:
    job_id = _job(store)
    store.claim_next("me")
    problem = {"type": "urn:autopar:problem:infeasible", "title": "t", "status": 422, "detail": "d"}
    store.finish(job_id, "me", status="failed", error=problem)
    assert store.find_reusable("k").id == job_id


def test_imported_models_round_trip(store) -> None:
    models = ModelStore(store.engine)
    assert models.get("m") is None and models.all() == []
    models.add("m", {"name": "m", "num_layers": 2}, source="https://example.org/config.json")
    assert models.get("m") == {"name": "m", "num_layers": 2}
    assert models.all() == [{"name": "m", "num_layers": 2}]


def test_progress_is_stored_with_the_heartbeat_and_cleared_on_requeue(store) -> None:
    job_id = _job(store)
    store.claim_next("me")
    report = {"phase": "tabulate", "evaluated": 16, "total": 40, "timed": 0}
    store.heartbeat(job_id, "me", progress=report)
    assert store.get(job_id).progress == report
    store.heartbeat(job_id, "me")  # no report: the last one stays
    assert store.get(job_id).progress == report
    assert store.requeue(owner="me") == 1
    assert store.get(job_id).progress is None
    store.claim_next("me")
    done = {"phase": "done", "evaluated": 40, "total": 40, "timed": 7}
    assert store.finish(job_id, "me", status="done", result={"r": 1}, progress=done)
    assert store.get(job_id).progress == done


def test_an_older_jobs_table_gets_the_new_columns(database_url: str) -> None:
    """A database made before ``progress`` existed: start-up adds the column, rows stay."""
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {jobs.name} DROP COLUMN progress"))
    old = JobStore(engine)
    engine.dispose()
    assert "progress" not in {c["name"] for c in inspect(old.engine).get_columns(jobs.name)}
    engine = make_engine(database_url)
    assert "progress" in {c["name"] for c in inspect(engine).get_columns(jobs.name)}
    store = JobStore(engine)
    job_id = _job(store)
    assert store.get(job_id).progress is None
    engine.dispose()


def test_servers_starting_together_on_a_new_database_all_start(database_url: str) -> None:
    """Server processes started at once (``autopar serve --workers N``) race to create the
    tables; the losers see them made (SQLite reports that as an OperationalError)."""
    ready = threading.Barrier(6)
    engines: list[Any] = []
    errors: list[BaseException] = []

    def start() -> None:
        ready.wait()
        try:
            engines.append(make_engine(database_url))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(engines) == 6
    for engine in engines:
        engine.dispose()
