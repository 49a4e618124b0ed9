"""The search's shortcuts decide as the full computation would.

- ``compute.layer_kinds`` (memoised per model) gives the first layer of each layer's kind,
  as a scan of the layers does;
- ``tabulate``'s memory stops at the first stage that does not fit (``Row.partial``):
  such a row does not fit when costed in full, its GiB is a lower bound, and a row it
  keeps has the very stages of ``memory_stages``;
- ``partition``'s key of a split-solver variant is the axis values of the row
  ``tabulate`` makes of it, so a variant already tabulated is never costed again.
"""

from __future__ import annotations

import random

import pytest

from planner.catalog import load_cluster, load_model
from planner.cost.compute import layer_kinds
from planner.cost.memory import gib
from planner.cost.reserve import usable_capacity_bytes
from planner.predict import memory_stages
from planner.search import partition
from planner.search.candidates import enumerate_layouts
from planner.search.formulation import axis_values
from planner.search.tabulate import _memory_row, complete_partial, tabulate
from planner.specs import WorkloadSpec


@pytest.mark.parametrize("name", ["deepseek-v3", "gemma-2-9b", "llama-3.1-8b", "mixtral-8x22b"])
def test_layer_kinds_are_the_first_layer_of_each_kind(name: str) -> None:
    model = load_model(name)

    def kind(i: int) -> tuple[bool, bool]:
        return model.is_moe_layer(i), model.is_local_attention_layer(i)

    expected = tuple(
        next(j for j in range(model.num_layers) if kind(j) == kind(i))
        for i in range(model.num_layers)
    )
    assert layer_kinds(model) == expected
    assert layer_kinds(model) is layer_kinds(model)  # memoised per model object


@pytest.mark.parametrize("headroom_gib", [0.0, 6.0])
def test_a_stage_that_does_not_fit_ends_the_row_and_decides_as_the_full_memory(
    headroom_gib: float,
) -> None:
    model, cluster = load_model("llama-3.1-70b"), load_cluster("dgx-h100", gpus=32)
    workload = WorkloadSpec(seq_len=8192, global_batch=128)
    layouts = random.Random(3).sample(enumerate_layouts(model, cluster, workload), 60)
    capacity_gib = gib(usable_capacity_bytes(cluster.gpu)[0])
    partial = 0
    for layout in layouts:
        row = _memory_row(
            layout, model=model, cluster=cluster, workload=workload, framework="megatron",
            headroom_gib=headroom_gib, capacity_gib=capacity_gib,
        )  # fmt: skip
        full = memory_stages(row.prepared)
        peak_gib = gib(max(stage.total for stage in full))
        fits = peak_gib + headroom_gib - capacity_gib <= 0
        assert row.fits == fits
        if row.partial:
            partial += 1
            assert row.peak_gib <= peak_gib and not row.stages
            complete_partial([row], headroom_gib)
            assert not row.partial and row.peak_gib == peak_gib and row.stages == full
        elif not row.bounded:
            assert row.stages == full and row.peak_gib == peak_gib
    assert partial > 0  # the sample exercises the early stop


def test_a_variants_key_is_the_axis_values_of_its_row() -> None:
    model, cluster = load_model("llama-3.1-70b"), load_cluster("dgx-h100", gpus=64)
    workload = WorkloadSpec(seq_len=4096, global_batch=256)
    layouts = random.Random(5).sample(enumerate_layouts(model, cluster, workload), 20)
    table = tabulate(
        layouts, model=model, cluster=cluster, workload=workload, framework="megatron",
        headroom_gib=0.0,
    )  # fmt: skip
    for layout, row in zip(layouts, table.rows, strict=True):
        assert partition._key(layout, cluster, "megatron") == axis_values(row)
