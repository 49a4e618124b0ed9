"""NCCL collective times measured on a GPU's own machine, where a profile stores them.

``hardware_db/profiles/<gpu>/<id>/collectives.json`` holds nccl-tests-style curves (each
op over ``meta.world`` ranks of one node, 64 KiB to 1 GiB, the slowest rank's time per
op, the median of three repeats; sizes follow nccl-tests: the whole buffer ``S`` as
``planner.cost.comm`` uses it). Inside one node, a collective over a group of that many
ranks takes the measured time at its size, interpolated in log-log space between
measured sizes; past the largest size it keeps the largest size's bandwidth, below the
smallest it takes the smallest size's time (the latency floor). Every other group uses
the formulas of ``planner.cost.comm``.
"""

from __future__ import annotations

import json
import math
from functools import cache

import numpy as np

import hardware_db

COLLECTIVES_FILE = "collectives.json"
MEASURED_OPS = {
    "all_reduce": "all_reduce",
    "all_gather": "all_gather_into_tensor",
    "reduce_scatter": "reduce_scatter_tensor",
    "all_to_all": "all_to_all_single",
    "send_recv": "send_recv",
}
"""autopar's collective -> the op name the measuring script recorded (bf16 buffers)."""


@cache
def measured_curves(gpu_id: str) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """(op, ranks) -> (log2 bytes, log seconds), from every collectives file of ``gpu_id``."""
    points: dict[tuple[str, int], dict[float, list[float]]] = {}
    names = {measured: ours for ours, measured in MEASURED_OPS.items()}
    for profile in hardware_db.list_profiles(gpu_id):
        path = hardware_db.profiles_dir() / gpu_id / profile / COLLECTIVES_FILE
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        for row in record["results"]:
            op = names.get(row["op"])
            if op is None or row.get("dtype", "bfloat16") != "bfloat16":
                continue
            key = (op, int(row.get("world", record["meta"]["world"])))
            curve = points.setdefault(key, {})
            curve.setdefault(math.log2(row["size_bytes"]), []).append(math.log(row["time_s"]))
    return {
        key: (np.array(sorted(curve)), np.array([float(np.mean(curve[x])) for x in sorted(curve)]))
        for key, curve in points.items()
    }


def measured_collective_time(gpu_id: str, op: str, size_bytes: float, ranks: int) -> float | None:
    """Seconds for ``op`` on ``size_bytes`` over ``ranks`` GPUs of one node, as measured on
    ``gpu_id``'s machine; None where no curve was measured for that op and group size."""
    curve = measured_curves(gpu_id).get((op, ranks))
    if curve is None or size_bytes <= 0:
        return None
    xs, ys = curve
    x = math.log2(size_bytes)
    if x > xs[-1]:  # past the largest size: its bandwidth
        return math.exp(ys[-1]) * 2 ** (x - xs[-1])
    return math.exp(float(np.interp(x, xs, ys)))
