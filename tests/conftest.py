"""Shared fixtures: small specs and a runner for the command line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from planner.cli.app import main
from planner.specs import ModelSpec


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``autopar ARGS`` in-process through the real entry point and its error boundary."""

    def run(*args: str) -> CliResult:
        try:
            main(list(args))
            code = 0
        except SystemExit as done:
            code = int(done.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def tiny_model() -> ModelSpec:
    """A 4-layer GQA SwiGLU model small enough to count by hand."""
    return ModelSpec(
        name="tiny",
        num_layers=4,
        hidden_size=64,
        num_attention_heads=8,
        num_kv_heads=2,
        ffn_hidden_size=128,
        vocab_size=1000,
        max_position_embeddings=256,
        rope_theta=10000.0,
    )
