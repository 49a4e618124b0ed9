"""Where and with what a profile is measured: GPU, driver, CUDA, torch and NCCL versions.

``gpu_id_for(name)`` maps the name the driver reports (``torch.cuda.get_device_name``)
to a ``hardware_db`` GPU id, so a profile can be filed under
``hardware_db/profiles/<gpu_id>/``. The names are the ones NVIDIA's driver and AMD's ROCm
report for these boards (e.g. ``NVIDIA H100 80GB HBM3``, as recorded in our own
measurement under ``hardware_db/profiles/h100-sxm``; the SXM boards carry HBM in the
name, the PCIe boards ``PCIe``). An unknown name gives None and the user passes
``--gpu-id``.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import socket
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from planner.cost.profile_schema import Provenance

# (pattern on the reported name, hardware_db id); the first match wins.
GPU_NAMES: tuple[tuple[str, str], ...] = (
    (r"H100.*PCIe", "h100-pcie"),
    (r"H100", "h100-sxm"),
    (r"H200", "h200-sxm"),
    (r"A100.*PCIe", "a100-pcie-80gb"),
    (r"A100.*(40GB|SXM4-40)", "a100-sxm-40gb"),
    (r"A100", "a100-sxm-80gb"),
    (r"B200", "b200"),
    (r"L40S", "l40s"),
    (r"RTX 4090", "rtx-4090"),
    (r"MI300X", "mi300x"),
    (r"MI250X", "mi250x"),
)


def gpu_id_for(name: str | None) -> str | None:
    """The ``hardware_db`` id of a GPU by the name its driver reports (None if unknown)."""
    if not name:
        return None
    for pattern, gpu_id in GPU_NAMES:
        if re.search(pattern, name):
            return gpu_id
    return None


def _command_output(args: list[str]) -> str | None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _nccl_version(torch: Any) -> str | None:
    try:
        found = torch.cuda.nccl.version()
    except (AttributeError, RuntimeError):
        return None
    return ".".join(map(str, found)) if isinstance(found, tuple) else str(found)


def _autopar_version() -> str:
    try:
        return version("autopar")
    except PackageNotFoundError:
        return "unknown (not installed)"


def collect(torch: Any, device: Any, *, gpu_id: str | None, world_size: int) -> Provenance:
    """Provenance of a run on ``device`` (``gpu_id`` overrides the name-based guess)."""
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else None
    props = torch.cuda.get_device_properties(device) if cuda else None
    driver = None
    if cuda:
        smi = _command_output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        driver = smi.splitlines()[0].strip() if smi else None
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    here = Path(__file__).resolve().parent
    return Provenance(
        device="cuda" if cuda else "cpu",
        gpu_id=gpu_id or gpu_id_for(name),
        gpu_name=name,
        gpu_count=torch.cuda.device_count() if cuda else 0,
        world_size=world_size,
        nodes=max(1, world_size // max(local, 1)),
        gpu_total_memory_bytes=props.total_memory if props else None,
        compute_capability=f"{props.major}.{props.minor}" if props else None,
        driver=driver,
        cuda=torch.version.cuda,
        torch=torch.__version__,
        nccl=_nccl_version(torch) if cuda else None,
        python=platform.python_version(),
        hostname=socket.gethostname(),
        date_utc=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        command=tuple(sys.argv),
        autopar_version=_autopar_version(),
        git_commit=_command_output(["git", "-C", str(here), "rev-parse", "HEAD"]),
    )
