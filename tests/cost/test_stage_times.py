"""The cached per-kind stage timing equals timing every op of the stage."""

from __future__ import annotations

import pytest

from planner import ParallelConfig, load_gpu, load_model
from planner.cost.compute import total_time
from planner.cost.frameworks import implementation, state_layout
from planner.cost.rates import rates_for
from planner.cost.stage_work import stage_times, stage_work


@pytest.mark.parametrize(
    "model_name", ["llama-3.1-8b", "mixtral-8x7b", "deepseek-v3", "gemma-2-9b"]
)
@pytest.mark.parametrize(
    "layout",
    [
        ParallelConfig(tp=2, sequence_parallel=True),
        ParallelConfig(tp=4, recompute="selective", mbs=2),
        ParallelConfig(cp=2, recompute="full"),
        ParallelConfig(recompute="full", recompute_method="block", recompute_num_layers=2),
    ],
)
def test_stage_times_match_stage_work(model_name: str, layout: ParallelConfig) -> None:
    model = load_model(model_name)
    impl = implementation(framework="megatron", layout=state_layout("megatron"), precision="bf16")
    rates = rates_for(load_gpu("h100-sxm"), "bf16")
    layers = list(range(min(6, model.num_layers)))
    for first, last in ((True, False), (False, True), (True, True)):
        work = stage_work(
            model, layers, first=first, last=last, layout=layout, seq_len=4096, impl=impl
        )
        times = stage_times(
            model, layers, first=first, last=last, layout=layout, seq_len=4096, impl=impl,
            rates=rates,
        )  # fmt: skip
        assert times.forward_s == pytest.approx(total_time(list(work.forward), rates), rel=1e-9)
        assert times.backward_s == pytest.approx(total_time(list(work.backward), rates), rel=1e-9)
        flops = sum(w.flops for w in work.forward) + sum(w.flops for w in work.backward)
        assert times.flops == pytest.approx(flops, rel=1e-9)
