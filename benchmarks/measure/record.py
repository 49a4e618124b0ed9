"""Provenance, memory readings and the JSON-lines output of the measuring script.

Memory values are bytes from PyTorch's caching allocator (``torch.cuda.memory_*``);
they are None on CPU, where nothing is measured. Times are seconds.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
import socket
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

SCHEMA = 1
HERE = Path(__file__).resolve().parent


def _command_output(args: list[str]) -> str | None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def code_sha256() -> str:
    """Hash of this folder's Python files, so a record names the code that made it."""
    digest = hashlib.sha256()
    for path in sorted(HERE.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def provenance(device: torch.device, world_size: int) -> dict[str, Any]:
    cuda = device.type == "cuda"
    driver = None
    if cuda:
        smi = _command_output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        driver = smi.splitlines()[0].strip() if smi else None
    nccl = None
    if cuda and hasattr(torch.cuda, "nccl"):
        try:
            version = torch.cuda.nccl.version()
            nccl = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        except (RuntimeError, AttributeError):
            nccl = None
    props = torch.cuda.get_device_properties(device) if cuda else None
    return {
        "gpu_name": torch.cuda.get_device_name(device) if cuda else None,
        "gpu_count": world_size if cuda else 0,
        "gpu_total_memory_bytes": props.total_memory if props else None,
        "gpus_visible": torch.cuda.device_count() if cuda else 0,
        "driver": driver,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "nccl": nccl,
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": list(sys.argv),
        "code_sha256": code_sha256(),
        "git_commit": _command_output(["git", "-C", str(HERE), "rev-parse", "HEAD"]),
    }


def allocated(device: torch.device) -> int | None:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peaks(device: torch.device) -> dict[str, int | None]:
    """Peak allocated/reserved since the last reset, and the allocator's retries so far."""
    if device.type != "cuda":
        return {"peak_allocated": None, "peak_reserved": None, "alloc_retries": None}
    stats = torch.cuda.memory_stats(device)
    return {
        "peak_allocated": torch.cuda.max_memory_allocated(device),
        "peak_reserved": torch.cuda.max_memory_reserved(device),
        "alloc_retries": stats.get("num_alloc_retries", 0),
    }


def outside_allocator(device: torch.device) -> dict[str, int | None]:
    """Device memory in use (``cudaMemGetInfo``) and the part PyTorch's allocator does not hold.

    The difference is the CUDA context, library handles and workspaces, and NCCL's
    buffers: memory a training step needs that ``max_memory_allocated`` never shows.
    """
    if device.type != "cuda":
        return {"device_used_bytes": None, "non_allocator_bytes": None}
    free, total = torch.cuda.mem_get_info(device)
    used = total - free
    return {
        "device_used_bytes": used,
        "non_allocator_bytes": used - torch.cuda.memory_reserved(device),
    }


def release_cached(device: torch.device) -> None:
    """Return cached blocks to the driver, cuBLAS workspaces included.

    torch keeps each cuBLAS handle's workspace (64 MiB seen on an H100) in the caching
    allocator for the life of the process; clearing it makes every run of a sweep start
    from zero allocated bytes, like a fresh process.
    """
    if device.type != "cuda":
        return
    clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear_workspaces is not None:
        clear_workspaces()
    torch.cuda.empty_cache()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_summary(step_s: list[float], tokens_per_step: int) -> dict[str, Any]:
    if not step_s:
        return {
            "step_s": [],
            "median_s": None,
            "min_s": None,
            "max_s": None,
            "tokens_per_step": tokens_per_step,
            "tokens_per_s": None,
        }
    median = statistics.median(step_s)
    return {
        "step_s": step_s,
        "median_s": median,
        "min_s": min(step_s),
        "max_s": max(step_s),
        "tokens_per_step": tokens_per_step,
        "tokens_per_s": tokens_per_step / median,
    }


def append_record(path: str, record: dict[str, Any]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
