"""Which tensors are live at a Megatron-Core step's allocated peak, and what allocated them.

    python3 peak_census.py --runs megatron-dense-none-default megatron-1b-full-default \\
        --out census.json

For each run of ``allocator_snapshots.MEGATRON_RUNS`` (one process, one after another,
everything freed between runs): build the model and optimizer, run ``steps - 1`` steps
unrecorded, then record the allocator's history of the last step with C++ and Python
frames (``_record_memory_history(context="all", stacks="all")``), replay that trace and
write, at the moment the allocated bytes of the step's own allocations peak, every live
block of at least ``--min-mib`` with the frames that allocated it (the operator and
autograd-node frames and the Python frames, others dropped). It answers what a count of
saved tensors and workspaces misses at the peak; the snapshot itself (frames make it
tens of MiB) is not kept.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

import record
from allocator_snapshots import MEGATRON_RUNS, megatron_run, provenance

KEEP = re.compile(r"Backward|autograd::generated|at::native::|at::_ops::\w+::call|\.py$")
MIB = 2**20


def _frames(entry: dict[str, Any], limit: int = 12) -> list[str]:
    kept = []
    for frame in entry.get("frames", []):
        name, filename = str(frame.get("name", "")), str(frame.get("filename", ""))
        if KEEP.search(name) or filename.endswith(".py"):
            where = f"{Path(filename).name}:{frame.get('line')}" if filename.endswith(".py") else ""
            kept.append(f"{name} {where}".strip())
        if len(kept) >= limit:
            break
    return kept


def census(trace: list[dict[str, Any]], min_bytes: int) -> dict[str, Any]:
    """The live blocks of ``trace``'s own allocations at their peak."""
    live: dict[int, tuple[int, int]] = {}
    allocated = best = best_at = 0
    best_live: dict[int, tuple[int, int]] = {}
    for index, entry in enumerate(trace):
        if entry["action"] == "alloc":
            live[entry["addr"]] = (entry["size"], index)
            allocated += entry["size"]
            if allocated > best:
                best, best_at, best_live = allocated, index, dict(live)
        elif entry["action"] == "free_completed" and entry["addr"] in live:
            allocated -= live.pop(entry["addr"])[0]
    blocks = sorted(best_live.values(), key=lambda block: block[1])
    return {
        "peak_step_allocated_mib": best / MIB,
        "peak_event": best_at,
        "events": len(trace),
        "blocks": [
            {"mib": size / MIB, "event": at, "frames": _frames(trace[at])}
            for size, at in blocks
            if size >= min_bytes
        ],
        "smaller_blocks_mib": sum(size for size, _ in blocks if size < min_bytes) / MIB,
    }


def measure(name: str, steps: int, min_bytes: int) -> dict[str, Any]:
    from megatron.core import parallel_state

    import megatron_step as ms

    run = megatron_run(name, steps)
    dev = torch.device("cuda", 0)
    ms.init_distributed(dev)
    parallel_state.destroy_global_memory_buffer()
    parallel_state._set_global_memory_buffer()
    _config, model, optimizer = ms.build(run)
    stepper = ms.Stepper(run, model, optimizer, ms.make_batches(run, dev))
    for _ in range(steps - 1):
        stepper.step()
    record.synchronize(dev)
    before = torch.cuda.memory_allocated(dev)
    record.reset_peak(dev)
    torch.cuda.memory._record_memory_history(
        enabled="all", context="all", stacks="all", max_entries=500_000
    )
    stepper.step()
    record.synchronize(dev)
    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    trace = max(snapshot["device_traces"], key=len)
    result = {
        "run": name,
        "allocated_before_step_mib": before / MIB,
        "max_memory_allocated_mib": torch.cuda.max_memory_allocated(dev) / MIB,
        **census(trace, min_bytes),
    }
    del stepper, model, optimizer, snapshot, trace
    ms._free(dev)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", choices=sorted(MEGATRON_RUNS), required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--min-mib", type=float, default=64.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results = []
    for name in args.runs:
        started = time.perf_counter()
        try:
            found = measure(name, args.steps, int(args.min_mib * MIB))
        except Exception as error:  # one run's failure must not lose the others
            found = {"run": name, "error": f"{type(error).__name__}: {error}"[:2000]}
        found["seconds"] = round(time.perf_counter() - started, 2)
        results.append(found)
        print(json.dumps({k: v for k, v in found.items() if k != "blocks"}), flush=True)
        # written after every run: a run cut off by a time limit loses only itself
        args.out.write_text(json.dumps({"provenance": provenance(), "runs": results}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
