"""Empirical re-ranking: which candidates the measuring script can run, its flags, the
rank agreement, and (with torch) a real run of the script on the CPU."""

from __future__ import annotations

import importlib.util
import itertools

import pytest

from planner import (
    ModelSpec,
    MoESpec,
    ParallelConfig,
    PlanRequest,
    WorkloadSpec,
    load_cluster,
    plan,
)
from planner.errors import SpecError
from planner.refine.hardware import (
    _kendall_tau,
    measurable,
    measure_candidates,
    script_arguments,
)

HAS_TORCH = importlib.util.find_spec("torch") is not None
WORKLOAD = WorkloadSpec(seq_len=128, global_batch=8)


@pytest.fixture
def tiny() -> ModelSpec:
    return ModelSpec(
        name="tiny", num_layers=4, hidden_size=64, num_attention_heads=8, num_kv_heads=2,
        ffn_hidden_size=128, vocab_size=1000, max_position_embeddings=256, rope_theta=10000.0,
    )  # fmt: skip


def test_what_the_measuring_script_can_run(tiny: ModelSpec) -> None:
    assert measurable(tiny, ParallelConfig(dp=1, mbs=2, recompute="full"), gpus=1) is None
    assert measurable(tiny, ParallelConfig(tp=2, dp=1), gpus=2) is None
    assert "selective" in measurable(tiny, ParallelConfig(dp=1, recompute="selective"), gpus=1)
    assert "one kind" in measurable(tiny, ParallelConfig(tp=2, dp=2), gpus=4)
    assert "does not use all" in measurable(tiny, ParallelConfig(tp=2, dp=1), gpus=4)
    assert "virtual stages" in measurable(tiny, ParallelConfig(pp=2, vpp=2, dp=1), gpus=2)
    moe = tiny.model_copy(
        update={"moe": MoESpec(num_experts=4, top_k=2, expert_ffn_hidden_size=64)}
    )
    assert "dense" in measurable(moe, ParallelConfig(dp=1), gpus=1)
    gelu = tiny.model_copy(update={"mlp_activation": "gelu"})
    assert "SwiGLU" in measurable(gelu, ParallelConfig(dp=1), gpus=1)


def test_script_flags_follow_the_layout(tiny: ModelSpec) -> None:
    flags = script_arguments(
        tiny, ParallelConfig(pp=2, dp=1, mbs=2, recompute="full"), WORKLOAD, device="cpu", steps=4
    )
    pairs = dict(zip(flags[::2], flags[1::2], strict=False))
    assert pairs["--num-kv-heads"] == "2" and pairs["--seq-len"] == "128"
    assert pairs["--mbs"] == "2" and pairs["--grad-accum"] == "4"  # 8 sequences / 2 / dp 1
    assert pairs["--mode"] == "pp" and pairs["--recompute"] == "full"
    assert pairs["--device"] == "cpu" and pairs["--steps"] == "4"


def test_kendall_tau_counts_concordant_pairs() -> None:
    assert _kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert _kendall_tau([1, 2, 3], [30, 20, 10]) == -1.0
    assert _kendall_tau([1, 2, 3], [10, 30, 20]) == pytest.approx(1 / 3)
    assert _kendall_tau([1], [1]) is None


def test_a_missing_script_is_a_clear_error(tiny: ModelSpec, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SpecError, match="measuring script"):
        measure_candidates(
            [], model=tiny, cluster=load_cluster("dgx-h100", gpus=1), workload=WORKLOAD,
            script=tmp_path / "absent.py",
        )  # fmt: skip


@pytest.mark.skipif(not HAS_TORCH, reason="the measuring script needs torch (autopar[profile])")
def test_top_plans_measured_on_the_cpu_and_ranked(tiny: ModelSpec) -> None:
    cluster = load_cluster("dgx-h100", gpus=1)
    result = plan(
        PlanRequest(model=tiny, cluster=cluster, workload=WORKLOAD, framework="pytorch", top_k=4)
    )
    ranking = measure_candidates(
        [p.config for p in result.plans], model=tiny, cluster=cluster, workload=WORKLOAD,
        device="cpu", steps=3,
    )  # fmt: skip
    assert [c.rank_predicted for c in ranking.candidates] == list(range(len(result.plans)))
    measured = [c for c in ranking.candidates if c.measured_step_s is not None]
    assert ranking.measured == len(measured) >= 2
    assert sorted(c.rank_measured for c in measured) == list(range(len(measured)))
    by_rank = sorted(measured, key=lambda c: c.rank_measured)
    assert all(a.measured_step_s <= b.measured_step_s for a, b in itertools.pairwise(by_rank))
    for c in ranking.candidates:
        assert (c.measured_step_s is None) == bool(c.note)  # never dropped without a reason
    assert ranking.kendall_tau is not None and -1 <= ranking.kendall_tau <= 1


def test_cli_refuses_a_framework_the_script_does_not_run(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli(
        "plan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "4096", "--global-batch", "64", "--refine-on-hardware", "2",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--framework pytorch" in result.stderr and "Traceback" not in result.stderr
