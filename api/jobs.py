"""The job runner: a bounded pool of planning processes fed from the job table.

Each server process runs ``workers`` slots. A slot is a thread that owns one worker
process (:mod:`api.worker`) and loops: claim the oldest queued job from the database
(:meth:`api.store.JobStore.claim_next`, so slots of every server process on the same
database share one queue), hand it to its process, and wait for the answer while it

* sends a heartbeat every ``HEARTBEAT_S`` (and reads the job's cancel flag with it),
  storing with it the latest progress the worker reported (phase, layouts evaluated of
  the total, layouts timed: ``planner.search.progress``), so ``GET /v1/plans/{id}``
  shows it; the first report is stored at once, and the last with the result;
* kills the process when the job is cancelled (``DELETE``) or runs past its hard
  deadline, ``time_limit_s + max(grace, 0.25 x time_limit_s)`` (grace: 5 s by
  default, ``AUTOPAR_JOB_GRACE_S``): the planner stops itself at its time limit
  (returning the best plans found, or failing with ``time-limit`` when none fits yet)
  but its solver always gets a second, so the deadline leaves that room and more;
* starts a fresh process after a kill (the warm-up costs a few seconds).

Workers are plain subprocesses (``python -m api.worker``), not forks of the threaded
server, and they never import the server's ``__main__``.

A housekeeping thread queues again the jobs whose owner went silent (a server that was
killed); a server that stops cleanly hands its running jobs back to the queue itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import api
from api.problems import ApiProblem
from api.store import STALE_AFTER_S, JobRow, JobStore

log = logging.getLogger("autopar.jobs")

POLL_S = 0.5
"""How often an idle slot looks for queued jobs (a submit in this process wakes it at once)."""
ANSWER_POLL_S = 0.1
HEARTBEAT_S = 1.0
HOUSEKEEPING_S = 5.0
WORKER_START_TIMEOUT_S = 180.0


def hard_deadline_s(time_limit_s: float, *, grace_s: float) -> float:
    """Seconds after which a running job is killed (see the module docstring)."""
    return time_limit_s + max(grace_s, 0.25 * time_limit_s)


def worker_environment() -> dict[str, str]:
    """The environment of a ``python -m api...`` child process: this one's, with the
    source checkout on its path where ``api`` is not an installed package (the child
    imports ``api`` from where this process did)."""
    env = dict(os.environ)
    source_root = str(Path(api.__file__).resolve().parents[1])
    installed = {str(Path(sysconfig.get_paths()[key]).resolve()) for key in ("purelib", "platlib")}
    if source_root not in installed:
        paths = [source_root, env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    return env


class _Worker:
    """One planning process (``python -m api.worker``) and a thread reading its answers."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=worker_environment(),
            text=True,
            encoding="utf-8",
        )
        self.answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(
            target=self._read, name="autopar-worker-reader", daemon=True
        )
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.answers.put(json.loads(line))
            except json.JSONDecodeError:
                log.error("planning process wrote a line that is not JSON: %.200s", line)
        self.answers.put(None)  # end of output: the process exited

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, stop: threading.Event) -> bool:
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                message = self.answers.get(timeout=ANSWER_POLL_S)
            except queue.Empty:
                continue
            return message is not None and message.get("ready") is True
        return False

    def send(self, job: JobRow) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"job": job.id, "inputs": job.inputs}) + "\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def close(self) -> None:
        """Ask the process to exit (stdin closed), then make sure it did."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=2)
        self.kill()


class JobRunner:
    """``workers`` planning slots for this server process (see the module docstring)."""

    def __init__(self, store: JobStore, *, workers: int, grace_s: float) -> None:
        self.store = store
        self.workers = workers
        self.grace_s = grace_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._live: dict[int, _Worker] = {}
        self._ready: set[int] = set()
        self._lock = threading.Lock()
        self._failed_starts = 0

    def start(self) -> None:
        """Hand back jobs of silent servers, then start the slots and the housekeeper."""
        self.store.requeue(stale_after_s=STALE_AFTER_S)
        for slot in range(self.workers):
            thread = threading.Thread(
                target=self._slot, args=(slot,), name=f"autopar-slot-{slot}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        if self.workers:
            housekeeper = threading.Thread(
                target=self._housekeeping, name="autopar-housekeeping", daemon=True
            )
            housekeeper.start()
            self._threads.append(housekeeper)

    def stop(self) -> None:
        """Kill the worker processes and queue this server's running jobs again."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            live = list(self._live.values())
        for worker in live:
            worker.kill()
        for thread in self._threads:
            thread.join(timeout=15)
        if self.workers:
            self.store.requeue(owner=self.owner)

    def ready_workers(self) -> int:
        """Planning processes started, warmed up and alive."""
        with self._lock:
            return sum(1 for slot in self._ready if self._live[slot].alive())

    def notify(self) -> None:
        """A job was queued: wake an idle slot."""
        self._wake.set()

    def _housekeeping(self) -> None:
        while not self._stop.wait(HOUSEKEEPING_S):
            try:
                if self.store.requeue(stale_after_s=STALE_AFTER_S):
                    self._wake.set()
            except Exception:
                log.exception("housekeeping failed; trying again")

    def _slot(self, slot: int) -> None:
        worker: _Worker | None = None
        while not self._stop.is_set():
            try:
                if worker is None or not worker.alive():
                    worker = self._start_worker(slot)
                    if worker is None:
                        continue
                job = self.store.claim_next(self.owner)
                if job is None:
                    self._wake.wait(POLL_S)
                    self._wake.clear()
                    continue
                if not self._run(worker, job):
                    worker.kill()
                    worker = None
            except Exception:
                log.exception("slot %d: unexpected error; restarting its worker", slot)
                if worker is not None:
                    worker.kill()
                    worker = None
                self._stop.wait(1.0)
        if worker is not None:
            worker.close()

    def _start_worker(self, slot: int) -> _Worker | None:
        worker = _Worker()
        with self._lock:
            self._live[slot] = worker
            self._ready.discard(slot)
        if worker.wait_ready(self._stop):
            self._failed_starts = 0
            with self._lock:
                self._ready.add(slot)
            return worker
        worker.kill()
        if not self._stop.is_set():
            self._failed_starts += 1
            backoff = min(30.0, 2.0**self._failed_starts)
            log.error(
                "slot %d: the planning process did not start; retrying in %g s", slot, backoff
            )
            self._stop.wait(backoff)
        return None

    def _run(self, worker: _Worker, job: JobRow) -> bool:
        """Run ``job`` on ``worker``; False when the worker had to be killed."""
        started = time.monotonic()
        deadline = started + hard_deadline_s(job.time_limit_s, grace_s=self.grace_s)
        next_beat = started + HEARTBEAT_S
        progress: dict[str, Any] | None = None  # the worker's latest (planner.search.progress)
        reported = False
        try:
            worker.send(job)
        except OSError:
            self._fail(job, 500, "internal-error", "the planning process could not take the job")
            return False
        while True:
            if self._stop.is_set():
                return False  # stop() queues the job again
            try:
                answer = worker.answers.get(timeout=ANSWER_POLL_S)
            except queue.Empty:
                answer = {}
            if self._stop.is_set():
                return False  # stopping kills the worker; the job is queued again
            if answer is None:
                code = worker.process.poll()
                self._fail(job, 500, "internal-error", f"the planning process died ({code})")
                return False
            if answer and "progress" in answer:
                progress = answer["progress"]  # stored with the next heartbeat
                if not reported:  # the first one at once: the job shows its total
                    self.store.heartbeat(job.id, self.owner, progress=progress)
                    reported = True
            elif answer:
                if answer.get("status") == "done":
                    self.store.finish(
                        job.id, self.owner, status="done", result=answer["result"],
                        progress=progress,
                    )  # fmt: skip
                else:
                    self.store.finish(
                        job.id, self.owner, status="failed", error=answer["error"],
                        progress=progress,
                    )  # fmt: skip
                return True
            now = time.monotonic()
            if now > deadline:
                detail = (
                    f"the search ran past its time limit of {job.time_limit_s:g} s "
                    f"(stopped after {now - started:.1f} s); raise time_limit or narrow "
                    "the search with fix or max"
                )
                self._fail(job, 504, "time-limit", detail)
                return False
            if now >= next_beat:
                next_beat = now + HEARTBEAT_S
                if self.store.heartbeat(job.id, self.owner, progress=progress):
                    self.store.finish(job.id, self.owner, status="cancelled")
                    return False

    def _fail(self, job: JobRow, status: int, slug: str, detail: str) -> None:
        problem: dict[str, Any] = (
            ApiProblem(status, slug, detail).problem().model_dump(mode="json", exclude_none=True)
        )
        self.store.finish(job.id, self.owner, status="failed", error=problem)
