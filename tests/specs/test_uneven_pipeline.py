"""Uneven pipeline stages as Megatron-LM splits them: first/last stage sizes and the
account-for-embedding/loss splits, for the published layouts an even split refuses."""

from __future__ import annotations

import json

import pytest

from planner import ParallelConfig, WorkloadSpec, estimate, load_cluster, load_model
from planner.errors import SpecError
from planner.specs.layout import stage_layer_counts, virtual_stage_layer_counts

BOTH = {"account_for_embedding_in_pipeline_split": True, "account_for_loss_in_pipeline_split": True}


@pytest.mark.parametrize(
    ("model", "pp", "fields", "counts"),
    [
        ("llama-3.1-405b", 16, BOTH, [7] + [8] * 14 + [7]),
        ("llama-3.1-405b", 8, BOTH, [15] + [16] * 6 + [15]),
        ("bloom-176b", 12, BOTH, [5] + [6] * 10 + [5]),
        (
            "deepseek-v3",
            16,
            {"first_stage_layers": 1, "last_stage_layers": 4},
            [1] + [4] * 14 + [4],
        ),
        ("llama-3.1-405b", 16, {"account_for_loss_in_pipeline_split": False}, None),
    ],
)
def test_published_splits(model: str, pp: int, fields: dict, counts: list[int] | None) -> None:
    spec = load_model(model)
    layout = ParallelConfig(pp=pp, **fields)
    if counts is None:  # an even split of 126 layers over 16 stages is refused
        with pytest.raises(SpecError, match="divisible by pp"):
            stage_layer_counts(spec, layout)
        return
    assert stage_layer_counts(spec, layout) == counts
    assert sum(counts) == spec.num_layers


def test_accounted_interleaved_split_moves_the_ends_into_the_end_chunks() -> None:
    spec = load_model("gpt-1.7b")  # 24 layers: 24 + 2 = 26 slots do not split over 4 x 2
    with pytest.raises(SpecError, match="divisible by pp"):
        stage_layer_counts(spec, ParallelConfig(pp=4, vpp=2, **BOTH))
    spec = spec.model_copy(update={"num_layers": 30})  # 32 slots, 4 per virtual stage
    layout = ParallelConfig(pp=4, vpp=2, **BOTH)
    assert virtual_stage_layer_counts(spec, layout) == [3, 4, 4, 4, 4, 4, 4, 3]
    assert stage_layer_counts(spec, layout) == [7, 8, 8, 7]


def test_rules_in_words() -> None:
    with pytest.raises(ValueError, match="cannot be combined"):
        ParallelConfig(pp=4, first_stage_layers=2, account_for_embedding_in_pipeline_split=True)
    spec = load_model("llama-3.1-8b")  # 32 + 1 slots do not divide over 4 stages
    with pytest.raises(SpecError, match="num_layers \\+ embedding = 33 layer slots"):
        stage_layer_counts(spec, ParallelConfig(pp=4, account_for_embedding_in_pipeline_split=True))
    spec = spec.model_copy(update={"num_layers": 30})  # 32 slots, 8 per rank, vpp 3
    with pytest.raises(SpecError, match="divisible by vpp"):
        stage_layer_counts(spec, ParallelConfig(pp=4, vpp=3, **BOTH))


def test_memory_and_time_follow_the_split() -> None:
    result = estimate(
        model=load_model("llama-3.1-405b"),
        cluster=load_cluster("dgx-h100", nodes=128),
        workload=WorkloadSpec(seq_len=8192, global_batch=2048),
        layout=ParallelConfig(
            tp=8, pp=16, sequence_parallel=True, distributed_optimizer=True,
            recompute="full", recompute_method="uniform", recompute_num_layers=1, **BOTH,
        ),
    )  # fmt: skip
    stages = result.memory.stages
    spec = load_model("llama-3.1-405b")
    layer = (stages[2].weights_gib - 0) / 8  # a middle stage: 8 layers, bf16 weights
    # the first stage: 7 layers and the embedding (vocab x hidden / tp), bf16
    embedding_gib = 2 * spec.vocab_size * spec.hidden_size / 8 / 2**30
    assert stages[0].weights_gib == pytest.approx(7 * layer + embedding_gib, abs=2e-3)
    assert stages[-1].weights_gib < stages[1].weights_gib
    assert result.config.account_for_embedding_in_pipeline_split is True


def test_cli_flags_with_megatron_names(run_cli) -> None:
    base = (
        "estimate", "--model", "llama-3.1-405b", "--cluster", "dgx-h100", "--nodes", "64",
        "--seq-len", "8192", "--global-batch", "512", "--tp", "8", "--pp", "8",
        "--recompute", "full", "--json",
    )  # fmt: skip
    ours = run_cli(*base, "--first-stage-layers", "15", "--last-stage-layers", "15")
    theirs = run_cli(
        *base, "--decoder-first-pipeline-num-layers", "15", "--decoder-last-pipeline-num-layers",
        "15",
    )  # fmt: skip
    assert ours.exit_code == theirs.exit_code == 0, ours.stderr + theirs.stderr
    assert json.loads(ours.stdout) == json.loads(theirs.stdout)
    accounted = run_cli(
        *base, "--account-for-embedding-in-pipeline-split", "--account-for-loss-in-pipeline-split"
    )
    assert accounted.exit_code == 0, accounted.stderr
    assert json.loads(accounted.stdout)["config"]["account_for_loss_in_pipeline_split"] is True


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--decoder-first-pipeline-num-layers", "0"), "--first-stage-layers"),
        (("--first-stage-layers", "15"), "middle layers"),
        (("--account-for-embedding-in-pipeline-split",), "layer slots must be divisible"),
        (("--pipeline-schedule", "zigzag"), "pipeline_schedule"),
        (("--attention-backend", "fa9"), "--attention-backend"),
    ],
)
def test_bad_values_are_one_line_errors(run_cli, extra, fragment) -> None:
    result = run_cli(
        "estimate", "--model", "llama-3.1-405b", "--cluster", "dgx-h100", "--nodes", "64",
        "--seq-len", "8192", "--global-batch", "512", "--tp", "8", "--pp", "8", *extra,
    )  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
