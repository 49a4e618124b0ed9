"""Step calibrations (``cost.fit``) and parsed kernel profiles kept on disk between
processes, keyed by their inputs.

Fitting a GPU's launch overheads and device-time ratio to its measured training steps
(``rates.step_calibration``) times every measured step on a grid of values: about a
third of a second, at every start of ``autopar plan``. The fit is a pure function of the
committed data and the code that reads it, so its result is stored once and read back:

* **Key**: a SHA-256 of every file of the packages the fit reads or runs, with their
  paths: ``hardware_db`` (GPU entries, kernel profiles, measured steps), ``models_db``
  (the models the measured steps ran) and ``planner`` (the code: the graph, the work
  model, the fit itself), with the versions of Python, numpy and pydantic, and the GPU
  id. Any change to a measurement, a data file, the code or those libraries gives
  another key, so a stale fit is never read; the hash (about 8 MB) takes some 20-30 ms.
* **Value**: the ``StepCalibration``'s fields as JSON. Floats are written with ``repr``,
  which reads back to the same double, so a cached calibration equals a fresh one bit
  for bit (``tests/cost/test_fit_cache.py``).
* **Kernel profiles** (``profile_rates.find_profile``): reading and validating a GPU's
  profile files and building its interpolation tables takes about a sixth of a second;
  the built ``ProfileRates`` is pickled under the same key (``cached_object``). The cache
  folder is the user's own, written only by autopar; a file that does not unpickle is
  read again from the data.
* **Where**: ``AUTOPAR_CACHE_DIR``, else ``$XDG_CACHE_HOME/autopar``, else
  ``~/.cache/autopar``; one file per key under ``calibrations/`` and ``objects/``.
  ``AUTOPAR_CACHE_DIR`` set to ``off`` (or ``0``, ``none``) turns the cache off. A cache
  that cannot be read or written is ignored: the fit runs as without it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import sys
import tempfile
from collections.abc import Callable
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import TypeVar

from planner.cost.fit import StepCalibration

CACHE_DIR_ENV = "AUTOPAR_CACHE_DIR"
OFF_VALUES = ("off", "0", "none", "false")
KEYED_PACKAGES = ("hardware_db", "models_db", "planner")
"""The packages whose files the key hashes (data and code the fit depends on)."""
FORMAT = 1
"""Bumped when the stored layout changes."""
T = TypeVar("T")


def cache_dir() -> Path | None:
    """Where calibrations are kept, or None when the cache is turned off."""
    explicit = os.environ.get(CACHE_DIR_ENV, "").strip()
    if explicit.lower() in OFF_VALUES:
        return None
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "autopar"


@cache
def inputs_digest(packages: tuple[str, ...] = KEYED_PACKAGES) -> str | None:
    """SHA-256 of every file (path and bytes) of ``packages``; None when a package is not
    a folder on disk (then nothing is cached). Computed once per process."""
    digest = hashlib.sha256(f"format {FORMAT}; {_versions()}".encode())
    for package in packages:
        root = Path(str(files(package)))
        if not root.is_dir():
            return None
        for path in sorted(_data_files(root)):
            digest.update(f"\0{package}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _versions() -> str:
    """The interpreter and the numerical libraries the fit runs on (their float results
    may change between releases)."""
    import numpy
    import pydantic

    return f"python {sys.version}; numpy {numpy.__version__}; pydantic {pydantic.VERSION}"


def _data_files(root: Path) -> list[Path]:
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]


def cached_calibration(
    gpu_id: str, fit: Callable[[], StepCalibration | None]
) -> StepCalibration | None:
    """``fit()``, read from the cache when this GPU's calibration over the same inputs is
    stored there, else computed and stored (module docstring)."""
    folder, digest = cache_dir(), inputs_digest()
    if folder is None or digest is None:
        return fit()
    path = folder / "calibrations" / f"{gpu_id}-{digest[:32]}.json"
    stored = _read(path, gpu_id=gpu_id, digest=digest)
    if stored is not None:
        return stored
    calibration = fit()
    if calibration is not None:
        _write(path, gpu_id=gpu_id, digest=digest, calibration=calibration)
    return calibration


def cached_object(name: str, build: Callable[[], T]) -> T:
    """``build()``, pickled under ``name`` and the inputs' digest (module docstring)."""
    folder, digest = cache_dir(), inputs_digest()
    if folder is None or digest is None:
        return build()
    path = folder / "objects" / f"{name}-{digest[:32]}.pickle"
    try:
        with path.open("rb") as handle:
            stored = pickle.load(handle)
        if isinstance(stored, dict) and stored.get("digest") == digest:
            return stored["value"]
    except Exception:  # absent, truncated or of another layout: build it again
        pass
    value = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "wb", dir=path.parent, prefix=".tmp-", suffix=".pickle", delete=False
        ) as handle:
            pickle.dump({"digest": digest, "value": value}, handle)
        os.replace(handle.name, path)
    except (OSError, pickle.PicklingError):
        pass  # a read-only home or a full disk: the value is simply not kept
    return value


def _read(path: Path, *, gpu_id: str, digest: str) -> StepCalibration | None:
    try:
        record = json.loads(path.read_text())
        if record.get("digest") != digest or record.get("gpu") != gpu_id:
            return None
        return StepCalibration(**record["calibration"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None  # absent, unreadable or of another layout: fit again


def _write(path: Path, *, gpu_id: str, digest: str, calibration: StepCalibration) -> None:
    record = {"gpu": gpu_id, "digest": digest, "calibration": dataclasses.asdict(calibration)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # write aside and rename: a concurrent reader sees the whole file or none
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=".tmp-", suffix=".json", delete=False
        ) as handle:
            json.dump(record, handle)
        os.replace(handle.name, path)
    except OSError:
        return  # a read-only home or a full disk: the fit is simply not kept
