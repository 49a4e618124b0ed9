"""End-to-end tests of ``autopar estimate``: the issue's example, the table, the errors.

Every user error is one line on stderr, ``autopar: error: ...``, exit code 2, and names
the rule it breaks (planner/cli/app.py).
"""

from __future__ import annotations

import json

import pytest

ISSUE_EXAMPLE = (
    "estimate", "--model", "llama-3.1-70b", "--cluster", "dgx-h100", "--nodes", "8",
    "--seq-len", "8192", "--global-batch", "512", "--tp", "8", "--pp", "4", "--mbs", "1",
    "--recompute", "selective", "--sequence-parallel", "--distributed-optimizer",
)  # fmt: skip
ISSUE_MEMORY_KEYS = {"capacity_gib", "peak_gib", "fits", "stages"}
ISSUE_STAGE_KEYS = {
    "stage", "weights_gib", "gradients_gib", "optimizer_gib", "activations_gib", "other_gib",
    "total_gib",
}  # fmt: skip
EIGHT_B = ("estimate", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--seq-len", "8192")


def test_issue_example_json(run_cli) -> None:
    result = run_cli(*ISSUE_EXAMPLE, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    data = json.loads(result.stdout)  # --json prints JSON and nothing else
    assert set(data) == {"config", "memory", "time"}
    config, memory = data["config"], data["memory"]
    # 8 nodes x 8 GPUs = 64 = tp 8 x pp 4 x dp 2; 512 sequences / (mbs 1 x dp 2) = 256
    assert config["num_gpus"] == 64 and config["nodes"] == 8
    assert (config["tp"], config["pp"], config["dp"], config["cp"]) == (8, 4, 2, 1)
    assert config["microbatches"] == 256
    assert config["global_batch_tokens"] == 512 * 8192
    assert config["recompute"] == "selective" and config["sequence_parallel"] is True
    assert config["distributed_optimizer"] is True and config["state_layout"] == "megatron"
    # the issue's keys (the report adds headroom, reserve source and per-stage details)
    assert set(memory) >= ISSUE_MEMORY_KEYS
    # the measured H100 profile: torch reports total_memory 85,017,493,504 bytes
    assert memory["capacity_gib"] == 79.179
    assert isinstance(memory["fits"], bool) and memory["fits"] is True
    stages = memory["stages"]
    assert len(stages) == 4
    assert [stage["stage"] for stage in stages] == [0, 1, 2, 3]
    for stage in stages:
        assert set(stage) >= ISSUE_STAGE_KEYS
        assert all(isinstance(stage[key], float) for key in ISSUE_STAGE_KEYS - {"stage"})
    assert memory["peak_gib"] == max(stage["total_gib"] for stage in stages)
    # 1F1B: the first stage keeps p = 4 micro-batches in flight, the last one
    assert (
        stages[0]["activations_gib"] > stages[1]["activations_gib"] > stages[2]["activations_gib"]
    )


def test_issue_example_table_says_it_fits(run_cli) -> None:
    result = run_cli(*ISSUE_EXAMPLE)
    assert result.exit_code == 0, result.stderr
    assert "Fits: peak" in result.stdout and "NOT" not in result.stdout
    assert "llama-3.1-70b on 64 x h100-sxm: tp 8 pp 4 dp 2" in result.stdout.replace("\n", " ")


def test_table_says_when_it_does_not_fit(run_cli) -> None:
    result = run_cli(
        "estimate", "--model", "llama-3.1-405b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "8192", "--global-batch", "64", "--tp", "8",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "Does NOT fit: peak" in result.stdout and "exceeds 79.18 GiB" in result.stdout


def test_global_batch_tokens_with_a_suffix(run_cli) -> None:
    # 16M = 16 x 2^20 = 16_777_216 tokens = 2048 sequences of 8192
    result = run_cli(*EIGHT_B, "--gpus", "8", "--tp", "8", "--global-batch-tokens", "16M", "--json")
    assert result.exit_code == 0, result.stderr
    config = json.loads(result.stdout)["config"]
    assert config["global_batch"] == 2048
    assert config["global_batch_tokens"] == 16_777_216
    assert config["microbatches"] == 2048  # dp 1, mbs 1


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("autopar: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        pytest.param(
            (*EIGHT_B, "--gpus", "24", "--tp", "3", "--global-batch", "64"),
            ("num_attention_heads (32) must be divisible by tp (3)",),
            id="heads-tp",
        ),
        pytest.param(
            (*EIGHT_B, "--gpus", "24", "--pp", "3", "--global-batch", "64"),
            ("num_layers (32) must be divisible by pp (3)",),
            id="layers-pp",
        ),
        pytest.param(
            (*EIGHT_B, "--gpus", "8", "--global-batch", "12"),
            ("global batch (12 sequences) must be divisible by mbs x dp = 1 x 8 = 8",),
            id="batch-mbs-dp",
        ),
        pytest.param(
            (*EIGHT_B, "--gpus", "8", "--global-batch", "64", "--sequence-parallel"),
            ("sequence_parallel requires tp > 1",),
            id="sp-without-tp",
        ),
        pytest.param(
            (*EIGHT_B, "--gpus", "8", "--global-batch", "64", "--framework", "jax"),
            ("--framework: unknown 'jax'", "megatron, deepspeed, torchtitan, pytorch"),
            id="unknown-framework",
        ),
        pytest.param(
            (*EIGHT_B, "--gpus", "8", "--global-batch-tokens", "1000"),
            ("global_batch_tokens (1000) must be a multiple of seq_len (8192)",),
            id="tokens-not-whole-sequences",
        ),
        pytest.param(
            (*EIGHT_B[:3], "--cluster", "dgx-h999", *EIGHT_B[5:], "--global-batch", "64"),
            ("unknown cluster 'dgx-h999'", "dgx-h100"),
            id="unknown-cluster",
        ),
        pytest.param(
            (*EIGHT_B, "--nodes", "1", "--gpus", "8", "--global-batch", "64"),
            ("give nodes or gpus, not both",),
            id="nodes-and-gpus",
        ),
        pytest.param(
            (*EIGHT_B, "--gpus", "8", "--global-batch-tokens", "16Q"),
            ("--global-batch-tokens: '16Q' is not a whole number",),
            id="bad-suffix",
        ),
        pytest.param(
            (*EIGHT_B, "--gpus", "6", "--tp", "4", "--global-batch", "64"),
            ("the 6 GPUs are not divisible by tp x cp x pp = 4 x 1 x 1 = 4",),
            id="gpus-not-divisible",
        ),
    ],
)
def test_user_errors_are_one_line_naming_the_rule(run_cli, args, fragments) -> None:
    assert_one_line_error(run_cli(*args), *fragments)


def test_interleaved_needs_microbatches_in_whole_groups_of_pp(run_cli) -> None:
    result = run_cli(
        *EIGHT_B, "--gpus", "8", "--tp", "2", "--pp", "4", "--vpp", "2", "--global-batch", "6"
    )
    assert_one_line_error(result, "multiple of pp (4)")
