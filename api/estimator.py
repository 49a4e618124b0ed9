"""Large estimates in a separate process, so that neither the event loop nor the GIL is
tied up by them.

Threads are no good for them under load. While the event loop keeps the GIL busy with
the small estimates it runs itself, releasing it for a moment at every socket write, a
waiting thread rarely wins it back (it asks for a forced switch only after 5 ms without
any). Measured with ``benchmarks/service_load.py`` at 256 requests in flight, median
0.2 s: the 1 in 72 estimates that went to a worker thread took 2-2.6 s; through a
``ProcessPoolExecutor`` still 0.6-0.8 s, since its feeder and result threads need the
GIL too. So the server talks to its estimate process over pipes read and written by the
event loop itself, with no thread in between.

The process is ``python -m api.estimator`` (a fresh interpreter: nothing of the threaded
server is forked; it fits the rates once, :func:`api.worker.warm_up`) and speaks JSON
lines, answered in order:

    parent -> {"id": n, "call": {...}}              an :class:`api.inputs.EstimateCall`
    worker -> {"id": n, "estimate": "<json>"}       the estimate, serialized once
           |  {"id": n, "error": {...}}             a problem: user error (422/404) or 500
    parent closes stdin                              the worker exits

``AUTOPAR_ESTIMATE_PROCESSES=0`` runs large estimates in a worker thread of the server
instead (``api.routers.estimates``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from typing import IO, Any

from api.inputs import EstimateCall
from api.jobs import worker_environment
from api.problems import ApiProblem, from_autopar_error, internal_error
from api.worker import protocol_answers, warm_up
from planner.errors import AutoparError

log = logging.getLogger("autopar.estimator")

RETRY_AFTER_S = 5
STOP_TIMEOUT_S = 5.0
LINE_LIMIT = 1 << 26
"""Longest answer line read (an estimate of the largest pipeline is a few hundred KiB)."""


def estimate_json(call: EstimateCall) -> str:
    """The estimate's JSON text (what ``POST /v1/estimate`` answers)."""
    return call.run().model_dump_json()


class EstimateProcess:
    """One estimate process and the requests in flight to it (restarted if it dies)."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[str]] = {}
        self._next_id = 0

    async def start(self) -> None:
        """Start the process (its warm-up runs while the server already answers)."""
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "api.estimator",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=worker_environment(),
            limit=LINE_LIMIT,
        )
        self._reader = asyncio.create_task(self._read(self._process))

    async def run(self, call: EstimateCall) -> str:
        """The estimate's JSON text, computed in the process."""
        process = self._process
        if process is None or process.returncode is not None or process.stdin is None:
            await self._restart()
            process = self._process
            assert process is not None and process.stdin is not None
        self._next_id += 1
        request_id = self._next_id
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        line = json.dumps({"id": request_id, "call": call.to_json()}) + "\n"
        try:
            process.stdin.write(line.encode())
            await process.stdin.drain()
            return await answer
        finally:
            self._pending.pop(request_id, None)

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        try:
            while line := await process.stdout.readline():
                message = json.loads(line)
                answer = self._pending.get(message.get("id"))
                if answer is None or answer.done():
                    continue  # the request gave up (client gone)
                if "estimate" in message:
                    answer.set_result(message["estimate"])
                else:
                    error = message["error"]
                    answer.set_exception(
                        ApiProblem(error["status"], error["slug"], error["detail"])
                    )
        except (ValueError, KeyError):
            log.exception("the estimate process wrote a malformed line")
        finally:
            if self._process is process:
                self._fail_pending()

    def _fail_pending(self) -> None:
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(
                    ApiProblem(
                        503,
                        "unavailable",
                        "the estimate process stopped; try again shortly",
                        headers={"Retry-After": str(RETRY_AFTER_S)},
                    )
                )
        self._pending.clear()

    async def _restart(self) -> None:
        log.error("the estimate process is gone; starting a new one")
        await self.stop()
        await self.start()

    async def stop(self) -> None:
        """Close its input, wait for it to exit (kill it after ``STOP_TIMEOUT_S``)."""
        process, self._process = self._process, None
        if process is not None:
            if process.stdin is not None:
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                    process.kill()
                await process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self._fail_pending()


def serve(commands: IO[str], answers: IO[str]) -> None:
    """The estimate process's loop over JSON lines (see the module docstring)."""
    warm_up()
    for line in commands:
        message = json.loads(line)
        answer: dict[str, Any] = {"id": message["id"]}
        try:
            answer["estimate"] = estimate_json(EstimateCall.from_json(message["call"]))
        except AutoparError as error:
            answer["error"] = _problem(from_autopar_error(error))
        except Exception:
            log.exception("estimate %s failed with an internal error", message["id"])
            answer["error"] = _problem(internal_error(f"estimate-{message['id']}"))
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def _problem(problem: ApiProblem) -> dict[str, Any]:
    return {"status": problem.status, "slug": problem.slug, "detail": problem.detail}


def main() -> None:
    """``python -m api.estimator``: answers on the original stdout (``protocol_answers``)."""
    serve(sys.stdin, protocol_answers("estimator"))


if __name__ == "__main__":
    main()
