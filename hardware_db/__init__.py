"""Hardware data: GPUs, interconnects and cluster presets, each with its source.

One TOML file per record under ``gpus/``, ``interconnects/`` and ``clusters/``; measured
profiles written by ``autopar profile`` go under ``profiles/`` (see its README). Readers
return plain dicts checked against each folder's file schema (see ``_files``); units are
in the key names (``_gib`` binary GiB, ``_gbps`` gigabytes per second, ``_tflops`` dense
TFLOP/s, ``_us`` microseconds). This package imports nothing from the rest of autopar.

    >>> import hardware_db
    >>> hardware_db.read_gpu("h100-sxm")["peak_tflops"]["bf16"]
    989.4
"""

from __future__ import annotations

from importlib.resources.abc import Traversable
from typing import Any

from hardware_db._files import HardwareDataError, UnknownHardwareError, data_root, list_ids, read

__all__ = [
    "HardwareDataError",
    "UnknownHardwareError",
    "list_clusters",
    "list_gpus",
    "list_interconnects",
    "list_profiles",
    "profiles_dir",
    "read_cluster",
    "read_gpu",
    "read_interconnect",
]


def list_gpus() -> list[str]:
    """Sorted ids of the GPU data files (``a100-sxm-40gb``, ``h100-sxm``, ...)."""
    return list_ids("gpus")


def read_gpu(gpu_id: str) -> dict[str, Any]:
    """The raw record of GPU ``gpu_id``; raises UnknownHardwareError for an unknown id."""
    return read("gpus", gpu_id, what="GPU")


def list_interconnects() -> list[str]:
    """Sorted ids of the interconnect data files (``nvlink4``, ``ib-ndr``, ...)."""
    return list_ids("interconnects")


def read_interconnect(interconnect_id: str) -> dict[str, Any]:
    """The raw record of interconnect ``interconnect_id``; raises UnknownHardwareError."""
    return read("interconnects", interconnect_id, what="interconnect")


def list_clusters() -> list[str]:
    """Sorted ids of the cluster presets (``dgx-h100``, ...)."""
    return list_ids("clusters")


def read_cluster(cluster_id: str) -> dict[str, Any]:
    """The raw record of cluster preset ``cluster_id`` (refers to GPU and interconnect ids)."""
    return read("clusters", cluster_id, what="cluster")


def profiles_dir() -> Traversable:
    """The folder of measured profiles: ``profiles/<gpu-id>/<profile-id>/``."""
    return data_root() / "profiles"


def list_profiles(gpu_id: str) -> list[str]:
    """Sorted ids of the measured profiles stored for GPU ``gpu_id`` (empty if none)."""
    read_gpu(gpu_id)  # an unknown GPU is an error, not an empty list
    folder = profiles_dir() / gpu_id
    if not folder.is_dir():
        return []
    return sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.is_dir() and not entry.name.startswith(("_", "."))
    )
