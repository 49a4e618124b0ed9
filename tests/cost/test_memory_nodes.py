"""The memory model's cached parts (``planner.cost.memory_nodes``): pure functions of frozen
inputs, so a cached answer is the answer computed afresh, whatever was computed before."""

from __future__ import annotations

import dataclasses
import random

import pytest

from planner import ParallelConfig, WorkloadSpec, load_cluster, load_model
from planner.cost import memory_nodes
from planner.cost.keys import intern
from planner.cost.memory_nodes import NodeLayout, graph_view
from planner.predict import memory_stages, prepare
from planner.search.candidates import enumerate_layouts


def _clear() -> None:
    memory_nodes.stage_nodes.cache_clear()
    memory_nodes.stage_params.cache_clear()


def test_equal_values_share_one_handle() -> None:
    model = load_model("llama-3.1-8b")
    cluster = load_cluster("dgx-h100", gpus=8)
    workload = WorkloadSpec(seq_len=4096, global_batch=64)
    graph = prepare(
        model=model, cluster=cluster, workload=workload, layout=ParallelConfig(tp=8)
    ).ctx.graph
    view = graph_view(graph)
    assert view is graph_view(graph)
    # Llama's layers differ only by their index, which the memory model does not read
    assert len({id(handle) for handle in view.layers}) == 1
    assert view.layers[0].value == dataclasses.replace(graph.layers[5], index=0)
    assert intern(graph.embedding) is view.embedding
    assert view.embedding is not view.output


def test_node_layout_reads_the_layout() -> None:
    layout = ParallelConfig(
        tp=2, cp=2, ep=1, mbs=2, sequence_parallel=True, recompute="full",
        recompute_method="block", recompute_num_layers=3,
    )  # fmt: skip
    node_layout = NodeLayout.of(layout)
    assert {name: getattr(layout, name) for name in NodeLayout._fields} == node_layout._asdict()


@pytest.mark.parametrize(
    ("name", "gpus", "seq_len", "batch"),
    [("llama-3.1-8b", 16, 4096, 64), ("mixtral-8x22b", 64, 4096, 128)],
)
def test_a_warm_cache_gives_the_numbers_of_a_cold_one(
    name: str, gpus: int, seq_len: int, batch: int
) -> None:
    """Layouts costed in a random order, sharing cache entries, against each one costed
    with empty caches: the same bytes, bit for bit."""
    model, cluster = load_model(name), load_cluster("dgx-h100", gpus=gpus)
    workload = WorkloadSpec(seq_len=seq_len, global_batch=batch)
    layouts = enumerate_layouts(model, cluster, workload)
    sample = random.Random(gpus).sample(layouts, min(30, len(layouts)))
    prepared = [
        prepare(model=model, cluster=cluster, workload=workload, layout=layout, check=False)
        for layout in sample
    ]
    warm = [memory_stages(p) for p in prepared]
    assert memory_nodes.stage_nodes.cache_info().hits > 0
    for p, expected in zip(prepared, warm, strict=True):
        _clear()
        assert memory_stages(p) == expected
