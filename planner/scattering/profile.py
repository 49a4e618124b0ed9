"""Measured variable-length attention: load the profile, fit ``alpha1 s^2 + alpha2 s``.

A varlen-attention profile (``hardware_db/profiles/<gpu>/<id>/varlen_attention.json``,
written by ``benchmarks/measure/varlen_attention.py``) holds, per head shape (query heads,
key/value heads, head dimension), the forward + backward time of one attention layer over
a pack of equal documents (document masking: each attends only within itself), by
document length. The time of one document of s tokens is the pack's time over its
documents. Fitted here, and only here, by least squares without intercept on the
even-indexed lengths (ascending); the odd-indexed ones are held out and their mean
absolute relative error reported with the fit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

import hardware_db
from planner.specs.model import ModelSpec

PROFILE_FILE = "varlen_attention.json"


@dataclass(frozen=True)
class AttentionFit:
    """One head shape's per-document, per-layer attention time on one GPU."""

    q_heads: int
    kv_heads: int
    head_dim: int
    alpha1_s: float
    """Seconds per token^2 (forward + backward of one layer's attention, one GPU)."""
    alpha2_s: float
    heldout_error: float
    """Mean |predicted - measured| / measured on the held-out (odd-indexed) lengths."""
    fit_lengths: tuple[int, ...]
    heldout_lengths: tuple[int, ...]
    api: str
    source: str

    def predict_s(self, length: int) -> float:
        return self.alpha1_s * length * length + self.alpha2_s * length


def fit_alphas(
    lengths: list[int], seconds: list[float]
) -> tuple[float, float, float, tuple[int, ...], tuple[int, ...]]:
    """(alpha1, alpha2, held-out error, fit lengths, held-out lengths) (module docstring)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    fit = order[0::2]
    held = order[1::2]
    x = np.array([lengths[i] for i in fit], dtype=float)
    y = np.array([seconds[i] for i in fit], dtype=float)
    (alpha1, alpha2), *_ = np.linalg.lstsq(np.stack([x**2, x], axis=1), y, rcond=None)
    errors = [
        abs(alpha1 * lengths[i] ** 2 + alpha2 * lengths[i] - seconds[i]) / seconds[i] for i in held
    ]
    return (
        float(alpha1),
        float(alpha2),
        float(np.mean(errors)) if errors else float("nan"),
        tuple(lengths[i] for i in fit),
        tuple(lengths[i] for i in held),
    )


@lru_cache(maxsize=16)
def load_fits(gpu_id: str) -> tuple[AttentionFit, ...]:
    """Every head shape of the newest varlen-attention profile of ``gpu_id`` (or none)."""
    try:
        profiles = hardware_db.list_profiles(gpu_id)
    except Exception:  # an unknown GPU has no profile
        return ()
    folder = hardware_db.profiles_dir() / gpu_id
    found = [p for p in profiles if (folder / p / PROFILE_FILE).is_file()]
    if not found:
        return ()
    newest = found[-1]
    data = json.loads((folder / newest / PROFILE_FILE).read_text())
    fits = []
    for shape in data["shapes"]:
        points = shape["points"]
        lengths = [int(p["seq_len"]) for p in points]
        seconds = [float(p["median_s"]) / int(p["docs"]) for p in points]
        alpha1, alpha2, error, fit, held = fit_alphas(lengths, seconds)
        fits.append(
            AttentionFit(
                q_heads=int(shape["q_heads"]),
                kv_heads=int(shape["kv_heads"]),
                head_dim=int(shape["head_dim"]),
                alpha1_s=alpha1,
                alpha2_s=alpha2,
                heldout_error=error,
                fit_lengths=fit,
                heldout_lengths=held,
                api=str(data.get("api", shape.get("api", "unknown"))),
                source=f"hardware_db/profiles/{gpu_id}/{newest}",
            )
        )
    return tuple(fits)


def attention_fit(gpu_id: str, model: ModelSpec) -> AttentionFit | None:
    """The fit measured for ``model``'s head shape on ``gpu_id``, or None."""
    for fit in load_fits(gpu_id):
        shape = (fit.q_heads, fit.kv_heads, fit.head_dim)
        if shape == (model.num_attention_heads, model.kv_heads, model.kv_channels):
            return fit
    return None
