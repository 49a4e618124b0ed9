"""Placement files that serving and training systems load, and their readers.

- The EPLB triple (DeepSeek's ``rebalance_experts`` outputs): ``phy2log [layers, R]``
  (physical slot -> logical expert; slot r on GPU r // (R / EP)), ``log2phy [layers, E,
  max replicas]`` (the slots of each logical expert, padded with -1) and ``logcnt [layers,
  E]`` (replicas per expert), as one JSON object.
- SGLang's ``--init-expert-location`` JSON: ``{"physical_to_logical_map": [layers, R]}``.
- A human-readable table, one line per layer and GPU.

The readers check what they read (every expert hosted, consistent triple) and return
``phy2log``, so a written file reads back to the same placement.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from planner.errors import SpecError


def eplb_triple(phy2log: list[list[int]], experts: int) -> dict[str, list]:
    """``phy2log``, ``log2phy`` (-1 padded) and ``logcnt`` of a placement."""
    logcnt = [np.bincount(row, minlength=experts).tolist() for row in phy2log]
    width = max(max(row) for row in logcnt)
    log2phy = []
    for row in phy2log:
        slots: list[list[int]] = [[] for _ in range(experts)]
        for r, e in enumerate(row):
            slots[e].append(r)
        log2phy.append([s + [-1] * (width - len(s)) for s in slots])
    return {"phy2log": [list(row) for row in phy2log], "log2phy": log2phy, "logcnt": logcnt}


def _phy2log(data: object, field: str, experts: int | None) -> list[list[int]]:
    array = np.asarray(data)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise SpecError(f"{field}: expected an integer array [layers, physical slots]")
    count = int(array.max()) + 1 if experts is None else experts
    if array.min() < 0 or array.max() >= count:
        raise SpecError(f"{field}: expert ids must be in 0..{count - 1}")
    for layer, row in enumerate(array):
        missing = np.flatnonzero(np.bincount(row, minlength=count) == 0)
        if missing.size:
            raise SpecError(f"{field}[{layer}]: expert {int(missing[0])} has no slot")
    return array.tolist()


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SpecError(f"placement: cannot read {path.name}: {error}") from None
    if not isinstance(data, dict):
        raise SpecError(f"placement: {path.name} must hold a JSON object")
    return data


def write_eplb(path: Path, phy2log: list[list[int]], experts: int) -> None:
    path.write_text(json.dumps(eplb_triple(phy2log, experts)))


def read_eplb(path: Path) -> list[list[int]]:
    """``phy2log`` of an EPLB triple file, after checking log2phy and logcnt agree with it."""
    data = _load_json(path)
    for key in ("phy2log", "log2phy", "logcnt"):
        if key not in data:
            raise SpecError(f"placement: {path.name} has no {key}")
    experts = len(data["logcnt"][0]) if data["logcnt"] else None
    phy2log = _phy2log(data["phy2log"], "phy2log", experts)
    expected = eplb_triple(phy2log, len(data["logcnt"][0]))
    for key in ("log2phy", "logcnt"):
        if data[key] != expected[key]:
            raise SpecError(f"placement: {path.name}: {key} does not match phy2log")
    return phy2log


def write_sglang(path: Path, phy2log: list[list[int]]) -> None:
    path.write_text(json.dumps({"physical_to_logical_map": [list(row) for row in phy2log]}))


def read_sglang(path: Path, experts: int | None = None) -> list[list[int]]:
    data = _load_json(path)
    if "physical_to_logical_map" not in data:
        raise SpecError(f"placement: {path.name} has no physical_to_logical_map")
    return _phy2log(data["physical_to_logical_map"], "physical_to_logical_map", experts)


def placement_table(phy2log: list[list[int]], gpus: int) -> str:
    """``layer 0  gpu 3: 5 12 12 40`` lines (a repeated id is a second replica)."""
    slots = len(phy2log[0]) // gpus
    lines = []
    for layer, row in enumerate(phy2log):
        for g in range(gpus):
            hosted = " ".join(str(e) for e in row[g * slots : (g + 1) * slots])
            lines.append(f"layer {layer:>3}  gpu {g:>3}: {hosted}")
    return "\n".join(lines) + "\n"


def read_table(path: Path) -> list[list[int]]:
    """``phy2log`` back from :func:`placement_table`'s text."""
    rows: dict[int, dict[int, list[int]]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            head, hosted = line.split(":", 1)
            _, layer, _, gpu = head.split()
            rows.setdefault(int(layer), {})[int(gpu)] = [int(e) for e in hosted.split()]
        except ValueError:
            raise SpecError(
                f"placement: {path.name} line {number} is not 'layer L gpu G: ids'"
            ) from None
    return [[e for g in sorted(rows[layer]) for e in rows[layer][g]] for layer in sorted(rows)]
