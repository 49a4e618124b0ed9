"""The cached per-kind stage timing equals timing each layer's ops as its own stream.

``compute.total_time`` times one stream of ops; a stage's forward is one stream per layer
(and per embedding / output layer), its backward one per layer plus the recomputed forward
(or attention) of each recomputed layer. The reference below times those streams from
``stage_work``'s per-layer ops without the per-kind cache."""

from __future__ import annotations

import pytest

from planner import ParallelConfig, load_gpu, load_model
from planner.cost.compute import embedding_work, head_work, layer_work, total_time
from planner.cost.frameworks import implementation, state_layout
from planner.cost.rates import rates_for
from planner.cost.stage_work import layer_shape, recomputed_positions, stage_times, stage_work


def _reference(model, layers, *, first, last, layout, impl, rates):  # type: ignore[no-untyped-def]
    shape = layer_shape(layout, 4096)
    forward = backward = 0.0
    recomputed = recomputed_positions(layout, len(layers))
    for position, layer_id in enumerate(layers):
        work = layer_work(model, layer_id, shape=shape, impl=impl)
        forward += total_time(list(work.forward), rates)
        backward += total_time(list(work.backward), rates)
        if position in recomputed:
            backward += total_time(list(work.forward), rates)
        elif layout.recompute == "selective":
            backward += total_time([w for w in work.forward if w.kind == "attention"], rates)
    edges = [embedding_work(model, tokens=shape.tokens, impl=impl, tp=layout.tp)] if first else []
    if last:
        edges.append(head_work(model, tokens=shape.tokens, tp=layout.tp, impl=impl))
    for edge in edges:
        forward += total_time(list(edge.forward), rates)
        backward += total_time(list(edge.backward), rates)
    return forward, backward


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
        forward, backward = _reference(
            model, layers, first=first, last=last, layout=layout, impl=impl, rates=rates
        )
        assert times.forward_s == pytest.approx(forward, rel=1e-9)
        assert times.backward_s == pytest.approx(backward, rel=1e-9)
        flops = sum(w.flops for w in work.forward) + sum(w.flops for w in work.backward)
        assert times.flops == pytest.approx(flops, rel=1e-9)
