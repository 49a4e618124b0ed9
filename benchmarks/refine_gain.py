"""What Optuna refinement gains over the solver's best plan, in predicted step time.

For each case: ``planner.plan`` (top 5 plans), then ``planner.refine`` seeded with them
for ``--trials`` trials (throughput objective, TPE sampler seed 0, a fresh SQLite study),
and the table: the solver's best predicted step time, the refined best, the gain in
seconds and percent (0 when nothing beat the solver's plan), the trials by status, and the
knobs the best refined plan changed. Both numbers are the cost model's predictions; no
GPU is involved, so the gain is what the cost model believes, not a measurement.

Run: ``python benchmarks/refine_gain.py [--cases 8b-8,70b-64] [--trials N] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

from planner import PlanRequest, WorkloadSpec, load_cluster, load_model, plan
from planner.refine import RefineProblem, refine, seeds_from_plans

CASES: dict[str, dict[str, Any]] = {
    "8b-8": {"model": "llama-3.1-8b", "gpus": 8, "seq_len": 4096, "global_batch": 64},
    "70b-64": {"model": "llama-3.1-70b", "gpus": 64, "seq_len": 4096, "global_batch": 256},
    "mixtral-8x7b-64": {
        "model": "mixtral-8x7b", "gpus": 64, "seq_len": 4096, "global_batch": 256,
    },
    "mixtral-8x22b-256": {
        "model": "mixtral-8x22b", "gpus": 256, "seq_len": 4096, "global_batch": 512,
    },
}  # fmt: skip


def run_case(name: str, *, trials: int, time_limit_s: float, storage: str) -> dict[str, Any]:
    case = CASES[name]
    model = load_model(case["model"])
    cluster = load_cluster("dgx-h100", gpus=case["gpus"])
    workload = WorkloadSpec(seq_len=case["seq_len"], global_batch=case["global_batch"])
    started = time.perf_counter()
    solved = plan(
        PlanRequest(
            model=model, cluster=cluster, workload=workload, top_k=5, time_limit_s=time_limit_s
        )
    )
    plan_s = time.perf_counter() - started
    problem = RefineProblem(
        model=model, cluster=cluster, workload=workload, seeds=seeds_from_plans(solved.plans)
    )
    started = time.perf_counter()
    result = refine(problem, trials=trials, storage=storage, study_name=name, seed=0)
    refine_s = time.perf_counter() - started
    best = result.best[0]
    return {
        "case": name,
        "solver_optimal": solved.search.optimal,
        "plan_s": round(plan_s, 2),
        "refine_s": round(refine_s, 2),
        "solver_step_s": result.solver_best.step_time_s,
        "refined_step_s": best.time.step_time_s,
        "gain_s": result.gain_s,
        "gain_pct": result.gain_pct,
        "counts": result.counts.model_dump(),
        "best_trial": best.trial,
        "changes": best.changes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--trials", type=int, default=150, help="trials per case")
    parser.add_argument("--time-limit", type=float, default=120.0, help="plan time limit, s")
    parser.add_argument("--storage", help="Optuna storage URL (default: a temporary SQLite file)")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    names = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = [name for name in names if name not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        storage = args.storage or f"sqlite:///{Path(scratch) / 'refine_gain.db'}"
        rows = [
            run_case(name, trials=args.trials, time_limit_s=args.time_limit, storage=storage)
            for name in names
        ]
    print(
        f"{'case':<19}{'solver s':>10}{'refined s':>11}{'gain s':>9}{'gain':>8}"
        f"{'trials':>8}{'fit':>5}{'oom':>5}{'rule':>5}{'plan s':>8}{'refine s':>9}  changed"
    )
    for row in rows:
        c = row["counts"]
        changes = ", ".join(f"{k} {a}->{b}" for k, (a, b) in row["changes"].items()) or "-"
        optimal = "" if row["solver_optimal"] else " (solver not proven optimal)"
        print(
            f"{row['case']:<19}{row['solver_step_s']:>10.3f}{row['refined_step_s']:>11.3f}"
            f"{row['gain_s']:>9.3f}{row['gain_pct']:>7.2f}%{c['total']:>8}{c['feasible']:>5}"
            f"{c['infeasible']:>5}{c['illegal']:>5}{row['plan_s']:>8.1f}{row['refine_s']:>9.1f}"
            f"  {changes}{optimal}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
