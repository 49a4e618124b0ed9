"""A real ``autopar serve`` process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(database_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    """``python -m planner serve`` on a free loopback port; stopped with SIGTERM on exit."""
    port = _free_port()
    log = (tmp_path / f"server-{port}.log").open("w")
    env = {**os.environ, "AUTOPAR_JOB_WORKERS": "1", "AUTOPAR_API_TOKEN": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "planner", "serve", "--port", str(port),
         "--database-url", database_url, "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )  # fmt: skip
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, (tmp_path / f"server-{port}.log").read_text()
            try:
                if client.get("/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield client
    finally:
        client.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
