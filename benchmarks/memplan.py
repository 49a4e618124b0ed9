"""Memory planning on real allocator snapshots and on autopar's own stage traces.

Snapshots (``hardware_db/profiles/h200-sxm/2026-12-03-h200-allocator-snapshots``: eight
measured H200 runs of plain PyTorch, dense and MoE, with and without activation
checkpointing and expandable segments; ``2026-12-03-h200-megatron-allocator-snapshots``:
fourteen Megatron-Core 0.16.1 runs, dense and MoE, recompute none/selective/full, with
and without expandable segments): the measured ``max_memory_reserved``, the
caching-allocator simulation of the recorded sequence in the run's own mode (and its
error against the measurement), the live-bytes lower bound, our planned placement (and
its distance to the bound) and its solve time. For every run also the simulation of
autopar's own trace of the same step (``planner.memplan.snapshot_runs.own_trace_peak``:
the run's shape, batch, recompute, precision, optimizer and attention as its harness ran
them), its reserved peak and error and the error of its allocated peak: what the fits
verdict would have for a layout nobody ran (``planner.memplan.fits`` trusts it for a
framework only where it is within 3% on every run).

Model layouts (``planner.memplan.memplan``): per stage, the live-bytes bound (equal to
the memory model's allocated peak), the simulated allocator with and without expandable
segments, our placement and its solve time; for the 70B-class stage also the
recompute/offload choice under a budget and its solve time.

Targets (memory-reuse issue): the simulation within 3% of the measured reserved peak on
every snapshot; the placement within 2% of the lower bound where reachable; a 70B-class
stage solved within 30 s on the 2-core development machine.

Run: ``python benchmarks/memplan.py [--time-limit S] [--json-out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from planner import ParallelConfig, WorkloadSpec, load_cluster, load_model
from planner.memplan import memplan
from planner.memplan.allocator import simulate
from planner.memplan.analysis import analyse
from planner.memplan.snapshot import read_snapshot
from planner.memplan.snapshot_runs import (
    MEGATRON_SNAPSHOTS,
    PYTORCH_SNAPSHOTS,
    own_trace_peak,
    snapshot_runs,
)

MIB = 2**20
LAYOUTS: dict[str, dict[str, Any]] = {
    "8b tp2 pp2": {
        "model": "llama-3.1-8b", "gpus": 8, "seq_len": 4096, "global_batch": 64,
        "layout": {"tp": 2, "pp": 2},
    },
    "70b tp8 pp4": {
        "model": "llama-3.1-70b", "gpus": 64, "seq_len": 8192, "global_batch": 512,
        "layout": {"tp": 8, "pp": 4}, "budget_gib": 70.0,
    },
    "70b tp8 pp4 vpp2 sel": {
        "model": "llama-3.1-70b", "gpus": 64, "seq_len": 8192, "global_batch": 512,
        "layout": {"tp": 8, "pp": 4, "vpp": 2, "recompute": "selective",
                   "sequence_parallel": True},
    },
    "70b fsdp torchtitan": {
        "model": "llama-3.1-70b", "gpus": 64, "seq_len": 8192, "global_batch": 128,
        "layout": {"tp": 8, "recompute": "full"}, "framework": "torchtitan",
    },
    "mixtral-8x7b ep4": {
        "model": "mixtral-8x7b", "gpus": 16, "seq_len": 4096, "global_batch": 64,
        "layout": {"tp": 2, "pp": 2, "ep": 4, "sequence_parallel": True},
    },
    "405b tp8 pp9": {
        "model": "llama-3.1-405b", "gpus": 1152, "seq_len": 8192, "global_batch": 2048,
        "layout": {"tp": 8, "pp": 9, "sequence_parallel": True, "recompute": "full"},
    },
    "405b fsdp 126 layers": {
        "model": "llama-3.1-405b", "gpus": 1024, "seq_len": 8192, "global_batch": 1024,
        "layout": {"tp": 8, "recompute": "full"}, "framework": "torchtitan",
    },
}  # fmt: skip


def snapshot_rows(time_limit_s: float) -> list[dict[str, Any]]:
    rows = []
    for where, framework in ((PYTORCH_SNAPSHOTS, "pytorch"), (MEGATRON_SNAPSHOTS, "megatron")):
        for run in snapshot_runs(where):
            snapshot = read_snapshot(run.path)
            own = simulate(snapshot.events, expandable_segments=snapshot.expandable_segments)
            analysis = analyse(snapshot.events, time_limit_s=time_limit_s)
            trace = own_trace_peak(run)
            rows.append({
                "case": run.name,
                "framework": framework,
                **_snapshot_row(run.measured_reserved, run.measured_allocated, own, analysis),
                "own_trace_reserved_mib": trace.simulated_reserved / MIB,
                "own_trace_error": trace.error,
                "own_trace_allocated_error": trace.allocated_error,
            })  # fmt: skip
    return rows


def _snapshot_row(reserved: int, allocated: int, own: Any, analysis: Any) -> dict[str, Any]:
    return {
        "measured_reserved_mib": reserved / MIB,
        "simulated_reserved_mib": own.peak_reserved / MIB,
        "simulation_error": own.peak_reserved / reserved - 1,
        "measured_allocated_mib": allocated / MIB,
        "simulated_allocated_mib": own.peak_allocated / MIB,
        "live_bound_mib": analysis.live_peak / MIB,
        "planned_mib": analysis.planned_peak / MIB,
        "plan_over_bound": analysis.planned_peak / analysis.live_peak - 1,
        "plan_status": analysis.plan_status,
        "solve_s": analysis.solve_s,
        "tensors": analysis.tensors,
    }


def layout_rows(time_limit_s: float) -> list[dict[str, Any]]:
    rows = []
    for case, spec in LAYOUTS.items():
        started = time.perf_counter()
        result = memplan(
            model=load_model(spec["model"]),
            cluster=load_cluster("dgx-h100", gpus=spec["gpus"]),
            workload=WorkloadSpec(seq_len=spec["seq_len"], global_batch=spec["global_batch"]),
            layout=ParallelConfig(**spec["layout"]),
            framework=spec.get("framework", "megatron"),
            stage=0,
            budget_gib=spec.get("budget_gib"),
            time_limit_s=time_limit_s,
        )
        wall = time.perf_counter() - started
        peaks, budget = result.stages[0].peaks, result.stages[0].budget
        rows.append({
            "case": case,
            "stage": 0,
            "tensors": peaks.tensors,
            "live_bound_gib": peaks.live_gib,
            "analytical_allocated_gib": peaks.analytical_allocated_gib,
            "allocator_gib": peaks.allocator_gib,
            "allocator_expandable_gib": peaks.allocator_expandable_gib,
            "planned_gib": peaks.planned_gib,
            "plan_over_bound": peaks.planned_gib / peaks.live_gib - 1,
            "plan_status": peaks.plan_status,
            "placement_s": peaks.solve_s,
            "budget": None if budget is None else budget.model_dump(mode="json"),
            "wall_s": wall,
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per solver call")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    snapshots = snapshot_rows(args.time_limit)
    print("Allocator snapshots (one H200, torch 2.11; megatron-core 0.16.1), MiB")
    print(
        f"{'run':<38}{'measured':>9}{'sim.':>9}{'error':>8}{'live':>9}{'planned':>9}"
        f"{'plan/live':>10}{'solve s':>8}{'tensors':>8}{'own trace':>10}{'error':>8}"
        f"{'alloc.':>8}"
    )
    for r in snapshots:
        trace = (
            f"{r['own_trace_reserved_mib']:>10.0f}{r['own_trace_error']:>+8.2%}"
            f"{r['own_trace_allocated_error']:>+8.2%}"
        )
        print(
            f"{r['case']:<38}{r['measured_reserved_mib']:>9.0f}{r['simulated_reserved_mib']:>9.0f}"
            f"{r['simulation_error']:>+8.2%}{r['live_bound_mib']:>9.0f}{r['planned_mib']:>9.0f}"
            f"{r['plan_over_bound']:>+10.2%}{r['solve_s']:>8.2f}{r['tensors']:>8}{trace}"
        )
    layouts = layout_rows(args.time_limit)
    print("\nautopar stage traces (stage 0), GiB")
    print(
        f"{'layout':<22}{'live':>8}{'alloc.':>8}{'expand.':>8}{'planned':>8}{'plan/live':>10}"
        f"{'solve s':>8}{'wall s':>8}  budget"
    )
    for r in layouts:
        budget = r["budget"]
        note = (
            ""
            if budget is None
            else f"{budget['budget_gib']:g} GiB: +{budget['added_time_s']} s/step, "
            f"{budget['status']}, {budget['solve_s']:.1f} s"
        )
        print(
            f"{r['case']:<22}{r['live_bound_gib']:>8.2f}{r['allocator_gib']:>8.2f}"
            f"{r['allocator_expandable_gib']:>8.2f}{r['planned_gib']:>8.2f}"
            f"{r['plan_over_bound']:>+10.2%}{r['placement_s']:>8.2f}{r['wall_s']:>8.2f}  {note}"
        )
    for framework in ("pytorch", "megatron"):
        mine = [r for r in snapshots if r["framework"] == framework]
        worst = max(abs(r["simulation_error"]) for r in mine)
        print(
            f"\n{framework} snapshots: largest simulation error of the recorded sequences "
            f"{worst:.2%} (target 3%)",
            end="",
        )
        traced = max(abs(r["own_trace_error"]) for r in mine)
        print(f"; of autopar's own trace {traced:.2%}", end="")
    print()
    if args.json_out is not None:
        args.json_out.write_text(json.dumps({"snapshots": snapshots, "layouts": layouts}, indent=2))


if __name__ == "__main__":
    main()
