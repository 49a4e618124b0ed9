"""The default memory margin, the step-time bands and the robust order of plans.

The margin and bands are the validation benchmarks' worst errors
(``planner.accuracy``); the robust order (``planner.search.robust``) moves a plan ahead
of the fastest only when the fastest's predicted gain is inside that band.
"""

from __future__ import annotations

import pytest

from planner import WorkloadSpec, load_cluster, load_model
from planner.accuracy import (
    HOST_BOUND_TIME_BAND,
    TIME_BAND,
    borrowed_rates_note,
    default_headroom,
    regime,
    resolve_headroom,
    time_band,
)
from planner.search.driver import search
from planner.search.robust import CP_PAYS_FROM_TOKENS, broken_conventions, robustness

EIGHT_B_8 = dict(
    model=load_model("llama-3.1-8b"),
    cluster=load_cluster("dgx-h100", gpus=8),
    workload=WorkloadSpec(seq_len=4096, global_batch=64),
)


def test_default_headroom_is_the_frameworks_worst_memory_error_of_the_capacity() -> None:
    megatron = default_headroom(framework="megatron", capacity_gib=79.18)
    # 3.41% (the two-GPU harness's worst) of 79.18 GiB = 2.700 GiB, rounded up to 0.01
    assert megatron.gib == pytest.approx(2.71)
    assert "3.41%" in megatron.basis and megatron.default
    # DeepSpeed was never measured: the worst error the model showed on an implementation
    # at its first measurement
    deepspeed = default_headroom(framework="deepspeed", capacity_gib=79.18)
    assert deepspeed.gib == pytest.approx(9.81) and "12.38%" in deepspeed.basis
    # Megatron's local layer spec (unfused attention): its one-GPU steps are within 0.53%,
    # so the two-GPU worst sizes it too
    local = default_headroom(framework="megatron", capacity_gib=79.18, layer_spec="local")
    assert local.gib == pytest.approx(2.71) and "0.53%" in local.basis


def test_explicit_headroom_is_kept_as_asked() -> None:
    assert resolve_headroom(0.0, framework="megatron", capacity_gib=79.18).gib == 0.0
    assert "none, as asked" in resolve_headroom(0.0, framework="megatron", capacity_gib=79).basis
    assert resolve_headroom(5.0, framework="megatron", capacity_gib=79.18).gib == 5.0


def test_regimes_from_the_time_breakdown() -> None:
    assert regime({"compute": 0.05, "tp_comm": 0.01}) == "host-bound"
    assert regime({"compute": 6.0, "tp_comm": 2.0, "pipeline_bubble": 1.0}) == (
        "communication-bound"
    )
    assert regime({"compute": 8.0, "dp_comm": 0.5, "pipeline_bubble": 1.5}) == "compute-bound"


def test_bands_per_framework_and_regime() -> None:
    own = "kernel profile of h100-sxm (...)"
    borrowed = (
        "kernel profile of h100-sxm scaled to b200's datasheet peaks (no profile of this GPU)"
    )
    assert time_band(framework="megatron", regime_name="compute-bound", rates_source=own).time == (
        TIME_BAND
    )
    assert time_band(framework="deepspeed", regime_name="compute-bound", rates_source=own).time > (
        TIME_BAND
    )
    for name in ("host-bound",):
        band = time_band(framework="megatron", regime_name=name, rates_source=own)
        assert band.time == HOST_BOUND_TIME_BAND
    assert (
        time_band(framework="megatron", regime_name="compute-bound", rates_source=borrowed).time
        == HOST_BOUND_TIME_BAND
    )
    assert borrowed_rates_note(borrowed) == "rates scaled from h100-sxm, unvalidated on b200"
    assert borrowed_rates_note(own) is None


def test_conventions() -> None:
    assert broken_conventions(tp=1, cp=2, ep=1, seq_len=4096, gpus_per_node=8)
    assert not broken_conventions(tp=8, cp=2, ep=1, seq_len=CP_PAYS_FROM_TOKENS, gpus_per_node=8)
    assert broken_conventions(tp=16, cp=1, ep=1, seq_len=4096, gpus_per_node=8)
    assert broken_conventions(tp=2, cp=1, ep=8, seq_len=4096, gpus_per_node=8)


def test_averse_prefers_the_conventional_plan_inside_the_band() -> None:
    """Llama 3.1 8B on 8 H100s at 4K tokens: the fastest prediction uses CP 2 (2,048
    tokens per rank) for a gain of a few percent, inside the +/-10% band; averse risk puts
    a conventional layout first and says why, neutral keeps the fastest."""
    neutral = search(**EIGHT_B_8, top_k=3, risk="neutral")
    averse = search(**EIGHT_B_8, top_k=3)
    fastest, chosen = neutral.plans[0], averse.plans[0]
    assert robustness(fastest.estimate).broken, "the fastest prediction uses CP at 4K tokens"
    assert not robustness(chosen.estimate).broken
    gain = (chosen.time.step_time_s - fastest.time.step_time_s) / chosen.time.step_time_s
    assert 0 < gain <= TIME_BAND
    assert averse.search.risk == "averse" and averse.search.robust is not None
    assert averse.search.robust.best_step_s == fastest.time.step_time_s
    assert "Chosen for robustness (--risk averse)" in chosen.explanation
    assert "cp 2 at 4096 tokens" in chosen.explanation
    # every plan carries its band, and the default margin is kept by every plan
    assert chosen.uncertainty is not None and chosen.uncertainty.step_time_band == TIME_BAND
    low, high = chosen.uncertainty.step_time_range_s
    assert low < chosen.time.step_time_s < high
    kept = averse.search.headroom_gib
    assert kept == pytest.approx(2.71)
    assert all(plan.memory.headroom_gib >= kept for plan in averse.plans)


def test_neutral_with_zero_headroom_is_the_old_pure_throughput_answer() -> None:
    pure = search(**EIGHT_B_8, top_k=3, risk="neutral", headroom_gib=0.0)
    times = [plan.time.step_time_s for plan in pure.plans]
    assert times == sorted(times)
    assert pure.search.headroom_gib == 0.0 and pure.search.robust is None
