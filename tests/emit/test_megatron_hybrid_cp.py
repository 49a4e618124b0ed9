"""A plan entry's ``scattering`` block in the Megatron emitter: Megatron-Core's hybrid
context parallel where scattering wins and the layout allows it, the static CP and the
reason otherwise; the flags in the table, read back, and plans without the block as before."""

from __future__ import annotations

import dataclasses
import json

import pytest
from emitter_cases import PLANS, make_plan

from planner.emit.base import EmitError, EmitInput, emit_input_from_estimate
from planner.emit.megatron import (
    MEGATRON_FLAGS,
    MegatronEmitter,
    megatron_arguments,
    megatron_flag_values,
    megatron_hybrid_cp,
    parse_megatron_arguments,
)
from planner.errors import SpecError
from planner.scattering import ScatterSummary

HYBRID = {"--hybrid-context-parallel", "--max-seqlen-per-dp-cp-rank", "--calculate-per-token-loss"}


def summary(*, wins: bool = True) -> ScatterSummary:
    step, static = (1.0, 1.25) if wins else (1.25, 1.25)
    return ScatterSummary(
        lengths_source="test lengths",
        batches=1,
        gpus=16,
        max_seq_len=32768,
        step_time_s=step,
        static_step_time_s=static,
        megatron_hybrid_cp_step_time_s=2.0,
        speedup_over_static=static / step,
        static_degrees=[4],
        sp_sizes=[1, 4, 8] if wins else [],
        wins=wins,
        reason="a reason" if wins else "no faster than the best static degree on these lengths",
        solve_s=0.1,
    )


def plan(*, scattering: ScatterSummary | None, **layout: int) -> EmitInput:
    base = make_plan("llama-3.1-8b", num_gpus=16, seq_len=32768, global_batch=16, **layout)
    return dataclasses.replace(base, scattering=scattering)


def test_winning_scattering_writes_hybrid_cp_and_reads_back() -> None:
    emitted = plan(scattering=summary(), cp=4)
    args = megatron_arguments(emitted)
    given = megatron_flag_values(args)  # every flag in the table, of its kind
    assert set(given) >= HYBRID
    assert given["--max-seqlen-per-dp-cp-rank"] == ("8192",)  # 32768 / cp 4
    for flag in HYBRID:
        assert MEGATRON_FLAGS[flag].source.startswith("megatron/training/arguments.py ")
    assert megatron_hybrid_cp(args) == 8192
    fields, layout = parse_megatron_arguments(args, num_gpus=16)
    plain_fields, plain_layout = parse_megatron_arguments(
        megatron_arguments(plan(scattering=None, cp=4)), num_gpus=16
    )
    assert (fields, layout) == (plain_fields, plain_layout)
    launch = MegatronEmitter().emit(emitted).as_dict()["launch_megatron.sh"]
    assert "  --hybrid-context-parallel\n" in launch
    assert "predicted 1.25x faster than the best static degree" in launch


@pytest.mark.parametrize(
    ("scattering", "layout", "reason"),
    [
        (
            summary(),
            {"cp": 2, "pp": 2},
            "pp > 1: Megatron-Core's hybrid context parallel needs pp = 1",
        ),
        (summary(wins=False), {"cp": 4}, "scattering is no faster than the best static degree"),
    ],
)
def test_otherwise_static_cp_with_the_reason(
    scattering: ScatterSummary, layout: dict[str, int], reason: str
) -> None:
    emitted = plan(scattering=scattering, **layout)
    args = megatron_arguments(emitted)
    assert not HYBRID & set(args)
    assert megatron_hybrid_cp(args) is None
    files = MegatronEmitter().emit(emitted).as_dict()
    launch = files["launch_megatron.sh"]
    comment = next(line for line in launch.splitlines() if "# static cp" in line)
    assert comment.startswith(f"  # static cp {layout['cp']}") and reason in comment
    assert launch.index(comment) < launch.index("--context-parallel-size")
    assert "static cp" not in files["megatron_args.txt"]


def test_without_a_block_the_files_are_as_before() -> None:
    without = plan(scattering=None, cp=4)
    files = MegatronEmitter().emit(without).as_dict()
    assert not HYBRID & set(megatron_arguments(without))
    assert "static cp" not in files["launch_megatron.sh"]
    assert "scattering" not in files["launch_megatron.sh"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hybrid-context-parallel", "--calculate-per-token-loss"], "needs --max-seqlen"),
        (["--hybrid-context-parallel", "--max-seqlen-per-dp-cp-rank", "8"], "needs --calculate"),
        (["--max-seqlen-per-dp-cp-rank", "8"], "only read with --hybrid-context-parallel"),
        (
            [
                "--pipeline-model-parallel-size", "2", "--hybrid-context-parallel",
                "--max-seqlen-per-dp-cp-rank", "8", "--calculate-per-token-loss",
            ],
            "pp > 1",
        ),
    ],
)  # fmt: skip
def test_parse_rejects_incomplete_hybrid_cp(args: list[str], message: str) -> None:
    with pytest.raises(EmitError, match=message):
        megatron_hybrid_cp(args)
    with pytest.raises(EmitError, match=message):
        parse_megatron_arguments(["--num-layers", "2", *args])


def test_plan_file_carries_the_block_to_the_emitter() -> None:
    entry = json.loads((PLANS / "llama-3.1-70b-64xh100.json").read_text())
    assert emit_input_from_estimate(entry).scattering is None
    entry["scattering"] = summary().model_dump(mode="json")
    assert emit_input_from_estimate(entry).scattering == summary()
    entry["scattering"] = {"wins": "maybe"}
    with pytest.raises(SpecError, match="plan file: scattering: lengths_source: required"):
        emit_input_from_estimate(entry)
