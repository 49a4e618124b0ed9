"""Predicted step time against real training steps measured on our GPUs.

The measurements are the single-GPU records of ``benchmarks/measure`` stored under
``hardware_db/profiles/<gpu>/<profile>/train_steps.jsonl``. The same records are what
``planner.cost.fit`` fits the GPU's achievable rates to: even-numbered records fit, odd-
numbered records are held out, and the table says which is which, so the held-out rows
are the honest measure of accuracy. Each record goes through ``planner.estimate`` with
its own shape, sequence, micro-batch, accumulation, recomputation, precision and
optimizer implementation.

Target (time-model issue): within 10% on every configuration.

Run: ``python benchmarks/time_measured.py [--gpu h100-sxm] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from planner import WorkloadSpec, estimate, load_cluster
from planner.cost.measured import (
    layout_from_record,
    model_from_record,
    optimizer_kind,
    state_layout_name,
)
from planner.cost.reserve import measured_runs

TARGET_PCT = 10.0
CLUSTER_FOR_GPU = {"h100-sxm": "dgx-h100", "h200-sxm": "hgx-h200"}


def rows(gpu_id: str) -> list[dict[str, Any]]:
    out = []
    for position, record in enumerate(measured_runs(gpu_id)):
        config = record["config"]
        result = estimate(
            model=model_from_record(config),
            cluster=load_cluster(CLUSTER_FOR_GPU[gpu_id], gpus=1),
            workload=WorkloadSpec(
                seq_len=config["model"]["seq_len"],
                global_batch=config["mbs"] * config["grad_accum"],
            ),
            layout=layout_from_record(config),
            framework="pytorch",
            state_layout_name=state_layout_name(config),
            optimizer_impl=optimizer_kind(config),  # type: ignore[arg-type]
        )
        measured = record["time"]["median_s"]
        predicted = result.time.step_time_s
        out.append(
            {
                "config": (
                    f"{config.get('preset')} s{config['model']['seq_len']} b{config['mbs']}"
                    f"x{config['grad_accum']} {config['recompute']} {config['precision']}"
                    + (" foreach" if config.get("foreach") else "")
                ),
                "role": "fit" if position % 2 == 0 else "held out",
                "measured_s": measured,
                "predicted_s": predicted,
                "error_pct": round(100 * (predicted - measured) / measured, 2),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="h100-sxm")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    table = rows(args.gpu)
    print(f"{'configuration':<44}{'role':<10}{'measured':>10}{'autopar':>10}{'error':>9}")
    for row in table:
        print(
            f"{row['config']:<44}{row['role']:<10}{row['measured_s']:>10.4f}"
            f"{row['predicted_s']:>10.4f}{row['error_pct']:>+8.2f}%"
        )
    for role in ("fit", "held out"):
        errors = [abs(r["error_pct"]) for r in table if r["role"] == role]
        within = sum(e <= TARGET_PCT for e in errors)
        print(
            f"{role}: {len(errors)} runs, mean |error| {sum(errors) / len(errors):.2f}%, "
            f"worst {max(errors):.2f}%, {within} within {TARGET_PCT}%"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
