"""autopar's step time and peak memory against every training step measured on our GPUs.

For each GPU with measured steps (``hardware_db/profiles/<gpu>/*/train_steps.jsonl``,
written by ``benchmarks/measure/sweep.py``: plain PyTorch Llama-style steps on one H100
and one H200), every record goes through ``planner.estimate`` once and its predicted
step time and allocator peak are set against the measured median step time and
``timed_peak_allocated``. The time model reads the GPU's kernel profile and a calibration
fitted to the even-numbered records of that GPU (``planner.cost.fit``), so the
odd-numbered rows ("held out") are honest accuracy, and the validation sweeps
(``validation_steps.jsonl``: shapes, sequence lengths and micro-batches the calibration
sweep never ran, measured afterwards) more so; the memory model is fitted to nothing but
its fragmentation and non-allocator reserve (medians over the calibration records).
Records that ran out of memory must be predicted not to fit; runs that fit but were
predicted not to are counted too.

Megatron-Core's own training steps (``megatron_steps.jsonl``, written by
``benchmarks/measure/megatron_step.py``: ``GPTModel`` with the local layer spec, the
fp32 gradient buffer and the distributed optimizer, recompute none/selective/full) are
predicted with ``framework="megatron"``, the ``megatron`` state layout and unfused
attention, and reported as role "megatron" with their own summaries: they check the
Megatron state layout and activations on Megatron itself, and nothing is fitted to them.
Role "mcore new" (``megatron_steps_heldout.jsonl``): more Megatron-Core steps, of shapes,
lengths and micro-batches the first sweep did not run, measured after the time model of
the local spec had been written from the first sweep's kernel traces.

Several configurations were measured more than once (in different sweeps, minutes or an
hour apart, on the same lent machine). Their spread, max/min - 1 of the median step
times, is printed per GPU: it is the floor under any prediction's error for that
configuration, and small launch-bound steps (the host's Python dispatch sets their pace)
spread most.

Targets (profiled cost-model issue): step time within 10% and peak memory within 5% on
every configuration.

Run: ``python benchmarks/accuracy_measured.py [--gpu h100-sxm ...] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_measured import describe

from planner.cost.measured import MEASURED_CLUSTERS, MEGATRON_FILE, MEGATRON_HELDOUT_FILE
from planner.cost.reserve import VALIDATION_FILE, measured_records, measured_runs
from planner.measured_runs import estimate_record

MEGATRON_ROLES = {
    "megatron": "Megatron-Core",
    "mcore new": "Megatron-Core new shapes",
}
TIME_TARGET_PCT = 10.0
MEMORY_TARGET_PCT = 5.0


def rows(gpu_id: str) -> list[dict[str, Any]]:
    fitted = {id(run): position for position, run in enumerate(measured_runs(gpu_id))}
    records = [(r, None) for r in measured_records(gpu_id)]
    records += [(r, "validation") for r in measured_records(gpu_id, VALIDATION_FILE)]
    records += [(r, "megatron") for r in measured_records(gpu_id, MEGATRON_FILE)]
    records += [(r, "mcore new") for r in measured_records(gpu_id, MEGATRON_HELDOUT_FILE)]
    out = []
    for record, role in records:
        if record["config"].get("mode", "single") != "single":
            continue
        result = estimate_record(record, gpu_id=gpu_id)
        row: dict[str, Any] = {"gpu": gpu_id, "config": describe(record["config"])}
        if record.get("oom"):
            row.update(oom=True, predicted_fits=result.memory.fits)
            out.append(row)
            continue
        measured_s = record["time"]["median_s"]
        measured_gib = record["memory"]["timed_peak_allocated"] / 2**30
        predicted_gib = result.memory.stages[0].allocated_gib
        position = fitted.get(id(record))
        row.update(
            oom=False,
            predicted_fits=result.memory.fits,
            role=role or ("held out" if position is None or position % 2 else "fit"),
            measured_s=measured_s,
            predicted_s=result.time.step_time_s,
            time_error_pct=round(100 * (result.time.step_time_s / measured_s - 1), 2),
            measured_gib=round(measured_gib, 3),
            predicted_gib=predicted_gib,
            memory_error_pct=round(100 * (predicted_gib / measured_gib - 1), 2),
        )
        out.append(row)
    return out


def _summary(label: str, errors: list[float], target: float) -> str:
    if not errors:
        return f"{label}: no runs"
    magnitudes = [abs(e) for e in errors]
    within = sum(m <= target for m in magnitudes)
    return (
        f"{label}: {len(errors)} runs, mean |error| {sum(magnitudes) / len(errors):.2f}%, "
        f"worst {max(magnitudes):.2f}%, {within} within {target:g}%"
    )


def repeats(table: list[dict[str, Any]], gpu: str) -> list[tuple[str, list[float]]]:
    """Configurations of ``gpu`` measured more than once, with their median step times."""
    times: dict[str, list[float]] = {}
    for row in table:
        if row["gpu"] == gpu and not row["oom"]:
            times.setdefault(row["config"], []).append(row["measured_s"])
    return [(config, sorted(ts)) for config, ts in times.items() if len(ts) > 1]


def _spread_pct(times: list[float]) -> float:
    return 100 * (max(times) / min(times) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="append", choices=sorted(MEASURED_CLUSTERS))
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    table = [row for gpu in args.gpu or sorted(MEASURED_CLUSTERS) for row in rows(gpu)]
    print(f"{'gpu':<10}{'configuration':<42}{'role':<10}{'time s':>9}{'ours':>9}{'error':>9}"
          f"{'GiB':>8}{'ours':>8}{'error':>9}")  # fmt: skip
    for row in table:
        if row["oom"]:
            verdict = "predicted not to fit" if not row["predicted_fits"] else "PREDICTED TO FIT"
            print(f"{row['gpu']:<10}{row['config']:<42}{'OOM':<10}  {verdict}")
            continue
        print(
            f"{row['gpu']:<10}{row['config']:<42}{row['role']:<10}{row['measured_s']:>9.4f}"
            f"{row['predicted_s']:>9.4f}{row['time_error_pct']:>+8.2f}%{row['measured_gib']:>8.2f}"
            f"{row['predicted_gib']:>8.2f}{row['memory_error_pct']:>+8.2f}%"
        )
    for gpu in args.gpu or sorted(MEASURED_CLUSTERS):
        everything = [r for r in table if r["gpu"] == gpu and not r["oom"]]
        mine = [r for r in everything if r["role"] not in MEGATRON_ROLES]
        for role in ("held out", "validation"):
            errors = [r["time_error_pct"] for r in mine if r["role"] == role]
            print(_summary(f"{gpu} step time, {role}", errors, TIME_TARGET_PCT))
        print(_summary(f"{gpu} step time, all", [r["time_error_pct"] for r in mine],
                       TIME_TARGET_PCT))  # fmt: skip
        print(_summary(f"{gpu} peak memory", [r["memory_error_pct"] for r in mine],
                       MEMORY_TARGET_PCT))  # fmt: skip
        for role, label in MEGATRON_ROLES.items():
            megatron = [r for r in everything if r["role"] == role]
            if megatron:
                times = [r["time_error_pct"] for r in megatron]
                memory = [r["memory_error_pct"] for r in megatron]
                print(_summary(f"{gpu} {label} step time", times, TIME_TARGET_PCT))
                print(_summary(f"{gpu} {label} peak memory", memory, MEMORY_TARGET_PCT))
        repeated = repeats(table, gpu)
        for config, times in repeated:
            print(f"{gpu} repeated: {config:<42}" + " ".join(f"{t:.4f}" for t in times)
                  + f"  spread {_spread_pct(times):.1f}%")  # fmt: skip
        if repeated:
            spreads = sorted(_spread_pct(times) for _, times in repeated)
            median = spreads[len(spreads) // 2]
            print(f"{gpu} run-to-run spread: {len(repeated)} configurations measured more than "
                  f"once, median {median:.1f}%, max {spreads[-1]:.1f}%")  # fmt: skip
        ooms = [r for r in table if r["gpu"] == gpu and r["oom"]]
        mine = everything
        missed = sum(r["predicted_fits"] for r in ooms)
        print(f"{gpu} out-of-memory runs: {len(ooms)}, predicted to fit: {missed}")
        refused = [r["config"] for r in mine if not r["predicted_fits"]]
        print(f"{gpu} runs that fit but were predicted not to: {len(refused)}"
              + (f" ({', '.join(refused)})" if refused else ""))  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
