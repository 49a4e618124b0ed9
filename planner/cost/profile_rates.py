"""Achieved rates from a measured kernel profile (``autopar profile``), by shape.

``find_profile(gpu_id)`` finds the profiles committed under
``hardware_db/profiles/<gpu_id>/<profile-id>/profile.json`` and returns a
:class:`ProfileRates` (None when the GPU has none); ``ProfileRates.of(load_profile(path))``
reads any file. Where several profiles of one GPU exist (a one-GPU kernel run, a two-GPU
collectives run, an optimizer-step run), each section (GEMM, attention, memory,
collectives, optimizer, host) comes from the
newest profile (by ``provenance.date_utc``) that measured it.

How each rate is interpolated (all in log space, so rates stay positive and a power law
is reproduced exactly):

* GEMM FLOP/s for (m, n, k, dtype). First, measured *lines*: rows that share two of the
  three dimensions (a model's weight shape at several token counts: m varies for the
  forward and input-gradient products, k for the weight gradient). If the query lies on
  such a line, inside its measured range, log FLOP/s is interpolated linearly in the
  log of the varying dimension (at a measured shape this is the measurement itself; the
  geometric mean where one shape was measured twice, e.g. on the grid and as a model
  shape).
  Otherwise, multilinear interpolation in (log2 m, log2 n, log2 k) over the power-of-two
  grid (``role = grid``), each coordinate first clamped to the grid's range (nearest
  edge: a dimension beyond the grid gets the rate at its edge).
* Attention forward and backward FLOP/s (the cost model's FLOP convention, see
  ``profile_schema``) for (seq_len, heads, kv_heads, head_dim, causal, dtype, batch):
  multilinear interpolation in (log2 seq_len, log2 batch·heads, log2 heads/kv_heads,
  log2 head_dim), per dtype and causal, with the same edge clamping.
* Memory bandwidth by bytes moved, per op (copy, add): linear in log2 bytes, clamped.
* Collective time by op, group size and size S: log time linear in log2 S between
  measured sizes; below the smallest size the smallest size's time (latency floor); above
  the largest, the largest size's bandwidth (time proportional to S).
* Optimizer step (AdamW) by implementation and dtype, linear in what it covers: device
  time = parameters x the fewest seconds per parameter of any set measured (the
  streaming rate: small sets, and the per-tensor loop over middling tensors, wait on the
  host's launches instead); host time = tensors x a + parameters x b, with a the host
  time per tensor of the set with the most tensors per parameter (many small tensors:
  the per-tensor issue cost) and b what the set with the fewest tensors per parameter
  leaves per parameter after that (multi-tensor kernels launch once per chunk of a list,
  so very large sets cost the host more; never below zero).
* Host (optimizer offload): the device-to-host and host-to-device bandwidth of the
  largest pinned copy measured, and the CPU AdamW step's seconds per parameter at the
  largest set measured: offloaded steps are far larger than both, so their streaming
  rates apply.
In a multilinear cell, corners that were not measured (skipped points, holes of the
attention grid where a kv group exceeds the heads) are left out and the others' weights
renormalised; if none was measured, the nearest measured point (log-space distance) is
used. A query the profile has no data for (a dtype, a causal mode, a collective or group
size never measured) raises :class:`ProfileGapError`; ``has_*`` ask first.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path

import numpy as np
from pydantic import ValidationError

import hardware_db
from planner.cost.profile_schema import (
    AttentionRow,
    GemmRow,
    HostRow,
    KernelProfile,
    OptimizerRow,
)
from planner.errors import AutoparError

PROFILE_FILE = "profile.json"
SECTIONS = ("gemm", "attention", "memory", "collectives", "optimizer", "host")
_EXACT = 1e-9
LOOKUP_CACHE = 1 << 16


class ProfileDataError(AutoparError):
    """A profile file that cannot be read or breaks the schema; the message names the file."""


class ProfileGapError(AutoparError, LookupError):
    """The profile holds no measurement for what was asked (check ``has_*`` first)."""


@dataclass(frozen=True)
class Lookup:
    """An interpolated value and how it was obtained (for ``autopar estimate`` to report)."""

    value: float
    method: str


@dataclass(frozen=True)
class AttentionRates:
    forward_flops_per_s: float
    backward_flops_per_s: float
    method: str


@dataclass(frozen=True)
class OptimizerRates:
    """One AdamW implementation and dtype as measured (see the module docstring)."""

    device_s_per_param: float
    host_s_per_tensor: float
    host_s_per_param: float

    @classmethod
    def of(cls, rows: Sequence[OptimizerRow]) -> OptimizerRates:
        many = max(rows, key=lambda r: r.tensors / r.elements)
        few = min(rows, key=lambda r: r.tensors / r.elements)
        per_tensor = many.host.median_s / many.tensors
        leftover = few.host.median_s - per_tensor * few.tensors
        return cls(
            device_s_per_param=min(r.time.median_s / r.elements for r in rows),
            host_s_per_tensor=per_tensor,
            host_s_per_param=max(0.0, leftover / few.elements),
        )

    def device_s(self, params: float) -> float:
        return params * self.device_s_per_param

    def host_s(self, tensors: int, params: float) -> float:
        return tensors * self.host_s_per_tensor + params * self.host_s_per_param


@dataclass(frozen=True)
class HostRates:
    """The host link and the CPU optimizer as measured (see the module docstring)."""

    d2h_bytes_per_s: float
    h2d_bytes_per_s: float
    cpu_adamw_s_per_param: float

    @classmethod
    def of(cls, rows: Sequence[HostRow]) -> HostRates:
        def largest(op: str) -> HostRow:
            return max((r for r in rows if r.op == op), key=lambda r: r.elements)

        d2h, h2d, step = largest("d2h"), largest("h2d"), largest("cpu_adamw")
        return cls(
            d2h_bytes_per_s=d2h.bytes / d2h.time.median_s,
            h2d_bytes_per_s=h2d.bytes / h2d.time.median_s,
            cpu_adamw_s_per_param=step.time.median_s / step.elements,
        )


def load_profile(path: Path | Traversable) -> KernelProfile:
    """Read and validate one profile file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ProfileDataError(f"profile {path}: cannot read: {error}") from None
    except json.JSONDecodeError as error:
        raise ProfileDataError(f"profile {path}: invalid JSON: {error.msg}") from None
    try:
        return KernelProfile.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ProfileDataError(f"profile {path}: {where}: {first['msg']}") from None


def _log2(value: float) -> float:
    return math.log2(value)


def _mean(values: list[float]) -> float:
    """``float(np.mean(values))``, without numpy's per-call overhead for the common single
    measurement (whose mean is the value itself, as numpy computes it: v / 1 = v)."""
    if len(values) == 1:
        return float(values[0])
    return float(np.mean(values))


class _Grid:
    """Values on a rectilinear grid in log space (NaN where not measured)."""

    def __init__(self, points: Sequence[tuple[float, ...]], values: Sequence[float]) -> None:
        sums: dict[tuple[float, ...], list[float]] = defaultdict(list)
        for point, value in zip(points, values, strict=True):
            sums[point].append(value)
        dims = len(points[0])
        self.axes = [np.array(sorted({p[d] for p in sums})) for d in range(dims)]
        self.values = np.full([len(axis) for axis in self.axes], np.nan)
        for point, group in sums.items():
            index = tuple(int(np.searchsorted(self.axes[d], point[d])) for d in range(dims))
            self.values[index] = _mean(group)
        self.points = np.array(list(sums))
        self.point_values = np.array([_mean(g) for g in sums.values()])

    def __call__(self, query: Sequence[float]) -> tuple[float, bool]:
        """Interpolated value at ``query`` and whether any coordinate was clamped."""
        brackets, clamped = [], False
        for axis, x in zip(self.axes, query, strict=True):
            inside = min(max(x, axis[0]), axis[-1])
            clamped |= abs(inside - x) > _EXACT
            high = int(np.searchsorted(axis, inside - _EXACT))  # first axis[i] >= inside
            if abs(axis[high] - inside) < _EXACT:
                brackets.append(((high, 1.0),))
                continue
            low = high - 1
            t = (inside - axis[low]) / (axis[high] - axis[low])
            brackets.append(((low, 1.0 - t), (high, t)))
        total = weight_sum = 0.0
        for corner in itertools.product(*brackets):
            weight = math.prod(w for _, w in corner)
            value = self.values[tuple(i for i, _ in corner)]
            if weight > 0 and not np.isnan(value):
                total += weight * value
                weight_sum += weight
        if weight_sum > _EXACT:
            return total / weight_sum, clamped
        nearest = int(np.argmin(((self.points - np.array(query)) ** 2).sum(axis=1)))
        return float(self.point_values[nearest]), True


def _line_value(xs: np.ndarray, ys: np.ndarray, x: float) -> float | None:
    if x < xs[0] - _EXACT or x > xs[-1] + _EXACT:
        return None
    return float(np.interp(x, xs, ys))


def _lines(rows: Iterable[GemmRow]) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    """GEMM rows grouped into lines: (dtype, varying axis, the two fixed dims) -> (x, y)."""
    raw: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        dims = (row.m, row.n, row.k)
        for axis in range(3):
            fixed = tuple(d for i, d in enumerate(dims) if i != axis)
            raw[(row.dtype, axis, fixed)][_log2(dims[axis])].append(math.log(row.flops_per_s))
    lines = {}
    for key, points in raw.items():
        xs = np.array(sorted(points))
        lines[key] = (xs, np.array([_mean(points[x]) for x in xs]))
    return lines


@dataclass(frozen=True)
class _Sources:
    """Which file each section came from."""

    by_section: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        files = sorted(set(self.by_section.values()))
        return "; ".join(
            f"{', '.join(s for s in SECTIONS if self.by_section.get(s) == f)} from {f}"
            for f in files
        )


class ProfileRates:
    """Rates read from one or more kernel profiles of one GPU (see the module docstring)."""

    def __init__(self, sections: dict[str, tuple[str, KernelProfile]]) -> None:
        self.sources = _Sources({name: source for name, (source, _) in sections.items()})
        self.profiles = {name: profile for name, (_, profile) in sections.items()}
        gemm = self._rows("gemm")
        attention = self._rows("attention")
        self._gemm_lines = _lines(gemm)
        self._gemm_grids = {
            dtype: self._gemm_grid([r for r in gemm if r.dtype == dtype])
            for dtype in {r.dtype for r in gemm}
        }
        self._attention = {
            key: self._attention_grids([r for r in attention if (r.dtype, r.causal) == key])
            for key in {(r.dtype, r.causal) for r in attention}
        }
        self._memory = self._curves(
            self._rows("memory"), key=lambda r: (r.op, r.dtype), y=lambda r: r.bytes_per_s
        )
        self._memoise()
        self._optimizer = {
            key: OptimizerRates.of(
                [r for r in self._rows("optimizer") if (r.implementation, r.dtype) == key]
            )
            for key in {(r.implementation, r.dtype) for r in self._rows("optimizer")}
        }
        host = self._rows("host")
        self._host = (
            HostRates.of(host) if {r.op for r in host} >= {"d2h", "h2d", "cpu_adamw"} else None
        )
        self._collectives = self._curves(
            self._rows("collectives"),
            key=lambda r: (r.op, r.group_size, r.scope),
            y=lambda r: r.time.median_s,
        )

    def _memoise(self) -> None:
        # the time model asks for the same shapes over and over: memoise per instance
        memo = functools.lru_cache(maxsize=LOOKUP_CACHE)
        self.gemm = memo(self.gemm)  # type: ignore[method-assign]
        self.attention = memo(self.attention)  # type: ignore[method-assign]

    def __getstate__(self) -> dict:
        """What is pickled (``cost.fit_cache``): the tables, not the per-instance memos."""
        state = dict(self.__dict__)
        state.pop("gemm", None)
        state.pop("attention", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._memoise()

    @classmethod
    def of(cls, profile: KernelProfile, *, source: str = "profile") -> ProfileRates:
        """Rates of a single profile."""
        return cls({name: (source, profile) for name in SECTIONS if getattr(profile, name)})

    @classmethod
    def merged(cls, profiles: Sequence[tuple[str, KernelProfile]]) -> ProfileRates:
        """Each section from the newest profile that measured it."""
        newest_first = sorted(profiles, key=lambda sp: sp[1].provenance.date_utc, reverse=True)
        sections = {}
        for name in SECTIONS:
            for source, profile in newest_first:
                if getattr(profile, name):
                    sections[name] = (source, profile)
                    break
        return cls(sections)

    @property
    def source(self) -> str:
        return "measured profile: " + self.sources.describe()

    def _rows(self, section: str) -> tuple:
        profile = self.profiles.get(section)
        return getattr(profile, section) if profile is not None else ()

    # -- GEMM ---------------------------------------------------------------------------

    @staticmethod
    def _gemm_grid(rows: list[GemmRow]) -> _Grid:
        grid_rows = [r for r in rows if r.role == "grid"] or rows
        return _Grid(
            [(_log2(r.m), _log2(r.n), _log2(r.k)) for r in grid_rows],
            [math.log(r.flops_per_s) for r in grid_rows],
        )

    def gemm_dtypes(self) -> frozenset[str]:
        return frozenset(self._gemm_grids)

    def has_gemm(self, dtype: str) -> bool:
        return dtype in self._gemm_grids

    def gemm(self, m: float, n: float, k: float, dtype: str = "bf16") -> Lookup:
        """Achieved FLOP/s of an (m x k)·(k x n) product in ``dtype``, and the method used."""
        if min(m, n, k) <= 0:
            raise ValueError(f"gemm dimensions must be positive, got m={m} n={n} k={k}")
        if dtype not in self._gemm_grids:
            raise ProfileGapError(
                f"the profile has no {dtype} GEMMs (measured: "
                + (", ".join(sorted(self._gemm_grids)) or "none")
                + ")"
            )
        dims = (m, n, k)
        found, exact = [], False
        for axis in range(3):
            fixed = tuple(d for i, d in enumerate(dims) if i != axis)
            line = self._gemm_lines.get((dtype, axis, fixed))
            if line is None:
                continue
            x = _log2(dims[axis])
            value = _line_value(*line, x)
            if value is not None:
                found.append((value, "mnk"[axis]))
                exact |= bool(np.any(np.abs(line[0] - x) < _EXACT))
        if found:
            method = "measured shape" if exact else f"measured line along {found[0][1]}"
            return Lookup(math.exp(float(np.mean([v for v, _ in found]))), method)
        value, clamped = self._gemm_grids[dtype]((_log2(m), _log2(n), _log2(k)))
        return Lookup(math.exp(value), "grid (clamped at its edge)" if clamped else "grid")

    def gemm_flops(self, m: float, n: float, k: float, dtype: str = "bf16") -> float:
        return self.gemm(m, n, k, dtype).value

    def gemm_grid_error(self, dtype: str = "bf16") -> tuple[float, int] | None:
        """Mean absolute % error of the grid alone on the model-shape rows (held out), and n.

        The model shapes are not grid points, so this is the error the grid makes on shapes
        it did not see: the error to expect for a model whose shapes were not measured.
        """
        grid = self._gemm_grids.get(dtype)
        rows = [r for r in self._rows("gemm") if r.dtype == dtype and r.role != "grid"]
        if grid is None or not rows:
            return None
        errors = [
            abs(math.exp(grid((_log2(r.m), _log2(r.n), _log2(r.k)))[0]) / r.flops_per_s - 1)
            for r in rows
        ]
        return 100 * float(np.mean(errors)), len(rows)

    # -- attention ------------------------------------------------------------------------

    @staticmethod
    def _attention_grids(rows: list[AttentionRow]) -> tuple[_Grid, _Grid]:
        points = [
            (
                _log2(r.seq_len),
                _log2(r.batch * r.heads),
                _log2(r.heads // r.kv_heads),
                _log2(r.head_dim),
            )
            for r in rows
        ]
        forward = _Grid(points, [math.log(r.forward_flops / r.forward.median_s) for r in rows])
        backward = _Grid(points, [math.log(r.backward_flops / r.backward.median_s) for r in rows])
        return forward, backward

    def has_attention(self, dtype: str = "bf16", *, causal: bool = True) -> bool:
        return (dtype, causal) in self._attention

    def attention(
        self,
        *,
        seq_len: float,
        heads: float,
        kv_heads: float,
        head_dim: float,
        causal: bool = True,
        dtype: str = "bf16",
        batch: float = 1,
    ) -> AttentionRates:
        """Achieved forward and backward FLOP/s of fused attention for this layout."""
        if min(seq_len, heads, kv_heads, head_dim, batch) <= 0 or kv_heads > heads:
            raise ValueError(
                f"attention layout must be positive with kv_heads <= heads, got seq_len="
                f"{seq_len} heads={heads} kv_heads={kv_heads} head_dim={head_dim} batch={batch}"
            )
        grids = self._attention.get((dtype, causal))
        if grids is None:
            raise ProfileGapError(
                f"the profile has no {'causal' if causal else 'non-causal'} {dtype} attention"
            )
        query = (_log2(seq_len), _log2(batch * heads), _log2(heads / kv_heads), _log2(head_dim))
        forward, clamped_f = grids[0](query)
        backward, clamped_b = grids[1](query)
        method = "grid (clamped at its edge)" if clamped_f or clamped_b else "grid"
        return AttentionRates(math.exp(forward), math.exp(backward), method)

    # -- memory and collectives -----------------------------------------------------------

    @staticmethod
    def _curves(rows, *, key, y) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
        grouped: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
        for row in rows:
            grouped[key(row)][_log2(row.bytes)].append(math.log(y(row)))
        return {
            name: (np.array(sorted(p)), np.array([_mean(p[x]) for x in sorted(p)]))
            for name, p in grouped.items()
        }

    def has_memory(self, op: str = "copy", dtype: str = "bf16") -> bool:
        return (op, dtype) in self._memory

    def memory_bandwidth(self, nbytes: float, op: str = "copy", dtype: str = "bf16") -> float:
        """Achieved bytes/s (read + written) of an element-wise kernel moving ``nbytes``."""
        curve = self._memory.get((op, dtype))
        if curve is None:
            raise ProfileGapError(f"the profile has no {dtype} {op} bandwidth")
        if nbytes <= 0:
            raise ValueError(f"bytes must be positive, got {nbytes}")
        xs, ys = curve
        return math.exp(float(np.interp(_log2(nbytes), xs, ys)))

    def has_optimizer(self, implementation: str, dtype: str) -> bool:
        return (implementation, dtype) in self._optimizer

    def optimizer(self, implementation: str, dtype: str) -> OptimizerRates:
        """The measured AdamW step of ``implementation`` with its tensors in ``dtype``."""
        rates = self._optimizer.get((implementation, dtype))
        if rates is None:
            raise ProfileGapError(f"the profile has no {implementation} {dtype} optimizer step")
        return rates

    def host(self) -> HostRates:
        """The measured host link and CPU optimizer step (optimizer offload)."""
        if self._host is None:
            raise ProfileGapError("the profile has no host section (d2h, h2d, cpu_adamw)")
        return self._host

    def has_host(self) -> bool:
        return self._host is not None

    def collective_group_sizes(self, op: str, scope: str = "intra_node") -> list[int]:
        return sorted(g for o, g, s in self._collectives if (o, s) == (op, scope))

    def has_collective(self, op: str, group_size: int, scope: str = "intra_node") -> bool:
        return (op, group_size, scope) in self._collectives

    def collective_time(
        self, op: str, group_size: int, nbytes: float, scope: str = "intra_node"
    ) -> float:
        """Seconds for collective ``op`` of size ``nbytes`` over ``group_size`` ranks."""
        curve = self._collectives.get((op, group_size, scope))
        if curve is None:
            raise ProfileGapError(
                f"the profile has no {scope} {op} over {group_size} ranks (measured group "
                f"sizes: {self.collective_group_sizes(op, scope) or 'none'})"
            )
        if nbytes <= 0:
            raise ValueError(f"bytes must be positive, got {nbytes}")
        xs, ys = curve
        x = _log2(nbytes)
        if x > xs[-1]:  # beyond the largest size: its bandwidth
            return math.exp(ys[-1]) * 2 ** (x - xs[-1])
        return math.exp(float(np.interp(x, xs, ys)))  # below the smallest: its time


def profiles_in(folder: Path | Traversable, gpu_id: str) -> list[tuple[str, KernelProfile]]:
    """Every ``<folder>/<gpu_id>/<profile-id>/profile.json`` with its relative path."""
    gpu_folder = folder / gpu_id
    if not gpu_folder.is_dir():
        return []
    found = []
    for entry in sorted(gpu_folder.iterdir(), key=lambda e: e.name):
        path = entry / PROFILE_FILE
        if not entry.is_dir() or entry.name.startswith(("_", ".")) or not path.is_file():
            continue
        profile = load_profile(path)
        where = f"profiles/{gpu_id}/{entry.name}/{PROFILE_FILE}"
        if profile.provenance.gpu_id != gpu_id:
            raise ProfileDataError(
                f"{where}: provenance.gpu_id is {profile.provenance.gpu_id!r} but the file is "
                f"filed under {gpu_id!r}"
            )
        found.append((where, profile))
    return found


@functools.cache
def find_profile(gpu_id: str) -> ProfileRates | None:
    """The committed kernel profiles of ``gpu_id`` (a ``hardware_db`` id), merged; or None.

    Parsed once and kept on disk between processes, keyed by a hash of the data and the
    code (``cost.fit_cache``)."""
    from planner.cost.fit_cache import cached_object  # it imports the fit, which imports us

    hardware_db.read_gpu(gpu_id)  # an unknown id is an error, not "no profile"
    return cached_object(f"profile-{gpu_id}", lambda: read_profiles(gpu_id))


def read_profiles(gpu_id: str) -> ProfileRates | None:
    """``find_profile`` read from the files (no cache)."""
    found = profiles_in(hardware_db.profiles_dir(), gpu_id)
    return ProfileRates.merged(found) if found else None
