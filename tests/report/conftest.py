"""Plans to draw: real estimates of small layouts (one stage; four stages interleaved)."""

from __future__ import annotations

from typing import Any

import pytest
from report_estimates import estimate_json


@pytest.fixture(scope="session")
def interleaved_plan() -> dict[str, Any]:
    """Llama-3.1-8B on 8 GPUs: tp 2, pp 4 with 2 virtual stages, 8 micro-batches."""
    return estimate_json(
        "llama-3.1-8b", gpus=8, seq_len=4096, global_batch=8, tp=2, pp=4, vpp=2,
        sequence_parallel=True,
    )  # fmt: skip


@pytest.fixture(scope="session")
def single_stage_plan() -> dict[str, Any]:
    return estimate_json("llama-3.1-8b", gpus=8, seq_len=4096, global_batch=64, tp=2)
