"""Expert placement: balancedness, cross-node traffic and solve time against the baselines.

For each case ``place_experts`` (the CP-SAT program of ``solvers.expert_placement``) is
compared with contiguous placement and with our EPLB greedy, hierarchical (when the expert
groups divide over the nodes) and global, on the same loads:

- balancedness: mean over layers of (mean GPU load / busiest GPU load), 1 is perfect;
- straggler: the busiest GPU's tokens summed over layers (what the step waits for);
- cross-node: all-to-all bytes that cross nodes when tokens continue from their previous
  expert's GPU (only for cases with inter-layer affinity);
- the solver's status, proven gap and wall time (including its warm start).

Loads: ``lognormal`` draws every expert's load from a log-normal distribution (sigma 1,
median 1000 tokens, seeded), as the EPLB measurement this project took on DeepSeek-V3-
sized inputs; ``zipf:S`` is the synthetic router of ``planner.experts.synthetic``; ``trace``
is the routing of the small MoE trained on the H200 (hardware_db/profiles/h200-sxm/
2026-12-03-h200-moe-routing).

Targets (issue): never worse than the greedy balancer on its own objective (the straggler);
the DeepSeek-V3-sized cases (58 MoE layers x 256 experts on 32 and 64 GPUs) solved or
bounded within 1% in under 10 s on the project's 2-core machine.

Run: ``python benchmarks/expert_placement.py [--cases NAME,...] [--json-out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

import hardware_db
from planner import load_cluster, load_model, place_experts
from planner.experts import RoutingStats, read_trace, stats_from_traces, synthetic_stats

TRACE = Path(str(hardware_db.profiles_dir())) / "h200-sxm" / "2026-12-03-h200-moe-routing"

# name: (layers, experts, ep, redundant experts, routing, objective, groups, time limit s)
CASES: dict[str, tuple[int, int, int, int, str, str, int | None, float]] = {
    "8e-8gpu": (8, 8, 8, 8, "zipf:1.0", "balance", None, 5),
    "16e-8gpu": (8, 16, 8, 8, "lognormal", "balance", None, 5),
    "64e-16gpu": (8, 64, 16, 16, "lognormal", "balance", 4, 5),
    "128e-32gpu": (8, 128, 32, 32, "zipf:0.8", "balance", 8, 5),
    "256e-64gpu": (8, 256, 64, 64, "lognormal", "balance", 8, 5),
    "trace-16e-8gpu": (4, 16, 8, 8, "trace", "balance", None, 5),
    "trace-16e-4gpu": (4, 16, 4, 4, "trace", "balance", None, 5),
    "traffic-16e-16gpu": (4, 16, 16, 0, "zipf:0.5,affinity:0.7", "both", None, 10),
    "traffic-64e-16gpu": (4, 64, 16, 0, "zipf:0.5,affinity:0.7", "both", None, 10),
    "dsv3-32gpu": (58, 256, 32, 32, "lognormal", "balance", 8, 10),
    "dsv3-64gpu": (58, 256, 64, 64, "lognormal", "balance", 8, 10),
    "dsv3-32gpu-zipf": (58, 256, 32, 32, "zipf:1.0", "balance", 8, 10),
}
DSV3 = ("dsv3-32gpu", "dsv3-64gpu", "dsv3-32gpu-zipf")
TARGET_GAP = 0.01
"""The DeepSeek-V3-sized cases stop once bounded within the target's 1%; the others at
the command line's default of 0.1%."""


def _model(layers: int, experts: int) -> Any:
    """DeepSeek-V3's shapes with ``layers`` MoE layers of ``experts`` routed experts."""
    spec = load_model("deepseek-v3")
    moe = spec.moe.model_copy(update={"num_experts": experts, "first_dense_layers": 0})
    return spec.model_copy(update={"num_layers": layers, "moe": moe, "mtp_layers": 0})


def _routing(kind: str, layers: int, experts: int, top_k: int) -> RoutingStats:
    if kind == "trace":
        return stats_from_traces([read_trace(TRACE / "topk.npy")], experts=experts, source="trace")
    if kind == "lognormal":
        rng = np.random.default_rng(0)
        loads = np.round(rng.lognormal(np.log(1000), 1.0, (layers, experts))).astype(int)
        return RoutingStats(loads=loads.tolist(), source="lognormal sigma 1")
    return synthetic_stats(f"{kind},seed:0", layers=layers, experts=experts, top_k=top_k)


def run_case(name: str) -> dict[str, Any]:
    layers, experts, ep, replicas, routing, objective, groups, limit = CASES[name]
    model = _model(layers, experts)
    top_k = min(8, experts // 2)
    stats = _routing(routing, layers, experts, top_k)
    cluster = load_cluster("hgx-h200", gpus=max(ep, 8))
    started = time.perf_counter()
    result = place_experts(
        model=model, cluster=cluster, ep=ep, routing=stats, replicas=replicas,
        objective=objective, groups=groups, time_limit_s=limit,
        relative_gap=TARGET_GAP if name in DSV3 else 1e-3,
    )  # fmt: skip
    wall = time.perf_counter() - started
    rows = {b.name: b for b in result.baselines}
    greedy = [rows[n] for n in ("greedy_hierarchical", "greedy_global") if n in rows]
    return {
        "case": name,
        "layers": layers,
        "experts": experts,
        "gpus": ep,
        "nodes": result.nodes,
        "redundant": replicas,
        "routing": routing,
        "objective": objective,
        "status": result.status,
        "gap": result.gap,
        "solve_s": result.solve_s,
        "wall_s": wall,
        "placements": {n: b.model_dump() for n, b in rows.items()},
        "never_worse_than_greedy": all(
            rows["ours"].straggler_tokens <= g.straggler_tokens * (1 + 1e-12) for g in greedy
        ),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[dict[str, Any]]) -> None:
    header = (
        f"{'case':<20} {'L':>3} {'E':>4} {'G':>3} {'N':>2} {'R':>3} {'contig':>7} "
        f"{'g-hier':>7} {'g-glob':>7} {'ours':>7} {'vs best greedy':>14} {'xnode ours/contig':>17} "
        f"{'gap':>7} {'status':<22} {'wall s':>7} ok"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        p = r["placements"]
        bal = {n: p[n]["balancedness"] if n in p else None for n in
               ("contiguous", "greedy_hierarchical", "greedy_global", "ours")}  # fmt: skip
        greedy = min(p[n]["straggler_tokens"] for n in p if n.startswith("greedy"))
        gain = greedy / p["ours"]["straggler_tokens"]
        cross = p["ours"]["affinity_bytes_across_nodes"]
        contig = p["contiguous"]["affinity_bytes_across_nodes"]
        xnode = None if cross is None or not contig else cross / contig
        print(
            f"{r['case']:<20} {r['layers']:>3} {r['experts']:>4} {r['gpus']:>3} {r['nodes']:>2} "
            f"{r['redundant']:>3} {_fmt(bal['contiguous'], '.3f'):>7} "
            f"{_fmt(bal['greedy_hierarchical'], '.3f'):>7} {_fmt(bal['greedy_global'], '.3f'):>7} "
            f"{_fmt(bal['ours'], '.3f'):>7} {gain:>13.4f}x {_fmt(xnode, '.3f'):>17} "
            f"{r['gap']:>7.3%} {r['status']:<22} {r['wall_s']:>7.2f} "
            f"{'yes' if r['never_worse_than_greedy'] else 'NO'}"
        )
    for r in results:
        if r["case"] in DSV3:
            met = r["wall_s"] < 10 and (r["gap"] <= 0.01)
            print(
                f"target {r['case']}: gap {r['gap']:.3%} (<= 1%) in {r['wall_s']:.2f} s "
                f"(< 10 s): {'met' if met else 'MISSED'}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--json-out", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    names = [n for n in args.cases.split(",") if n]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {', '.join(CASES)}")
    results = [run_case(name) for name in names]
    print_table(results)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
