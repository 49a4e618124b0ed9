"""Measured speed of each fused attention backend relative to FlashAttention-2.

PyTorch's ``scaled_dot_product_attention`` dispatches to one of several kernels; on
Hopper with torch 2.11 it picks cuDNN's fused attention for bf16 causal attention with
head size 128, which runs the same problem about twice as fast as FlashAttention-2 at
long sequences (measured). The GPU's kernel profile (``autopar profile``) times
FlashAttention-2 over a grid of shapes; ``benchmarks/measure/attention_backends.py`` times
every backend on a smaller grid in one run and stores it as
``hardware_db/profiles/<gpu>/<id>/attention.json``. A backend's rate for a shape is the
profile's FlashAttention-2 rate times that backend's measured FLOP/s over
FlashAttention-2's at the same shape in the same run, interpolated in log space over
sequence length and batch x heads (clamped at the measured edges): the ratio carries what
differs between the kernels, the full profile grid what depends on the shape.
"""

from __future__ import annotations

import json
import math
from functools import cache

import hardware_db
from planner.cost.compute import AttentionShape
from planner.cost.profile_rates import _Grid
from planner.cost.profile_schema import AttentionRow

BACKENDS_FILE = "attention.json"
REFERENCE_BACKEND = "flash"


@cache
def backend_rows(gpu_id: str) -> tuple[AttentionRow, ...]:
    """Every attention row of ``gpu_id``'s backend comparison files (newest last)."""
    rows: list[AttentionRow] = []
    for profile in hardware_db.list_profiles(gpu_id):
        path = hardware_db.profiles_dir() / gpu_id / profile / BACKENDS_FILE
        if path.is_file():
            record = json.loads(path.read_text())
            rows.extend(AttentionRow.model_validate(row) for row in record["attention"])
    return tuple(rows)


def _key(row: AttentionRow) -> tuple:
    return (row.batch, row.seq_len, row.heads, row.kv_heads, row.head_dim, row.causal)


class BackendSpeedups:
    """Each measured backend's FLOP/s over FlashAttention-2's, from one GPU's comparison
    rows (``backend_rows``): a pure function of the rows it is given."""

    def __init__(self, rows: tuple[AttentionRow, ...]) -> None:
        self.rows = rows
        self._grids: dict[str, tuple[_Grid, _Grid] | None] = {}

    def _ratio_grids(self, backend: str) -> tuple[_Grid, _Grid] | None:
        if backend in self._grids:
            return self._grids[backend]
        rows = self.rows
        reference = {_key(r): r for r in rows if r.backend == REFERENCE_BACKEND}
        pairs = [
            (r, reference[_key(r)]) for r in rows if r.backend == backend and _key(r) in reference
        ]
        grids = None
        if pairs:
            points = [(math.log2(r.seq_len), math.log2(r.batch * r.heads)) for r, _ in pairs]
            # FLOPs are equal within a pair: the FLOP/s ratio is the inverse time ratio
            forward = [math.log(ref.forward.median_s / r.forward.median_s) for r, ref in pairs]
            backward = [math.log(ref.backward.median_s / r.backward.median_s) for r, ref in pairs]
            grids = _Grid(points, forward), _Grid(points, backward)
        self._grids[backend] = grids
        return grids

    def speedup(self, shape: AttentionShape) -> float | None:
        """``shape.backend``'s FLOP/s over FlashAttention-2's at ``shape`` (1.0 for
        FlashAttention-2 itself; None where that backend was never measured)."""
        if shape.backend == REFERENCE_BACKEND:
            return 1.0
        grids = self._ratio_grids(shape.backend)
        if grids is None:
            return None
        query = (math.log2(shape.seq_len), math.log2(max(shape.batch * shape.heads, 1e-9)))
        value, _clamped = grids[1 if shape.backward else 0](query)
        return math.exp(value)


@cache
def backend_speedups(gpu_id: str) -> BackendSpeedups:
    """``gpu_id``'s measured backend ratios (its files read once per process)."""
    return BackendSpeedups(backend_rows(gpu_id))


def backend_speedup(gpu_id: str, shape: AttentionShape) -> float | None:
    """``shape.backend``'s FLOP/s over FlashAttention-2's at ``shape`` on ``gpu_id``
    (1.0 for FlashAttention-2 itself; None where that backend was never measured)."""
    return backend_speedups(gpu_id).speedup(shape)


def measured_backends(gpu_id: str) -> list[str]:
    """Backends with a measured ratio on ``gpu_id``."""
    return sorted({r.backend for r in backend_rows(gpu_id)} - {REFERENCE_BACKEND})
