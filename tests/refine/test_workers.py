"""Several workers on one stored study: trials shared, none lost, none run twice."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from planner.refine import RefineProblem, collect, create_study, join_study

WORKER_TRIALS = (7, 5)


def _worker(study: str, storage: str, trials: int, tmp_path: Path) -> subprocess.Popen[str]:
    """``autopar refine-worker`` in its own process (``python -m planner`` is the same CLI)."""
    command = [sys.executable, "-m", "planner", "refine-worker", "--study", study,
               "--trials", str(trials), "--storage", storage, "--json"]  # fmt: skip
    env = {**os.environ, "AUTOPAR_DATA_DIR": str(tmp_path)}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def test_two_worker_processes_share_one_study(
    problem: RefineProblem, storage: str, tmp_path: Path
) -> None:
    create_study(problem, storage=storage, study_name="shared")
    workers = [_worker("shared", storage, n, tmp_path) for n in WORKER_TRIALS]
    outputs = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr
        outputs.append(json.loads(stdout))
    study, stored = join_study("shared", storage=storage)
    assert stored == problem
    result = collect(study, stored, storage=storage)
    numbers = [t.number for t in result.trials]
    assert len(numbers) == len(set(numbers)) == sum(WORKER_TRIALS)
    assert sorted(numbers) == list(range(sum(WORKER_TRIALS)))
    ids = [f"{socket.gethostname()}:{w.pid}" for w in workers]
    for worker_id, trials in zip(ids, WORKER_TRIALS, strict=True):
        assert sum(t.worker == worker_id for t in result.trials) == trials
    assert result.counts.running == result.counts.waiting == result.counts.failed == 0
    # each solver plan was taken by exactly one of the workers
    ranks = sorted(t.seed_rank for t in result.trials if t.seed_rank is not None)
    assert ranks == list(range(len(problem.seeds)))
    # every worker reports the whole study, the other worker's trials included
    finished_last = max(outputs, key=lambda out: out["counts"]["total"])
    assert finished_last["counts"]["total"] == sum(WORKER_TRIALS)
    # a trial the other worker had just asked for may be running, its worker not yet
    # recorded: the finished trials carry both workers
    finished = [t for t in finished_last["trials"] if t["state"] not in ("running", "waiting")]
    assert {t["worker"] for t in finished} == set(ids)
