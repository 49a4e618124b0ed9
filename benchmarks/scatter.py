"""Sequence scattering against its baselines: predicted step time and solve time.

For each shipped length distribution (``planner/scattering/data``: web text from the FlexSP
Wikipedia sample, code from our measurement of source files in public repositories
(``benchmarks/code_lengths.py``), and two synthetic controls, uniform and fixed) and each
cluster size, ``--batches`` batches of ``--tokens-per-gpu`` x GPUs tokens are sampled
(seed 0, cut at ``--max-seq-len``) and ``planner.scattering`` places them with the
solver's time limit per batch scaled with the cluster (``--time-limit-64`` at 64 GPUs and
below, ``--time-limit-1024`` above). The table: predicted step time of ours and of (a)
the best static degree, (b) Megatron-Core's hybrid-CP scheduler, (c) best-fit-decreasing,
our speed-up over each, the solve time per batch (greedy + CP-SAT + rebalancing, wall
clock on this machine), how many batches fell back to a baseline and how many the solver
proved optimal.

Targets (issue 16): never slower than the best static degree; solve under 1 s per batch
at 64 GPUs and under 10 s at 1,024. Everything is the cost model's prediction (autopar's
memory model and rates; the measured varlen-attention profile where one exists for the
GPU and head shape); nothing runs on a GPU here.

Run: ``python benchmarks/scatter.py [--gpus 8,64,256,1024] [--json-out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from planner import load_cluster, load_model
from planner.scattering import sample_batches
from planner.scattering import scatter as run_scatter

DISTRIBUTIONS = ("wikipedia-flexsp", "code-files", "uniform", "fixed")


def run_case(args: argparse.Namespace, dist: str, gpus: int) -> dict[str, Any]:
    batches = sample_batches(
        dist, batches=args.batches, global_batch_tokens=args.tokens_per_gpu * gpus,
        max_seq_len=args.max_seq_len, seed=0,
    )  # fmt: skip
    limit = args.time_limit_64 if gpus <= 64 else args.time_limit_1024
    started = time.perf_counter()
    result = run_scatter(
        model=load_model(args.model), cluster=load_cluster(args.cluster, gpus=gpus),
        batches=batches, max_seq_len=args.max_seq_len, time_limit_s=limit,
    )  # fmt: skip
    wall = time.perf_counter() - started
    summary = result.summary
    solve = [b.solve_s for b in result.batches]
    return {
        "distribution": dist,
        "gpus": gpus,
        "batches": len(batches),
        "sequences": sum(len(b) for b in batches),
        "tokens": sum(sum(b) for b in batches),
        "time_limit_s": limit,
        "ours_s": summary.step_time_s,
        "static_s": summary.baselines["static"],
        "megatron_hybrid_cp_s": summary.baselines["megatron_hybrid_cp"],
        "best_fit_decreasing_s": summary.baselines["best_fit_decreasing"],
        "speedup_static": summary.speedups["static"],
        "speedup_megatron_hybrid_cp": summary.speedups["megatron_hybrid_cp"],
        "speedup_best_fit_decreasing": summary.speedups["best_fit_decreasing"],
        "solve_mean_s": sum(solve) / len(solve),
        "solve_max_s": max(solve),
        "optimal_batches": summary.optimal_batches,
        "fallback_batches": summary.fallback_batches,
        "methods": sorted({b.method for b in result.batches}),
        "time_source": result.cost.time_source,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--cluster", default="hgx-h200")
    parser.add_argument("--gpus", default="8,64,256,1024")
    parser.add_argument("--distributions", default=",".join(DISTRIBUTIONS))
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--tokens-per-gpu", type=int, default=16384)
    parser.add_argument("--max-seq-len", type=int, default=32768)
    parser.add_argument("--time-limit-64", type=float, default=0.8)
    parser.add_argument("--time-limit-1024", type=float, default=7.0)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    rows = []
    header = (
        f"{'distribution':<17}{'GPUs':>5}{'seqs':>7}{'ours s':>9}{'static':>9}{'mcore':>9}"
        f"{'bfd':>9}{'x static':>9}{'x mcore':>8}{'x bfd':>7}{'solve s':>9}{'max s':>7}"
        f"{'fallback':>9}{'optimal':>8}"
    )
    print(header)
    for dist in args.distributions.split(","):
        for gpus in (int(g) for g in args.gpus.split(",")):
            row = run_case(args, dist, gpus)
            rows.append(row)
            print(
                f"{dist:<17}{gpus:>5}{row['sequences']:>7}{row['ours_s']:>9.3f}"
                f"{row['static_s']:>9.3f}{row['megatron_hybrid_cp_s']:>9.3f}"
                f"{row['best_fit_decreasing_s']:>9.3f}{row['speedup_static']:>9.2f}"
                f"{row['speedup_megatron_hybrid_cp']:>8.2f}{row['speedup_best_fit_decreasing']:>7.2f}"
                f"{row['solve_mean_s']:>9.2f}{row['solve_max_s']:>7.2f}"
                f"{row['fallback_batches']:>6}/{row['batches']:<2}{row['optimal_batches']:>6}/{row['batches']}",
                flush=True,
            )
    worse = [r for r in rows if r["speedup_static"] < 1 - 1e-9]
    slow64 = [r for r in rows if r["gpus"] <= 64 and r["solve_max_s"] > 1.0]
    slow1024 = [r for r in rows if r["gpus"] > 64 and r["solve_max_s"] > 10.0]
    print(
        f"targets: slower than static in {len(worse)} case(s); solve over 1 s at <= 64 GPUs in "
        f"{len(slow64)}; over 10 s above 64 GPUs in {len(slow1024)}. Time: {rows[0]['time_source']}"
    )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
