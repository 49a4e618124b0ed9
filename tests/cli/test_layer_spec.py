"""``--layer-spec``: Megatron-LM's ``--transformer-impl`` on estimate, memplan, plan files,
REST bodies and the Megatron launch files.

``local`` is megatron-core's local layer spec (unfused ``DotProductAttention`` with an fp32
softmax): the s x s scores are kept, so the same layout needs more memory and time than
with Transformer Engine's fused attention. Other frameworks have no layer spec and refuse
the flag in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.catalog import load_cluster, load_model
from planner.emit import emit_files
from planner.predict import estimate
from planner.specs.layout import ParallelConfig
from planner.specs.workload import WorkloadSpec

RUN = (
    "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8", "--seq-len", "2048",
    "--global-batch", "16", "--tp", "2", "--pp", "2",
)  # fmt: skip


def _estimate(run_cli, *args: str) -> dict:
    result = run_cli("estimate", *RUN, *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_local_is_the_predictors_local_spec_and_costs_more(run_cli) -> None:
    local = _estimate(run_cli, "--layer-spec", "local")
    engine = _estimate(run_cli)
    assert local["config"]["layer_spec"] == "local"
    assert local["config"]["flash_attention"] is False  # the local spec has no fused attention
    assert engine["config"]["layer_spec"] == "transformer_engine"
    assert _estimate(run_cli, "--layer-spec", "transformer_engine") == engine
    direct = estimate(
        model=load_model("llama-3.1-8b"),
        cluster=load_cluster("dgx-h100", gpus=8),
        workload=WorkloadSpec(seq_len=2048, global_batch=16),
        layout=ParallelConfig(tp=2, pp=2),
        flash_attention=False,
        layer_spec="local",
    )
    assert local == direct.model_dump(mode="json")
    assert local["memory"]["peak_gib"] > engine["memory"]["peak_gib"]
    assert local["time"]["step_time_s"] > engine["time"]["step_time_s"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (("--layer-spec", "te"), "--layer-spec: unknown 'te'; known: transformer_engine, local"),
        (("--layer-spec", "local", "--framework", "deepspeed"), "deepspeed has none"),
        (("--layer-spec", "transformer_engine", "--framework", "torchtitan"), "torchtitan"),
        (("--layer-spec", "local", "--attention-backend", "cudnn"), "attention backend cudnn"),
        (("--layer-spec", "local", "--precision", "fp8"), "local linears have no fp8"),
        (
            ("--layer-spec", "local", "--sequence-parallel", "--tp-comm-overlap"),
            "tp_comm_overlap runs on Transformer Engine's userbuffers",
        ),
    ],
)
def test_bad_choices_are_one_line_errors(run_cli, extra, needle) -> None:
    result = run_cli("estimate", *RUN, *extra)
    assert result.exit_code == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_plan_file_round_trip_and_override(run_cli, tmp_path: Path) -> None:
    local = _estimate(run_cli, "--layer-spec", "local")
    path = tmp_path / "local.json"
    path.write_text(json.dumps(local))
    again = run_cli("estimate", "--plan", str(path), "--json")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout) == local
    assert again.stderr == ""
    engine = run_cli(
        "estimate", "--plan", str(path), "--layer-spec", "transformer_engine",
        "--flash-attention", "--json",
    )  # fmt: skip
    assert engine.exit_code == 0, engine.stderr
    assert "--layer-spec transformer_engine overrides plan 1's layer_spec local" in engine.stderr
    assert json.loads(engine.stdout) == _estimate(run_cli)


def test_megatron_launch_files_carry_the_layer_spec(run_cli) -> None:
    local = emit_files(_estimate(run_cli, "--layer-spec", "local"), format="megatron")
    engine = emit_files(_estimate(run_cli), format="megatron")
    assert "--transformer-impl local" in local["megatron_args.txt"]
    assert "--transformer-impl" not in engine["megatron_args.txt"]  # Megatron's default: TE


def test_memplan_takes_the_layer_spec(run_cli) -> None:
    args = (*RUN, "--stage", "0", "--time-limit", "0.5", "--json")
    peaks = {}
    for spec in ("local", "transformer_engine"):
        result = run_cli("memplan", *args, "--layer-spec", spec)
        assert result.exit_code == 0, result.stderr
        peaks[spec] = json.loads(result.stdout)["stages"][0]["peaks"]["live_gib"]
    assert peaks["local"] > peaks["transformer_engine"]
    refused = run_cli("memplan", *args, "--layer-spec", "local", "--framework", "torchtitan")
    assert refused.exit_code == 2 and "torchtitan has none" in refused.stderr
