"""Routing statistics: per-layer expert loads, and layer-to-layer affinity from traces.

Formats read (the shapes everyone shares, see DeepSeek's EPLB and SGLang's expert
distribution recorder):

- loads ``[layers, experts]`` of token counts, or ``[steps, layers, experts]`` (summed over
  steps), as a JSON array, a ``.npy`` array, or a JSON object with ``logical_count``
  (SGLang's ``--init-expert-location`` JSON) or ``loads`` (our own statistics file, which
  may also carry ``affinity``);
- a PyTorch ``.pt`` file holding SGLang's ``logical_count`` (read only when torch is
  installed);
- per-token traces (:func:`stats_from_traces`): ``[tokens, layers]`` expert ids (ExFlow) or
  top-k ids ``[layers, tokens, k]`` (SGLang's per-token mode), as ``.npy`` or JSON. A
  trace gives the loads and the affinity: how many tokens went to expert e in layer l and
  to expert f in layer l + 1 (with top-k, each of a token's k x k expert pairs counts once).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from planner.errors import SpecError

STATS_FORMAT = "autopar-routing-stats"
MAX_PAIRS_PER_EXPERT = 8
"""Affinity pairs kept per layer transition, per expert: the heaviest 8 E pairs. The
solver's model grows with the pairs; lighter pairs still move tokens, which the reported
bytes count only when they are kept."""


class AffinityEntry(BaseModel):
    """``tokens`` went to expert ``src`` in MoE layer ``layer`` and to ``dst`` in the next."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layer: int = Field(ge=0)
    src: int = Field(ge=0)
    dst: int = Field(ge=0)
    tokens: int = Field(ge=1)


class RoutingStats(BaseModel):
    """Token counts per MoE layer and logical expert, and the affinity where traced."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    loads: list[list[int]] = Field(description="[layers][experts] token-expert assignments")
    affinity: list[AffinityEntry] = Field(default_factory=list)
    source: str = ""

    @model_validator(mode="after")
    def _check(self) -> RoutingStats:
        if not self.loads or not self.loads[0]:
            raise ValueError("loads needs at least one layer and one expert")
        experts = len(self.loads[0])
        for layer, row in enumerate(self.loads):
            if len(row) != experts:
                raise ValueError(f"loads[{layer}] has {len(row)} experts, loads[0] has {experts}")
            if min(row) < 0:
                raise ValueError(f"loads[{layer}] has a negative count")
        for i, a in enumerate(self.affinity):
            if a.layer >= len(self.loads) - 1 or a.src >= experts or a.dst >= experts:
                raise ValueError(
                    f"affinity[{i}] is outside {len(self.loads)} layers x {experts} experts"
                )
        return self

    @property
    def layers(self) -> int:
        return len(self.loads)

    @property
    def experts(self) -> int:
        return len(self.loads[0])

    def save(self, path: Path) -> None:
        """Write the statistics file that ``--routing`` reads back."""
        data = {"format": STATS_FORMAT, **self.model_dump(mode="json")}
        path.write_text(json.dumps(data, separators=(",", ":")))


def _integer_array(data: Any, field: str) -> np.ndarray:
    try:
        array = np.asarray(data)
    except ValueError:
        raise SpecError(f"{field}: expected a rectangular array of numbers") from None
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        raise SpecError(f"{field}: expected a rectangular array of numbers")
    if array.size and (array < 0).any():
        raise SpecError(f"{field}: token counts must not be negative")
    if np.issubdtype(array.dtype, np.floating) and not np.allclose(array, np.round(array)):
        raise SpecError(f"{field}: token counts must be whole numbers")
    return np.round(array).astype(np.int64)


def loads_from_array(data: Any, field: str = "routing") -> np.ndarray:
    """``[layers, experts]`` loads from a 2-D array, or a 3-D ``[steps, layers, experts]``
    one summed over steps."""
    array = _integer_array(data, field)
    if array.ndim == 3:
        array = array.sum(axis=0)
    if array.ndim != 2 or 0 in array.shape:
        raise SpecError(
            f"{field}: expected loads [layers, experts] or [steps, layers, experts], "
            f"got shape {list(array.shape)}"
        )
    return array


def _read_pt(path: Path) -> Any:
    try:
        import torch
    except ImportError:
        raise SpecError(
            f"routing: {path.name} is a PyTorch file; reading it needs torch "
            "(pip install torch), or save logical_count as .npy or JSON"
        ) from None
    data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, dict):
        if "logical_count" not in data:
            raise SpecError(f"routing: {path.name} has no logical_count (keys: {sorted(data)})")
        data = data["logical_count"]
    return data.numpy() if hasattr(data, "numpy") else data


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SpecError(f"routing: cannot read {path.name} as JSON: {error}") from None


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise SpecError(f"routing: cannot read {path.name} as .npy: {error}") from None


def read_routing(path: Path) -> RoutingStats:
    """Statistics from a loads file (JSON, ``.npy``, ``.pt``) or our statistics JSON."""
    if not path.is_file():
        raise SpecError(f"routing: file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return RoutingStats(loads=loads_from_array(_read_npy(path)).tolist(), source=path.name)
    if suffix == ".pt":
        return RoutingStats(loads=loads_from_array(_read_pt(path)).tolist(), source=path.name)
    if suffix != ".json":
        raise SpecError(f"routing: {path.name}: expected a .json, .npy or .pt file")
    data = _read_json(path)
    if isinstance(data, dict):
        if "loads" in data:
            try:
                return RoutingStats(
                    loads=loads_from_array(data["loads"], "routing.loads").tolist(),
                    affinity=data.get("affinity", []),
                    source=data.get("source", path.name),
                )
            except ValueError as error:
                raise SpecError(f"routing: {error}") from None
        if "logical_count" in data:
            loads = loads_from_array(data["logical_count"], "routing.logical_count")
            return RoutingStats(loads=loads.tolist(), source=path.name)
        raise SpecError(f"routing: {path.name} has neither loads nor logical_count")
    return RoutingStats(loads=loads_from_array(data).tolist(), source=path.name)


def read_trace(path: Path) -> np.ndarray:
    """A trace as ``[layers, tokens, k]``: ``[tokens, layers]`` becomes k = 1."""
    if not path.is_file():
        raise SpecError(f"trace: file not found: {path}")
    raw = _read_npy(path) if path.suffix.lower() == ".npy" else _read_json(path)
    array = _integer_array(raw, f"trace {path.name}")
    if array.ndim == 2:
        return array.T[:, :, None]
    if array.ndim == 3:
        return array
    raise SpecError(
        f"trace {path.name}: expected [tokens, layers] or [layers, tokens, k], "
        f"got shape {list(array.shape)}"
    )


def stats_from_traces(
    traces: list[np.ndarray], experts: int | None = None, source: str = ""
) -> RoutingStats:
    """Loads and the heaviest affinity pairs of ``[layers, tokens, k]`` traces (joined on
    the token axis); ``experts`` defaults to the largest id + 1."""
    layers = {t.shape[0] for t in traces}
    if len(layers) != 1:
        raise SpecError(f"trace: the files have different layer counts {sorted(layers)}")
    trace = np.concatenate(traces, axis=1)
    count = int(trace.max()) + 1 if experts is None else experts
    if trace.size and trace.max() >= count:
        raise SpecError(f"trace: expert id {int(trace.max())} but only {count} experts")
    loads = np.stack([np.bincount(layer.ravel(), minlength=count) for layer in trace])
    affinity: list[AffinityEntry] = []
    k = trace.shape[2]
    for layer in range(trace.shape[0] - 1):
        src = np.repeat(trace[layer], k, axis=1).ravel()
        dst = np.tile(trace[layer + 1], (1, k)).ravel()
        pairs = np.bincount(src * count + dst, minlength=count * count)
        keep = np.argsort(-pairs, kind="stable")[: MAX_PAIRS_PER_EXPERT * count]
        affinity.extend(
            AffinityEntry(
                layer=layer, src=int(p // count), dst=int(p % count), tokens=int(pairs[p])
            )
            for p in sorted(keep)
            if pairs[p] > 0
        )
    return RoutingStats(loads=loads.tolist(), affinity=affinity, source=source)
