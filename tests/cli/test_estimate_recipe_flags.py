"""``autopar estimate`` with a recipe's allocator and gradient-buffer settings: NVIDIA's
DGX Cloud Llama-3.1-8B recipe on 8 H100s (cp 2, 8192 tokens, distributed optimizer)."""

from __future__ import annotations

import json

import pytest

RECIPE = (
    "estimate", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
    "--seq-len", "8192", "--global-batch", "128", "--cp", "2", "--distributed-optimizer",
)  # fmt: skip


def _memory(run_cli, *flags: str) -> dict:
    result = run_cli(*RECIPE, *flags, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["memory"]


def test_the_recipe_fits_with_expandable_segments_or_a_bf16_gradient_buffer(run_cli) -> None:
    default = _memory(run_cli)
    expandable = _memory(run_cli, "--expandable-segments")
    bf16_grads = _memory(run_cli, "--grad-reduce-in-bf16")
    assert not default["fits"] and expandable["fits"] and bf16_grads["fits"]
    stage, bf16_stage = default["stages"][0], bf16_grads["stages"][0]
    assert bf16_stage["gradients_gib"] * 2 == pytest.approx(stage["gradients_gib"], abs=0.002)
    assert expandable["peak_gib"] < default["peak_gib"]


def test_a_bf16_gradient_buffer_is_megatron_only(run_cli) -> None:
    result = run_cli(*RECIPE, "--framework", "deepspeed", "--grad-reduce-in-bf16")
    assert result.exit_code == 2
    assert "--grad-reduce-in-bf16" in result.stderr and "deepspeed" in result.stderr
