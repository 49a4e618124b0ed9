"""Megatron-LM's ``--microbatch-group-size-per-virtual-pipeline-stage`` (g): the interleaved
schedule runs g consecutive micro-batches through one model chunk before the next
(``get_schedule_table`` in megatron/core/pipeline_parallel/schedules.py) and warms up
2 (p - r - 1) + (v - 1) g forwards (``get_pp_rank_microbatches``). Larger groups keep more
micro-batches in flight (activation memory) and leave the fill and drain as they are, while
hiding more of the point-to-point transfers."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from planner.catalog import load_cluster
from planner.cost.schedule import peak_in_flight, peak_in_flight_walk, rank_ops
from planner.cost.timeline import PipelineTimes, simulate
from planner.emit import emit_files
from planner.emit.megatron import parse_megatron_arguments
from planner.specs.layout import ParallelConfig, layout_violations, resolve_data_parallel
from planner.specs.rules import Rule
from planner.specs.workload import WorkloadSpec

FLAG = "--microbatch-group-size-per-virtual-pipeline-stage"
RUN = (
    "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8", "--seq-len", "2048",
    "--global-batch", "16", "--tp", "2", "--pp", "4", "--vpp", "2",
)  # fmt: skip
"""16 micro-batches on 4 ranks x 2 chunks."""


def megatron_schedule_table(m: int, v: int, g: int) -> list[tuple[int, int]]:
    """Megatron-LM's ``get_schedule_table``, restated: (micro-batch, chunk) per forward."""
    table = []
    for first in range(0, m, g):
        last = m if first + g >= m else first + g
        table += [(mb, chunk) for chunk in range(v) for mb in range(first, last)]
    return table


def _valid(pp: int, m: int, g: int) -> bool:
    return pp <= g <= m and not 0 < m % g < pp


@pytest.mark.parametrize(("pp", "vpp", "m"), [(2, 2, 5), (3, 2, 9), (4, 3, 14), (2, 3, 8)])
def test_op_order_is_megatrons_schedule_table(pp: int, vpp: int, m: int) -> None:
    for g in (g for g in range(pp, m + 1) if _valid(pp, m, g)):
        table = megatron_schedule_table(m, vpp, g)
        for rank in range(pp):
            ops = rank_ops(rank=rank, pp=pp, vpp=vpp, microbatches=m, group=g)
            forwards = [(op.microbatch, op.chunk) for op in ops if op.phase == "F"]
            backwards = [(op.microbatch, vpp - 1 - op.chunk) for op in ops if op.phase == "B"]
            assert forwards == table and backwards == table
            warmup = next(i for i, op in enumerate(ops) if op.phase == "B") - 1
            assert warmup == min(2 * (pp - rank - 1) + (vpp - 1) * g, m * vpp)
            weights = [1.0 + 0.25 * chunk for chunk in range(vpp)]
            fast = peak_in_flight(
                rank=rank, pp=pp, vpp=vpp, microbatches=m, group=g, chunk_bytes=weights
            )
            assert fast == peak_in_flight_walk(
                rank=rank, pp=pp, vpp=vpp, microbatches=m, group=g, chunk_bytes=weights
            )


def test_larger_groups_hold_more_in_flight() -> None:
    pp, vpp, m = 4, 2, 16
    groups = [g for g in range(pp, m + 1) if _valid(pp, m, g)]
    for rank in range(pp):
        held = [peak_in_flight(rank=rank, pp=pp, vpp=vpp, microbatches=m, group=g) for g in groups]
        assert held == sorted(held)
    # the first rank's peak: its warm-up forwards and the one after them
    for g in (4, 8, 16):
        assert peak_in_flight(rank=0, pp=pp, vpp=vpp, microbatches=m, group=g) == min(
            2 * (pp - 1) + (vpp - 1) * g + 1, m * vpp
        )


def test_groups_leave_the_fill_and_drain_and_hide_transfers() -> None:
    pp, vpp, m = 4, 2, 16
    stages = pp * vpp

    def step(g: int, p2p: float) -> float:
        times = PipelineTimes(
            pp=pp, vpp=vpp, microbatches=m, forward_s=(1.0,) * stages,
            backward_s=(2.0,) * stages, p2p_s=p2p, microbatch_group=g,
        )  # fmt: skip
        return simulate(times).step_s

    # free transfers, uniform stages: m v (t_f + t_b) + (p - 1)(t_f + t_b) for every g
    assert {step(g, 0.0) for g in range(pp, m + 1) if _valid(pp, m, g)} == {105.0}
    with_transfers = [step(g, 0.3) for g in (4, 8, 16)]
    assert with_transfers == sorted(with_transfers, reverse=True)
    assert with_transfers[-1] < with_transfers[0]


def _estimate(run_cli, *args: str) -> dict:
    result = run_cli("estimate", *RUN, *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_estimate_memory_grows_with_the_group_and_the_default_is_pp(run_cli) -> None:
    default = _estimate(run_cli)
    same = _estimate(run_cli, FLAG, "4")
    assert same["config"]["microbatch_group_size_per_vp_stage"] == 4
    assert default["config"]["microbatch_group_size_per_vp_stage"] is None
    assert same["memory"] == default["memory"] and same["time"] == default["time"]
    estimates = [default] + [_estimate(run_cli, FLAG, str(g)) for g in (8, 16)]
    for rank in range(4):
        held = [e["memory"]["stages"][rank]["activations_gib"] for e in estimates]
        assert held == sorted(held)
    first = [e["memory"]["stages"][0]["activations_gib"] for e in estimates]
    assert first[0] < first[1] < first[2]
    assert estimates[2]["time"]["pipeline"]["microbatch_group"] == 16
    assert "microbatch_group" not in default["time"]["pipeline"]  # older plan files: same JSON
    schedule = estimates[2]["time"]["pipeline"]
    again = simulate(
        PipelineTimes(
            pp=schedule["pp"],
            vpp=schedule["vpp"],
            microbatches=schedule["microbatches"],
            forward_s=tuple(schedule["forward_s"]),
            backward_s=tuple(schedule["backward_s"]),
            p2p_s=schedule["p2p_s"],
            microbatch_group=schedule["microbatch_group"],
        )
    )
    assert again.step_s <= estimates[2]["time"]["step_time_s"]


def test_plan_file_round_trip_and_megatron_flag(run_cli, tmp_path: Path) -> None:
    planned = _estimate(run_cli, FLAG, "8")
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(planned))
    again = run_cli("estimate", "--plan", str(path), "--json")
    assert again.exit_code == 0 and json.loads(again.stdout) == planned
    args = emit_files(planned, format="megatron")["megatron_args.txt"]
    assert f"{FLAG} 8" in args
    assert FLAG not in emit_files(_estimate(run_cli), format="megatron")["megatron_args.txt"]
    tokens = [token for line in args.splitlines() for token in shlex.split(line)]
    _, layout = parse_megatron_arguments(tokens, num_gpus=8)
    assert layout.microbatch_group_size_per_vp_stage == 8
    deeper = run_cli("estimate", "--plan", str(path), "--vpp", "4", "--json")
    assert deeper.exit_code == 0, deeper.stderr
    assert "microbatch_group_size_per_vp_stage reset with vpp (was 8)" in deeper.stderr
    larger = run_cli("estimate", "--plan", str(path), FLAG, "16", "--json")
    assert larger.exit_code == 0, larger.stderr
    assert f"{FLAG} 16 overrides plan 1's microbatch_group_size 8" in larger.stderr
    assert json.loads(larger.stdout) == _estimate(run_cli, FLAG, "16")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ((FLAG, "3"), "microbatch_group_size_per_vp_stage (3) must be at least pp (4)"),
        ((FLAG, "32"), "at most the micro-batches per step (16)"),
        ((FLAG, "7"), "last group of 16 mod 7 = 2 micro-batches; Megatron-LM needs it empty"),
        ((FLAG, "8", "--vpp", "1"), "applies only to the interleaved schedule"),
        ((FLAG, "8", "--framework", "torchtitan"), "torchtitan has no such setting"),
    ],
)
def test_bad_groups_are_one_line_errors(run_cli, extra, needle) -> None:
    result = run_cli("estimate", *RUN, *extra)
    assert result.exit_code == 2, result.stdout
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_partial_last_group_of_at_least_pp_runs(run_cli) -> None:
    assert _estimate(run_cli, FLAG, "6")["config"]["microbatches"] == 16  # 16 mod 6 = 4 = pp


def test_rules_are_named(tiny_model) -> None:
    with pytest.raises(ValueError, match="applies only to the interleaved"):
        ParallelConfig(pp=4, microbatch_group_size_per_vp_stage=8)
    layout = resolve_data_parallel(
        ParallelConfig(pp=4, vpp=2, microbatch_group_size_per_vp_stage=7), num_gpus=4
    )
    problems = layout_violations(
        model=tiny_model, cluster=load_cluster("dgx-h100", gpus=4),
        workload=WorkloadSpec(seq_len=256, global_batch=16), layout=layout,
    )  # fmt: skip
    assert Rule.MICROBATCH_GROUP_WITHIN_PP_AND_MICROBATCHES in {p.rule for p in problems}
    assert Rule.INTERLEAVED_MICROBATCHES not in {p.rule for p in problems}


def test_memplan_trace_follows_the_groups(run_cli) -> None:
    """The traced lifetimes run the same order: live peak = the analytical allocated peak."""
    args = ("memplan", *RUN, "--stage", "0", "--time-limit", "0.5", "--json")
    live = []
    for group in ("4", "16"):
        result = run_cli(*args, FLAG, group)
        assert result.exit_code == 0, result.stderr
        peaks = json.loads(result.stdout)["stages"][0]["peaks"]
        assert peaks["live_gib"] == peaks["analytical_allocated_gib"]
        live.append(peaks["live_gib"])
    assert live[0] < live[1]


def test_a_group_admits_micro_batches_that_pp_does_not_divide(run_cli) -> None:
    """18 micro-batches on pp 4: refused in groups of pp (18 mod 4 = 2), run in groups of 6
    (Megatron-LM's rule is on the groups, not on pp)."""
    args = (*RUN[:-8], "--global-batch", "18", *RUN[-6:])
    refused = run_cli("estimate", *args)
    assert refused.exit_code == 2 and "multiple of pp (4)" in refused.stderr
    grouped = run_cli("estimate", *args, FLAG, "6", "--json")
    assert grouped.exit_code == 0, grouped.stderr
    planned = json.loads(grouped.stdout)
    assert planned["config"]["microbatches"] == 18
    assert f"{FLAG} 6" in emit_files(planned, format="megatron")["megatron_args.txt"]
