"""Fixtures of the profiler and reader tests (helpers in ``synthetic_profiles``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from synthetic_profiles import (
    GRID,
    attention_row,
    collective_row,
    gemm_row,
    make_profile,
    memory_row,
)

from planner.cost.profile_schema import KernelProfile


@pytest.fixture
def synthetic() -> Callable[..., KernelProfile]:
    """A profile with a power-law GEMM grid, an attention grid, memory and collectives."""

    def build(**extra: Any) -> KernelProfile:
        gemm = [gemm_row(m, n, k) for m in GRID for n in GRID for k in GRID]
        attention = [
            attention_row(s, h, h // g, d)
            for s in (1024, 2048, 4096)
            for h in (4, 8, 16)
            for g in (1, 4)
            for d in (64, 128)
            if g <= h
        ]
        memory = [memory_row(2**p) for p in range(20, 31, 2)]
        collectives = [collective_row(2**p) for p in range(10, 31, 2)]
        fields: dict[str, Any] = {
            "gemm": gemm, "attention": attention, "memory": memory, "collectives": collectives,
        }  # fmt: skip
        fields.update(extra)
        return make_profile(**fields)

    return build
