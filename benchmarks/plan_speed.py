"""Wall time of ``planner.plan`` (in process) for the planner issue's reference cases.

For each case it reports the whole search (enumerating the legal layouts, costing every
one with the full cost model, CP-SAT choosing the top plans), the CP-SAT share of it, and
the number of layouts. Today the planner costs every legal layout (it is its own
brute-force reference), so the enumeration column is the brute-force time.

Targets (planner issue, 2-core machine): at most 2 s for 70B on 64 GPUs and at most 10 s
for 405B on 16,384 H100s, with ``optimal: true``.

Run: ``python benchmarks/plan_speed.py [--cases 8b-8,70b-64] [--time-limit S] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from planner import Infeasible, WorkloadSpec, load_cluster, load_model, plan
from planner.cost.rates import fitted_efficiencies

CASES: dict[str, dict[str, Any]] = {
    "8b-8": {"model": "llama-3.1-8b", "gpus": 8, "seq_len": 4096, "global_batch": 64},
    "70b-64": {"model": "llama-3.1-70b", "gpus": 64, "seq_len": 4096, "global_batch": 256},
    "405b-1024": {"model": "llama-3.1-405b", "gpus": 1024, "seq_len": 8192, "global_batch": 2048},
    "405b-16384": {
        "model": "llama-3.1-405b", "gpus": 16384, "seq_len": 8192, "global_batch": 2048,
    },
    "mixtral-8x22b-256": {
        "model": "mixtral-8x22b", "gpus": 256, "seq_len": 4096, "global_batch": 512,
    },
    "deepseek-v3-2048": {
        "model": "deepseek-v3", "gpus": 2048, "seq_len": 4096, "global_batch": 4096,
    },
}  # fmt: skip


def run_case(name: str, *, time_limit_s: float) -> dict[str, Any]:
    case = CASES[name]
    started = time.perf_counter()
    try:
        result = plan(
            model=load_model(case["model"]),
            cluster=load_cluster("dgx-h100", gpus=case["gpus"]),
            workload=WorkloadSpec(seq_len=case["seq_len"], global_batch=case["global_batch"]),
            top_k=5,
            time_limit_s=time_limit_s,
        )
    except Infeasible as error:
        return {"case": name, "wall_s": time.perf_counter() - started, "error": str(error)}
    search = result.search.model_dump()
    best = result.plans[0]
    return {
        "case": name,
        "wall_s": round(time.perf_counter() - started, 3),
        "solver_wall_s": search["solver_wall_s"],
        "layouts_legal": search["layouts_legal"],
        "layouts_evaluated": search["layouts_evaluated"],
        "optimal": search["optimal"],
        "best_step_s": best.time.step_time_s,
        "best_mfu": best.time.mfu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    names = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = [name for name in names if name not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    fitted_efficiencies("h100-sxm")  # fit the rates once, outside the timed cases
    rows = [run_case(name, time_limit_s=args.time_limit) for name in names]
    print(f"{'case':<20}{'wall s':>9}{'CP-SAT s':>10}{'legal':>8}{'costed':>8}  optimal  best")
    for row in rows:
        if "error" in row:
            print(f"{row['case']:<20}{row['wall_s']:>9.2f}  infeasible: {row['error'][:80]}")
            continue
        print(
            f"{row['case']:<20}{row['wall_s']:>9.2f}{row['solver_wall_s']:>10.2f}"
            f"{row['layouts_legal']:>8}{row['layouts_evaluated']:>8}  {row['optimal']!s:<7}  "
            f"{row['best_step_s']:.3f} s/step, MFU {row['best_mfu']:.1%}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
