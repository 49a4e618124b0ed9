"""autopar against 66 training steps on two H200s measured by a harness it did not write.

Every record of ``hardware_db/profiles/h200-sxm/2026-12-03-h200x2-validation`` (DDP,
FSDP2 with and without resharding, DTensor and Megatron-style tensor parallelism with and
without sequence parallelism, GPipe and 1F1B pipelines; its README describes the harness)
goes through ``planner.estimate`` once, with the harness described in autopar's terms
(``planner.cost.measured_two_gpu``: state layout, optimizer and runtime; nothing fitted to
these rows). Per mode, the table sets the predicted allocator peak of each rank against
the measured ``peak_allocated_bytes_per_rank`` and the predicted step time against the
measured median.

Host-bound rows are flagged and left out of the time summary, each with its reason: the
DTensor tensor-parallel mode (its eager dispatch on the host sets the pace), and
micro-batch shapes whose repeated measurements in other sessions spread by more than 10%
(device-bound steps repeat within 1-3%). Their memory is judged all the same.

Targets (issue 13): peak memory within 5% on every row and never optimistic by more than
2%; step time within 10% on the GPU-bound rows.

Run: ``python benchmarks/accuracy_two_gpu.py [--json-out rows.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy_measured import _summary

from planner.cost.measured_two_gpu import (
    MODES,
    host_bound_reason,
    two_gpu_records,
)
from planner.measured_runs import estimate_two_gpu_record

MEMORY_TARGET_PCT = 5.0
OPTIMISM_LIMIT_PCT = 2.0
TIME_TARGET_PCT = 10.0
GIB = 2**30


def rows() -> list[dict[str, Any]]:
    records = two_gpu_records()
    out = []
    for record in records:
        result = estimate_two_gpu_record(record)
        stages = [stage.allocated_gib for stage in result.memory.stages]
        predicted = stages * record["world_size"] if len(stages) == 1 else stages
        measured = [b / GIB for b in record["peak_allocated_bytes_per_rank"]]
        errors = [100 * (p / m - 1) for p, m in zip(predicted, measured, strict=True)]
        measured_s = record["step_time_s_median"]
        predicted_s = result.time.step_time_s
        out.append(
            {
                "id": record["id"],
                "mode": record["mode"],
                "measured_gib": [round(m, 3) for m in measured],
                "predicted_gib": predicted,
                "memory_error_pct": [round(e, 2) for e in errors],
                "peak_moment": [stage.peak_moment for stage in result.memory.stages],
                "measured_s": measured_s,
                "predicted_s": predicted_s,
                "time_error_pct": round(100 * (predicted_s / measured_s - 1), 2),
                "host_bound": host_bound_reason(record, records),
            }
        )
    return out


def print_tables(table: list[dict[str, Any]]) -> None:
    for mode in MODES:
        mine = [row for row in table if row["mode"] == mode]
        if not mine:
            continue
        print(f"\n{mode}")
        print(f"{'run':<38}{'GiB r0/r1':>14}{'ours':>14}{'error':>16}"
              f"{'time s':>9}{'ours':>9}{'error':>9}  host-bound")  # fmt: skip
        for row in mine:
            gib = "/".join(f"{v:.2f}" for v in row["measured_gib"])
            ours = "/".join(f"{v:.2f}" for v in row["predicted_gib"])
            err = "/".join(f"{v:+.1f}%" for v in row["memory_error_pct"])
            flag = "yes" if row["host_bound"] else ""
            print(f"{row['id']:<38}{gib:>14}{ours:>14}{err:>16}{row['measured_s']:>9.4f}"
                  f"{row['predicted_s']:>9.4f}{row['time_error_pct']:>+8.1f}%  {flag}")  # fmt: skip
        memory = [e for row in mine for e in row["memory_error_pct"]]
        print(_summary(f"{mode} peak memory (per rank)", memory, MEMORY_TARGET_PCT))
        bound = [row["time_error_pct"] for row in mine if not row["host_bound"]]
        print(_summary(f"{mode} step time, GPU-bound", bound, TIME_TARGET_PCT))
    print()
    memory = [e for row in table for e in row["memory_error_pct"]]
    print(_summary("all peak memory (per rank)", memory, MEMORY_TARGET_PCT))
    optimistic = [e for e in memory if e < -OPTIMISM_LIMIT_PCT]
    print(f"ranks predicted more than {OPTIMISM_LIMIT_PCT:g}% below the measured peak: "
          f"{len(optimistic)}")  # fmt: skip
    bound = [row["time_error_pct"] for row in table if not row["host_bound"]]
    print(_summary("all step time, GPU-bound", bound, TIME_TARGET_PCT))
    hosts = [row for row in table if row["host_bound"]]
    print(_summary("step time, host-bound (not a target)",
                   [row["time_error_pct"] for row in hosts], TIME_TARGET_PCT))  # fmt: skip
    reasons = sorted({row["host_bound"] for row in hosts})
    for reason in reasons:
        ids = [row["id"] for row in hosts if row["host_bound"] == reason]
        print(f"host-bound ({len(ids)}): {reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json-out", help="write the rows to this file")
    args = parser.parse_args()
    table = rows()
    print_tables(table)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
