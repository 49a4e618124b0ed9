"""planner.specs.limits: one set of bounds, enforced by the specs themselves."""

from __future__ import annotations

import math
import time

import pytest
from pydantic import ValidationError

from planner.catalog import load_cluster
from planner.search.candidates import divisors
from planner.specs import ModelSpec, WorkloadSpec
from planner.specs import limits as L


def test_divisors_of_a_billion_take_square_root_steps() -> None:
    started = time.perf_counter()
    found = divisors(10**9)
    assert time.perf_counter() - started < 1.0
    assert found == [d for d in range(1, 10**5) if 10**9 % d == 0] + sorted(
        10**9 // d for d in range(1, 10**5) if 10**9 % d == 0 and 10**9 // d >= 10**5
    )
    assert divisors(1) == [1] and divisors(36) == [1, 2, 3, 4, 6, 9, 12, 18, 36]
    assert divisors(2**31 - 1) == [1, 2**31 - 1]  # a prime


@pytest.mark.parametrize(
    "fields",
    [
        {"seq_len": L.MAX_SEQ_LEN + 1, "global_batch": 1},
        {"seq_len": 1, "global_batch": L.MAX_GLOBAL_BATCH + 1},
        {"seq_len": 2, "global_batch_tokens": 2 * (L.MAX_GLOBAL_BATCH + 1)},
    ],
)
def test_workload_bounds(fields: dict[str, int]) -> None:
    with pytest.raises(ValidationError, match=str(L.MAX_GLOBAL_BATCH) + "|" + str(L.MAX_SEQ_LEN)):
        WorkloadSpec(**fields)


def test_cluster_bound() -> None:
    assert load_cluster("dgx-h100", gpus=L.MAX_GPUS).num_gpus == L.MAX_GPUS
    with pytest.raises(Exception, match="num_gpus"):
        load_cluster("dgx-h100", gpus=L.MAX_GPUS + 8)


def test_parameter_bound(tiny_model: ModelSpec) -> None:
    fields = tiny_model.model_dump()
    huge = {
        **fields,
        "hidden_size": 16384,
        "num_attention_heads": 128,
        "num_kv_heads": 8,
        "num_layers": 64,
        "moe": {"num_experts": 4096, "top_k": 2, "expert_ffn_hidden_size": 131072},
    }
    with pytest.raises(ValidationError, match="parameters, more than the bound"):
        ModelSpec(**huge)
    with pytest.raises(ValidationError, match="less than or equal to"):
        ModelSpec(**{**fields, "hidden_size": L.MAX_WIDTH * 2})


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_specs_refuse_non_finite_numbers(tiny_model: ModelSpec, value: float) -> None:
    with pytest.raises(ValidationError, match="finite number"):
        ModelSpec(**{**tiny_model.model_dump(), "norm_epsilon": value})


def test_checks_name_the_field() -> None:
    for bad in (0.0, math.nan, L.MAX_TIME_LIMIT_S + 1):
        with pytest.raises(ValueError, match="time_limit"):
            L.check_time_limit(bad)
    with pytest.raises(ValueError, match="top_k"):
        L.check_top_k(L.MAX_TOP_K + 1)
    with pytest.raises(ValueError, match="token_budget"):
        L.check_budget(token_budget=math.inf, price_per_gpu_hour=None, deadline_hours=None)
    with pytest.raises(ValueError, match="name"):
        L.check_name("a/b")
    assert L.check_name("llama-3.1-8b") == "llama-3.1-8b"
