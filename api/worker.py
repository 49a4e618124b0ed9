"""The planning worker: a separate process that runs ``planner.plan`` for one job at a time.

Planning is CPU-bound, so it runs outside the server's event loop and threads, in a
process the dispatcher (:mod:`api.jobs`) can kill when the job is cancelled or overruns.
It is started as ``python -m api.worker`` (a plain subprocess: nothing of the server's
process, its threads or its ``__main__`` is inherited) and speaks JSON lines:

    worker -> {"ready": true}                          once warmed up
    parent -> {"job": id, "inputs": {...}}             the job's canonical inputs
    worker -> {"progress": {...}}                      zero or more, as the search goes
    worker -> {"status": "done", "result": {...}}      ``autopar plan --json``
           |  {"status": "failed", "error": {...}}     a problem: user error (422) or 500
    parent closes stdin                                 the worker exits

Progress lines (``planner.search.progress``: phase, layouts evaluated of the total,
layouts timed) go out at every phase change and otherwise at most every
``PROGRESS_INTERVAL_S``; the last one before the answer is phase ``done`` when the search
finished.

Warm-up fits the rate efficiencies once per process (``planner.cost.rates``, about 1.5 s
on one core), so the first job does not pay for it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

import hardware_db
from api.inputs import RUN_SETTINGS
from api.memory_jobs import KIND as MEMORY_PLAN
from api.memory_jobs import run_memory_plan
from api.problems import ApiProblem, from_autopar_error, internal_error
from api.routers.expert_placements import KIND as EXPERT_PLACEMENT
from api.routers.expert_placements import run_expert_placement
from api.scatter_jobs import KIND as SCATTER
from api.scatter_jobs import run_scatter
from api.schemas import MEMPLAN_SEARCH_SHARE
from planner.catalog import load_gpu
from planner.cost.frameworks import Runtime
from planner.cost.rates import rates_for
from planner.errors import AutoparError
from planner.memplan.fits import MEMPLAN_TIME_LIMIT_S, PLAN_TOP, entry_with_simulated
from planner.plan import LengthsOption, PlanRequest, Progress, plan
from planner.search.progress import ProgressCallback
from planner.specs.hardware import ClusterSpec
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec

log = logging.getLogger("autopar.worker")

PROGRESS_INTERVAL_S = 0.25
"""Least time between two progress lines of one phase (the parent stores the latest with
its heartbeat, every second)."""


def warm_up() -> None:
    """Fit the achievable rates of every catalogue GPU that has them (cached per process)."""
    for gpu_id in hardware_db.list_gpus():
        try:
            rates_for(load_gpu(gpu_id), "bf16")
        except AutoparError:
            continue  # a GPU without measurements to borrow: its requests say so themselves


MIN_STAGE_S = 0.2
"""The least placement time a stage's simulation gets, however little of the time limit
the search left (CP-SAT's first-fit warm start is found within it)."""


def plan_request(inputs: dict[str, Any]) -> PlanRequest:
    """The ``PlanRequest`` of a job's canonical inputs (:func:`api.inputs.plan_inputs`)."""
    return PlanRequest(
        model=ModelSpec.model_validate(inputs["model"]),
        cluster=ClusterSpec.model_validate(inputs["cluster"]),
        workload=WorkloadSpec.model_validate(inputs["workload"]),
        framework=inputs["framework"],
        framework_version=inputs.get("framework_version"),
        objective=inputs["objective"],
        fixed=inputs["fix"],
        maxima=inputs["max"],
        headroom_gib=inputs["headroom_gib"],
        risk=inputs.get("risk", "neutral"),  # jobs stored before risk existed ranked neutral
        top_k=inputs["top_k"],
        time_limit_s=inputs["time_limit_s"],
        lengths=LengthsOption.model_validate(inputs["lengths"]) if "lengths" in inputs else None,
        runtime=Runtime(**{name: inputs[name] for name in RUN_SETTINGS if name in inputs}),
        layer_spec=inputs.get("layer_spec", "transformer_engine"),
        **{
            knob: inputs[knob]
            for knob in ("price_per_gpu_hour", "token_budget", "deadline_hours")
            if knob in inputs
        },
    )


def run_plan(inputs: dict[str, Any], progress: ProgressCallback | None = None) -> dict[str, Any]:
    """``planner.plan`` on a job's canonical inputs, passed whole as a ``PlanRequest``;
    with ``memplan``, the search has ``MEMPLAN_SEARCH_SHARE`` of the time limit and the
    best ``PLAN_TOP`` plans are simulated in the rest (``autopar plan --memplan``)."""
    request = plan_request(inputs)
    if not inputs.get("memplan"):
        return plan(request, progress=progress).model_dump(mode="json")
    started = time.monotonic()
    search = request.model_copy(
        update={"time_limit_s": request.time_limit_s * MEMPLAN_SEARCH_SHARE}
    )
    result = plan(search, progress=progress)
    top = result.plans[:PLAN_TOP]
    left = request.time_limit_s - (time.monotonic() - started)
    stages = sum(entry.config.pp for entry in top) or 1
    per_stage = max(MIN_STAGE_S, min(MEMPLAN_TIME_LIMIT_S, left / stages))
    simulated = [
        entry_with_simulated(
            entry, model=request.model, cluster=request.cluster, workload=request.workload,
            time_limit_s=per_stage,
        )
        for entry in top
    ]  # fmt: skip
    plans = simulated + list(result.plans[PLAN_TOP:])
    return result.model_copy(update={"plans": plans}).model_dump(mode="json")


JOB_KINDS: dict[str, Callable[[dict[str, Any], ProgressCallback | None], dict[str, Any]]] = {
    EXPERT_PLACEMENT: run_expert_placement,
    SCATTER: lambda inputs, _progress: run_scatter(inputs),
    MEMORY_PLAN: lambda inputs, _progress: run_memory_plan(inputs),
}
"""Runners of the job kinds other than plans, by the ``kind`` of their inputs."""


def serve(commands: IO[str], answers: IO[str]) -> None:
    """The worker's loop over JSON lines (see the module docstring)."""
    warm_up()
    _send(answers, {"ready": True})
    for line in commands:
        message = json.loads(line)
        job_id, inputs = message["job"], message["inputs"]
        try:
            run = JOB_KINDS.get(inputs.get("kind", "plan"), run_plan)
            result = run(inputs, _progress_lines(answers))
            _send(answers, {"status": "done", "result": result})
        except AutoparError as error:
            _send(answers, {"status": "failed", "error": _problem(from_autopar_error(error))})
        except Exception:
            log.exception("job %s failed with an internal error", job_id)
            _send(answers, {"status": "failed", "error": _problem(internal_error(f"job-{job_id}"))})


def _progress_lines(answers: IO[str]) -> ProgressCallback:
    """A progress callback writing lines (see the module docstring)."""
    last_phase, last_sent = "", 0.0

    def report(progress: Progress) -> None:
        nonlocal last_phase, last_sent
        now = time.monotonic()
        if progress.phase != last_phase or now - last_sent >= PROGRESS_INTERVAL_S:
            last_phase, last_sent = progress.phase, now
            _send(answers, {"progress": dataclasses.asdict(progress)})

    return report


def _send(answers: IO[str], message: dict[str, Any]) -> None:
    answers.write(json.dumps(message) + "\n")
    answers.flush()


def _problem(problem: ApiProblem) -> dict[str, Any]:
    return problem.problem().model_dump(mode="json", exclude_none=True)


def protocol_answers(name: str) -> IO[str]:
    """The original stdout, for a child process's answers; stdout itself then goes to
    stderr, so anything else printed (by a library, or C code) cannot corrupt the
    protocol. Log lines are prefixed with ``autopar {name}:``."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    logging.basicConfig(level=logging.WARNING, format=f"autopar {name}: %(message)s")
    return answers


def main() -> None:
    """``python -m api.worker``: answers on the original stdout (``protocol_answers``)."""
    serve(sys.stdin, protocol_answers("worker"))


if __name__ == "__main__":
    main()
