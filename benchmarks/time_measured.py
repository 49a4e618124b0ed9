"""Predicted step time against real training steps measured on our GPUs.

The measurements are the single-GPU records of ``benchmarks/measure`` stored under
``hardware_db/profiles/<gpu>/<profile>/train_steps.jsonl`` (34 on one H100, 34 on one
H200). The time model times every kernel from the GPU's kernel profile; the same records
calibrate what a profile cannot give (``planner.cost.fit.calibrate_steps``: launch
overheads and the in-step device-time ratio): even-numbered records fit, odd-numbered
records are held out, and the table says which is which, so the held-out rows are the
honest measure of accuracy. Each record goes through ``planner.estimate`` with its own
shape, sequence, micro-batch, accumulation, recomputation, precision and optimizer
implementation.

Target (time-model issue): within 10% on every configuration.

Run: ``python benchmarks/time_measured.py [--gpu h100-sxm|h200-sxm] [--json out.json]``.
``--transfer-from h100-sxm --gpu h200-sxm`` predicts the H200's runs from the H100's profile
(scaled to the H200's datasheet peaks) and calibration alone: the path every GPU without
measurements takes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from planner import load_gpu
from planner.cost.fit import Sample, step_time_s
from planner.cost.measured import MEASURED_FRAMEWORK, single_gpu_step_phases
from planner.cost.rates import transferred_rates
from planner.cost.reserve import measured_runs
from planner.measured_runs import estimate_record

TARGET_PCT = 10.0


def _label(config: dict[str, Any]) -> str:
    return (
        f"{config.get('preset')} s{config['model']['seq_len']} b{config['mbs']}"
        f"x{config['grad_accum']} {config['recompute']} {config['precision']}"
        + (" foreach" if config.get("foreach") else "")
    )


def rows(gpu_id: str) -> list[dict[str, Any]]:
    out = []
    for position, record in enumerate(measured_runs(gpu_id)):
        config = record["config"]
        result = estimate_record(record, gpu_id=gpu_id)
        measured = record["time"]["median_s"]
        predicted = result.time.step_time_s
        out.append(
            {
                "config": _label(config),
                "role": "fit" if position % 2 == 0 else "held out",
                "measured_s": measured,
                "predicted_s": predicted,
                "error_pct": round(100 * (predicted - measured) / measured, 2),
            }
        )
    return out


def transferred_rows(gpu_id: str, from_gpu: str) -> list[dict[str, Any]]:
    """Every run of ``gpu_id`` predicted from ``from_gpu``'s profile and calibration only.

    A single-GPU step is its phases timed as ``estimate`` composes them for one stage and
    no communication (``planner.cost.fit.step_time_s``); none of ``gpu_id``'s
    measurements is used, so every row is held out."""
    rates = transferred_rates(load_gpu(gpu_id), from_gpu, "bf16", MEASURED_FRAMEWORK)
    out = []
    for record in measured_runs(gpu_id):
        config = record["config"]
        sample = Sample(phases=single_gpu_step_phases(config), measured_s=0.0)
        predicted = step_time_s(sample, rates)
        measured = record["time"]["median_s"]
        out.append(
            {"config": _label(config), "role": f"from {from_gpu}", "measured_s": measured,
             "predicted_s": predicted,
             "error_pct": round(100 * (predicted - measured) / measured, 2)}
        )  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="h100-sxm")
    parser.add_argument(
        "--transfer-from",
        help="predict --gpu's runs from this GPU's profile and calibration only",
    )
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    table = transferred_rows(args.gpu, args.transfer_from) if args.transfer_from else rows(args.gpu)
    print(f"{'configuration':<44}{'role':<10}{'measured':>10}{'autopar':>10}{'error':>9}")
    for row in table:
        print(
            f"{row['config']:<44}{row['role']:<10}{row['measured_s']:>10.4f}"
            f"{row['predicted_s']:>10.4f}{row['error_pct']:>+8.2f}%"
        )
    for role in sorted({r["role"] for r in table}):
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
