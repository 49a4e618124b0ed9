"""Recomputation adds exactly the recomputed work's time, for every attention kernel.

Per recompute mode (none, selective, full) and attention implementation (fused flash,
unfused softmax): the backward of a stage minus its backward without recomputation is the
time of the forward work recomputation runs again, nothing more and nothing less. The
selective set is identified here from the work itself, not from the tag the cost model
reads: the work whose cost grows with the square of the sequence (the score products and
the softmax over the scores).
"""

from __future__ import annotations

import pytest

from planner import load_cluster, load_model
from planner.cost.compute import LayerShape, layer_work, total_time
from planner.cost.frameworks import implementation, state_layout
from planner.cost.rates import rates_for
from planner.cost.stage_work import stage_times
from planner.specs.layout import ParallelConfig

SEQ = 2048


def _impl(flash: bool):
    return implementation(
        framework="megatron",
        layout=state_layout("megatron"),
        precision="bf16",
        flash_attention=flash,
    )


def _square_in_sequence(model, flash: bool) -> list[int]:
    """Positions of the forward work whose FLOPs (or bytes) grow 4x when the sequence of
    a one-sequence micro-batch doubles: the work on the s x s scores."""
    shapes = [LayerShape(tokens=n, seq_len=n, tp=1, etp=1, ep=1, cp=1) for n in (SEQ, 2 * SEQ)]
    works = [layer_work(model, 0, shape=shape, impl=_impl(flash)).forward for shape in shapes]
    return [
        i
        for i, (small, large) in enumerate(zip(*works, strict=True))
        if (large.flops or large.bytes) == pytest.approx(4 * (small.flops or small.bytes))
    ]


@pytest.mark.parametrize("flash", [True, False], ids=["flash", "unfused"])
@pytest.mark.parametrize("mode", ["none", "selective", "full"])
def test_recompute_adds_exactly_the_recomputed_work(mode: str, flash: bool) -> None:
    model = load_model("gpt-1.7b")
    rates = rates_for(load_cluster("dgx-h100", gpus=8).gpu, "bf16")
    full = mode == "full"
    layout = ParallelConfig(
        recompute=mode,
        recompute_method="uniform" if full else None,
        recompute_num_layers=1 if full else None,
    )
    base = ParallelConfig()
    times = [
        stage_times(
            model, [0], first=False, last=False, layout=each, seq_len=SEQ, impl=_impl(flash),
            rates=rates,
        )
        for each in (layout, base)
    ]  # fmt: skip
    shape = LayerShape(tokens=SEQ, seq_len=SEQ, tp=1, etp=1, ep=1, cp=1)
    forward = list(layer_work(model, 0, shape=shape, impl=_impl(flash)).forward)
    if mode == "none":
        recomputed = []
    elif mode == "full":
        recomputed = forward
    else:
        recomputed = [forward[i] for i in _square_in_sequence(model, flash)]
        # the attention core: the fused kernel, or two products and the softmax pass
        assert [w.kind for w in recomputed] == (["attention"] if flash else
                                                ["gemm", "gemm", "memory"])  # fmt: skip
    added = times[0].backward_s - times[1].backward_s
    assert added == pytest.approx(total_time(recomputed, rates), rel=1e-12, abs=1e-15)
    assert times[0].forward_s == times[1].forward_s


def test_unfused_selective_recompute_costs_time() -> None:
    """GPT-3 175B on TP8 PP8 VPP3 (Korthikanti et al. 2022, Table 5 layout), unfused
    attention: selective recomputation is slower than none (it used to cost nothing)."""
    from planner import WorkloadSpec, estimate

    def step(recompute: str) -> float:
        layout = ParallelConfig(tp=8, pp=8, vpp=3, sequence_parallel=True, recompute=recompute)
        return estimate(
            model=load_model("gpt-175b"),
            cluster=load_cluster("dgx-a100", gpus=512),
            workload=WorkloadSpec(seq_len=2048, global_batch=512),
            layout=layout,
            flash_attention=False,
        ).time.step_time_s

    assert step("selective") > step("none")


def test_tag_stays_with_the_forward() -> None:
    model = load_model("gpt-1.7b")
    shape = LayerShape(tokens=SEQ, seq_len=SEQ, tp=1, etp=1, ep=1, cp=1)
    work = layer_work(model, 0, shape=shape, impl=_impl(False))
    assert not any(w.attention_core for w in work.backward)
    assert sum(w.attention_core for w in work.forward) == 3
