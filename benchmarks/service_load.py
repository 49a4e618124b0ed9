"""Load on the REST service: a real server on loopback, driven from this (second) process.

Phases, one after the other, against one ``python -m planner serve`` on a free loopback
port with a fresh SQLite file (measured once its planning workers are warmed up):

1. ``estimate@C``: ``--estimates`` POST /v1/estimate requests with at most C in flight,
   for each C of ``--concurrency`` (default 1, 16, 64, 256). The bodies are 432 distinct,
   valid estimates (Llama 3.1 8B on 8 H100s: 12 layouts x 6 batches x 3 sequence lengths
   x 2 precisions), so every request computes one.
2. ``plan``: ``--plans`` plan jobs with distinct inputs (small cases: Llama 3.1 8B on 8
   or 16 GPUs, about a second of planning each), all submitted at once, then polled
   until each finishes; a job that failed counts as failed, one that is not finished by
   ``--plan-timeout`` seconds or disappeared counts as lost.
3. ``mixed``: estimates at concurrency 16 while a second batch of plan jobs (new inputs)
   runs, so the estimate latency under planning load is visible too.

It prints one table (throughput, p50/p99/max latency, errors, failed and lost jobs) and
with ``--json PATH`` writes the numbers. Targets (REST service issue, on the 2-core
machine): zero errors, zero lost jobs, p99 of estimates under 200 ms. The estimate
connections are opened (and each answers one untimed health check) before a phase is
timed, so the latencies are those of requests on open connections, as a client with a
connection pool sees them.

With C requests in flight on one server process, a request waits for the ones ahead of
it, so p99 grows about as C x the server's CPU time per request. Measured on the 2-core
machine (one server process, the default run, three runs): about 0.52 ms of server CPU
and 0.05 ms of client CPU per estimate, about 1,950 estimates/s, p99 13 ms at 16 in
flight, 35 ms at 64 and 135-138 ms at 256, where the last of 256 requests sent at once
waits about 256 x 0.52 ms. Before (0.9 ms per estimate, 1,120/s): p99 340-350 ms at 256.
What changed: plain estimates answered without FastAPI's per-request handling
(``api.fastpath``), run in the order they arrived (``api.inline``), the objects alive
after start-up kept out of full garbage collections (each had stopped the loop for 70-95
ms), a faster walk of pipeline schedules (``planner.cost.timeline``). A second server
process (``--server-workers 2``; connections go to whichever process accepts them, a
40/60 split at worst in the runs measured): about 3,200 estimates/s at 256 in flight, p99
75-135 ms.

The server is stopped (SIGTERM, then its whole process group is killed if anything is
left) whatever happens, so nothing keeps running.

Run: ``python benchmarks/service_load.py [--estimates 400] [--concurrency 1,16,64,256]
[--plans 20] [--job-workers 2] [--server-workers 1] [--json out.json]`` (needs the dev
extra, for httpx).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

START_TIMEOUT_S = 90.0
POLL_S = 0.25
MIXED_CONCURRENCY = 16
TARGET_P99_MS = 200.0
LAYOUTS = [
    {"tp": 1}, {"tp": 2}, {"tp": 4}, {"tp": 8}, {"tp": 2, "pp": 2}, {"tp": 4, "pp": 2},
    {"tp": 2, "cp": 2}, {"tp": 8, "sequence_parallel": True}, {"pp": 4, "vpp": 2},
    {"tp": 2, "recompute": "selective"}, {"tp": 4, "recompute": "full"}, {"mbs": 2, "tp": 4},
]  # fmt: skip
"""Every one legal for Llama 3.1 8B on 8 GPUs with the batches below."""
BATCHES = (64, 128, 256, 512, 1024, 2048)
SEQ_LENS = (2048, 4096, 8192)
PRECISIONS = ("bf16", "fp8")


def estimate_body(n: int) -> dict[str, Any]:
    """The n-th of 432 distinct estimates (layout x batch x sequence x precision)."""
    n %= len(LAYOUTS) * len(BATCHES) * len(SEQ_LENS) * len(PRECISIONS)
    layout, n = LAYOUTS[n % len(LAYOUTS)], n // len(LAYOUTS)
    batch, n = BATCHES[n % len(BATCHES)], n // len(BATCHES)
    seq_len, n = SEQ_LENS[n % len(SEQ_LENS)], n // len(SEQ_LENS)
    return {
        "model": "llama-3.1-8b",
        "cluster": "dgx-h100",
        "gpus": 8,
        "seq_len": seq_len,
        "global_batch": batch,
        "precision": PRECISIONS[n],
        **layout,
    }


def plan_body(n: int) -> dict[str, Any]:
    """Distinct canonical inputs for each n (so no job is answered from the store)."""
    return {
        "model": "llama-3.1-8b",
        "cluster": "dgx-h100",
        "gpus": 8 * (1 + n % 2),
        "seq_len": 2048 * (1 + (n // 2) % 2),
        "global_batch": 64 * (1 + n // 4),
        "time_limit": 30,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(*, job_workers: int, server_workers: int, workdir: Path) -> Iterator[str]:
    """A server in its own process group on loopback; stopped and reaped on exit."""
    port = _free_port()
    log = (workdir / "server.log").open("w")
    env = {**os.environ, "AUTOPAR_API_TOKEN": "", "AUTOPAR_JOB_WORKERS": str(job_workers)}
    process = subprocess.Popen(
        [sys.executable, "-m", "planner", "serve", "--port", str(port), "--log-level", "warning",
         "--workers", str(server_workers), "--database-url", f"sqlite:///{workdir / 'bench.db'}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {(workdir / 'server.log').read_text()}")
            try:
                health = httpx.get(f"{base}/v1/health", timeout=2)
                # each server process has its own planning workers; one answers here
                if health.status_code == 200 and health.json()["job_workers_ready"] == job_workers:
                    time.sleep(5.0 if server_workers > 1 else 0.0)  # let the others warm up too
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server and its planning workers did not start in time")
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):  # workers share the process group
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def _latencies(values_s: list[float]) -> dict[str, float]:
    if not values_s:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    ordered = sorted(values_s)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1e3, 2),
        "p99_ms": round(p99 * 1e3, 2),
        "max_ms": round(ordered[-1] * 1e3, 2),
    }


async def _request(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    method: str,
    path: str,
    body: bytes = b"",
) -> int:
    """One request on a kept-alive HTTP/1.1 connection; the status code."""
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    length = next(
        int(line.split(":", 1)[1]) for line in head if line.lower().startswith("content-length:")
    )
    await reader.readexactly(length)
    return int(head[0].split()[1])


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _connect(host: str, port: int) -> Connection:
    """A connection the server has accepted: one untimed ``GET /v1/health`` on it."""
    reader, writer = await asyncio.open_connection(host, port)
    status = await _request(reader, writer, "GET", "/v1/health")
    if status != 200:
        raise RuntimeError(f"GET /v1/health answered {status}")
    return reader, writer


async def estimate_phase(base: str, *, count: int, concurrency: int) -> dict[str, Any]:
    """``count`` estimates over ``concurrency`` kept-alive connections, one request in
    flight on each.

    The connections are opened first (each answers one health check, untimed, so the
    server has accepted it); the latencies are those of the estimate requests on open
    connections, as a client with a connection pool sees them. ``connect_s`` is how long
    opening them all took. The client is a minimal HTTP/1.1 one (a few lines of asyncio):
    it shares the machine's cores with the server, and httpx costs more CPU per request
    than the server does once hundreds of requests are in flight."""
    host, port = base.removeprefix("http://").split(":")
    pending: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        pending.put_nowait(n)
    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not pending.empty():
                body = json.dumps(estimate_body(pending.get_nowait())).encode()
                started = time.perf_counter()
                try:
                    status = await _request(reader, writer, "POST", "/v1/estimate", body)
                    key = None if status == 200 else str(status)
                except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                    key = type(error).__name__
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                latencies.append(time.perf_counter() - started)
                if key is not None:
                    errors[key] = errors.get(key, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    connections = await asyncio.gather(
        *(_connect(host, int(port)) for _ in range(min(concurrency, count)))
    )
    connected = time.perf_counter()
    await asyncio.gather(*(connection(*pair) for pair in connections))
    wall = time.perf_counter() - connected
    return {
        "requests": count,
        "concurrency": concurrency,
        "connect_s": round(connected - started, 3),
        "wall_s": round(wall, 3),
        "throughput_per_s": round(count / wall, 1),
        **_latencies(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
    }


async def plan_phase(base: str, *, count: int, offset: int, timeout_s: float) -> dict[str, Any]:
    errors: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        started = time.perf_counter()
        responses = await asyncio.gather(
            *(client.post("/v1/plans", json=plan_body(offset + n)) for n in range(count)),
            return_exceptions=True,
        )
        ids: list[str] = []
        for response in responses:
            if isinstance(response, BaseException):
                errors[type(response).__name__] = errors.get(type(response).__name__, 0) + 1
            elif response.status_code != 202:
                errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
            else:
                ids.append(response.json()["id"])
        finished: dict[str, float] = {}
        outcome: dict[str, str] = {}
        deadline = time.monotonic() + timeout_s
        while len(outcome) < len(ids) and time.monotonic() < deadline:
            for job_id in ids:
                if job_id in outcome:
                    continue
                response = await client.get(f"/v1/plans/{job_id}")
                status = response.json()["status"] if response.status_code == 200 else "missing"
                if status not in ("queued", "running"):
                    outcome[job_id] = status
                    finished[job_id] = time.perf_counter() - started
            await asyncio.sleep(POLL_S)
        wall = time.perf_counter() - started
    done = [job_id for job_id, status in outcome.items() if status == "done"]
    failed = [job_id for job_id, status in outcome.items() if status in ("failed", "cancelled")]
    return {
        "jobs": count,
        "accepted": len(ids),
        "done": len(done),
        "failed": len(failed),
        "lost": len(ids) - len(done) - len(failed),
        "wall_s": round(wall, 3),
        "jobs_per_s": round(len(done) / wall, 2),
        **{
            f"done_{key}": value
            for key, value in _latencies([finished[j] for j in done]).items()
            if key != "max_ms"
        },
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "outcomes": {s: list(outcome.values()).count(s) for s in set(outcome.values())},
    }


async def mixed_phase(base: str, args: argparse.Namespace) -> dict[str, Any]:
    plans = asyncio.create_task(
        plan_phase(base, count=args.plans, offset=args.plans, timeout_s=args.plan_timeout)
    )
    await asyncio.sleep(1.0)  # the workers are busy by now
    estimates = await estimate_phase(base, count=args.estimates, concurrency=MIXED_CONCURRENCY)
    return {"estimate": estimates, "plan": await plans}


def run(args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="autopar-load-") as workdir,
        server(
            job_workers=args.job_workers, server_workers=args.server_workers, workdir=Path(workdir)
        ) as base,
    ):
        estimates = [
            asyncio.run(estimate_phase(base, count=args.estimates, concurrency=level))
            for level in args.concurrency
        ]
        plan = asyncio.run(
            plan_phase(base, count=args.plans, offset=0, timeout_s=args.plan_timeout)
        )
        mixed = asyncio.run(mixed_phase(base, args))
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "job_workers": args.job_workers,
        "server_workers": args.server_workers,
        "estimate": estimates,
        "plan": plan,
        "mixed_estimate": mixed["estimate"],
        "mixed_plan": mixed["plan"],
    }


def print_table(report: dict[str, Any]) -> None:
    print(
        f"REST service load, {report['cpus']} CPUs, {report['server_workers']} server "
        f"process(es) with {report['job_workers']} planning workers each"
    )
    print(
        f"{'phase':<16}{'n':>6}{'conc':>6}{'per s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'errors':>8}  p99 < {TARGET_P99_MS:g} ms"
    )
    rows = [(f"estimate@{row['concurrency']}", row) for row in report["estimate"]]
    rows.append((f"mixed@{MIXED_CONCURRENCY}", report["mixed_estimate"]))
    for name, row in rows:
        print(
            f"{name:<16}{row['requests']:>6}{row['concurrency']:>6}{row['throughput_per_s']:>9}"
            f"{row['p50_ms']:>9}{row['p99_ms']:>9}{row['max_ms']:>9}{row['errors']:>8}  "
            + ("yes" if row["p99_ms"] < TARGET_P99_MS else "no")
        )
    print(
        f"{'phase':<16}{'jobs':>6}{'done':>6}{'failed':>7}{'lost':>6}{'jobs/s':>8}"
        f"{'p50 s':>8}{'p99 s':>8}"
    )
    for name in ("plan", "mixed_plan"):
        row = report[name]
        print(
            f"{name:<16}{row['jobs']:>6}{row['done']:>6}{row['failed']:>7}{row['lost']:>6}"
            f"{row['jobs_per_s']:>8}{row['done_p50_ms'] / 1e3:>8.2f}"
            f"{row['done_p99_ms'] / 1e3:>8.2f}"
            + (f"  errors {row['error_kinds']}" if row["errors"] else "")
        )
    errors = sum(row["errors"] for _, row in rows) + sum(
        report[p]["errors"] + report[p]["failed"] for p in ("plan", "mixed_plan")
    )
    lost = report["plan"]["lost"] + report["mixed_plan"]["lost"]
    print(f"errors: {errors}, lost jobs: {lost}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimates", type=int, default=400)
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1, 16, 64, 256],
        help="comma-separated requests in flight, one estimate phase each",
    )
    parser.add_argument("--plans", type=int, default=20)
    parser.add_argument("--job-workers", type=int, default=2, help="per server process")
    parser.add_argument("--server-workers", type=int, default=1, help="uvicorn processes")
    parser.add_argument("--plan-timeout", type=float, default=300.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    report = run(args)
    print_table(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
