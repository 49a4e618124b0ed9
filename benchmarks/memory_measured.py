"""Compare autopar's predicted peak memory with real training steps measured on GPUs.

The measurements are the JSON-lines records of ``benchmarks/measure`` (plain PyTorch
Llama-style training steps; ``benchmarks/measure/README.md`` says what each holds), kept
with their provenance under ``hardware_db/profiles/<gpu>/<profile>/train_steps.jsonl``.
For every record that did not run out of memory, the same shape, sequence length,
micro-batch, gradient accumulation, recomputation and precision go through
``planner.estimate`` (framework ``pytorch``: state layout ``autocast`` for fp32 weights
under ``torch.autocast``, ``bf16`` for plain bf16) and the predicted allocator peak
(``allocated_gib``: what ``torch.cuda.max_memory_allocated`` reports) is set against
the measured ``timed_peak_allocated``. Records that ran out of memory must be predicted
not to fit.

Target (issue: memory model): within 5% of the measured peak on every configuration, and
never optimistic by more than 2%.

Run: ``python benchmarks/memory_measured.py [--gpu h100-sxm] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from planner.cost.reserve import measured_records
from planner.measured_runs import estimate_record

TOLERANCE_PCT = 5.0
OPTIMISM_LIMIT_PCT = 2.0


def describe(config: dict[str, Any]) -> str:
    return (
        f"{config.get('preset')} s{config['model']['seq_len']} b{config['mbs']}"
        f"x{config['grad_accum']} {config['recompute']} {config['precision']}"
        + (" foreach" if config.get("foreach") else "")
        + (" mcore" if config.get("framework") == "megatron" else "")
    )


def run(gpu_id: str) -> list[dict[str, Any]]:
    rows = []
    for record in measured_records(gpu_id):
        if record["config"].get("mode", "single") != "single":
            continue
        result = estimate_record(record, gpu_id=gpu_id)
        stage = result.memory.stages[0]
        row: dict[str, Any] = {
            "config": describe(record["config"]),
            "predicted_gib": stage.allocated_gib,
            "predicted_fits": result.memory.fits,
            "peak_moment": stage.peak_moment,
        }
        if record.get("oom"):
            row.update(measured_gib=None, error_pct=None, ok=not result.memory.fits)
        else:
            measured = record["memory"]["timed_peak_allocated"] / 2**30
            error = 100 * (stage.allocated_gib - measured) / measured
            row.update(
                measured_gib=round(measured, 3),
                error_pct=round(error, 2),
                ok=abs(error) <= TOLERANCE_PCT and error >= -OPTIMISM_LIMIT_PCT,
            )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="h100-sxm")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    rows = run(args.gpu)
    print(f"{'configuration':<44}{'measured':>10}{'autopar':>10}{'error':>9}  peak at")
    for row in rows:
        measured = "OOM" if row["measured_gib"] is None else f"{row['measured_gib']:.2f}"
        error = "" if row["error_pct"] is None else f"{row['error_pct']:+.2f}%"
        flag = "" if row["ok"] else "  <-- miss"
        print(
            f"{row['config']:<44}{measured:>10}{row['predicted_gib']:>10.2f}{error:>9}  "
            f"{row['peak_moment']}{flag}"
        )
    errors = [abs(row["error_pct"]) for row in rows if row["error_pct"] is not None]
    misses = sum(not row["ok"] for row in rows)
    if errors:
        print(
            f"{len(rows)} configurations: mean |error| {sum(errors) / len(errors):.2f}%, "
            f"worst {max(errors):.2f}%, {misses} outside the target "
            f"(|error| <= {TOLERANCE_PCT}% and never optimistic by more than "
            f"{OPTIMISM_LIMIT_PCT}%)"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"gpu": args.gpu, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
