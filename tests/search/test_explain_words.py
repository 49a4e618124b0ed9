"""The search's words say what is true: counts, knob values, differences, advice."""

from __future__ import annotations

import pytest

from planner import WorkloadSpec, estimate, load_cluster, load_model
from planner.errors import Infeasible
from planner.search.driver import search
from planner.search.explain import compare, knob_words
from planner.search.grow import larger_sizes, smallest_fitting
from planner.specs.layout import ParallelConfig

EIGHT_B = load_model("llama-3.1-8b")
WORKLOAD = WorkloadSpec(seq_len=4096, global_batch=64)


def test_one_plan_shown_says_how_many_fit() -> None:
    result = search(EIGHT_B, load_cluster("dgx-h100", gpus=8), WORKLOAD, top_k=1)
    fit = result.search.layouts_feasible
    assert fit > 1
    assert "The only layout that fits" not in result.plans[0].explanation
    assert f"({fit} layouts fit): " in result.plans[0].explanation


def test_counts_are_consistent_with_the_split_solver() -> None:
    cluster = load_cluster("dgx-h100", gpus=8)  # pipelines only: the split solver has work
    info = search(EIGHT_B, cluster, WORKLOAD, top_k=3, fixed={"pp": 2}).search
    assert info.layouts_split_solver > 0
    assert info.layouts_considered >= info.layouts_legal >= info.layouts_feasible


def test_interleaving_in_words() -> None:
    assert knob_words("vpp", 4) == "interleaved with 4 virtual stages"
    assert knob_words("vpp", None) == "not interleaved"
    cluster = load_cluster("dgx-h100", gpus=8)
    plain = estimate(
        model=EIGHT_B, cluster=cluster, workload=WORKLOAD,
        layout=ParallelConfig(tp=1, pp=2, dp=4, cp=1, mbs=1),
    )  # fmt: skip
    interleaved = estimate(
        model=EIGHT_B, cluster=cluster, workload=WORKLOAD,
        layout=ParallelConfig(tp=1, pp=2, dp=4, cp=1, mbs=1, vpp=4),
    )  # fmt: skip
    text = compare(interleaved, plain)
    assert "interleaved with 4 virtual stages instead of not interleaved" in text
    assert "None" not in text


def test_zero_differences_are_not_shown() -> None:
    cluster = load_cluster("dgx-h100", gpus=8)
    one = estimate(
        model=EIGHT_B, cluster=cluster, workload=WORKLOAD,
        layout=ParallelConfig(tp=1, pp=1, dp=8, cp=1, mbs=1),
    )  # fmt: skip
    text = compare(one, one)
    assert "0.0 GiB" not in text and "same peak memory" in text


def test_nothing_fits_names_the_smallest_gpu_count_that_does() -> None:
    """Llama 3.1 70B's states (about 18 bytes a parameter) cannot fit on 8 H100s: the
    message names the smallest larger size that fits, checked here by planning on it, and
    does not suggest what shrinks activations."""
    model = load_model("llama-3.1-70b")
    workload = WorkloadSpec(seq_len=4096, global_batch=64)
    with pytest.raises(Infeasible) as caught:
        search(model, load_cluster("dgx-h100", gpus=8), workload, top_k=1)
    message = str(caught.value)
    assert "(e.g. 16)" not in message
    assert "a shorter sequence" not in message and "full recomputation" not in message
    assert "the model states alone" in message
    grown = smallest_fitting(
        model, load_cluster("dgx-h100", gpus=8), workload, framework="megatron",
        headroom_gib=2.71,
    )  # fmt: skip
    assert grown.gpus is not None
    assert f"{grown.gpus} is the smallest size tried above 8 that fits" in message
    assert search(model, load_cluster("dgx-h100", gpus=grown.gpus), workload, top_k=1).plans
    sizes = larger_sizes(load_cluster("dgx-h100", gpus=8))
    smaller = [size for size in sizes if size < grown.gpus]
    for size in smaller:
        with pytest.raises(Infeasible):
            search(model, load_cluster("dgx-h100", gpus=size), workload, top_k=1)


def test_hierarchical_cp_is_named_with_its_groups() -> None:
    """The plan table labels a2a+p2p with its two levels; against another algorithm the
    explanation names the algorithm once (the groups follow it), against other groups
    the groups."""
    from planner.search.explain import layout_label

    model, cluster = load_model("llama-3.1-8b"), load_cluster("dgx-h100", gpus=16)
    workload = WorkloadSpec(seq_len=32768, global_batch=16)

    def run(**layout: object):
        return estimate(model=model, cluster=cluster, workload=workload,
                        layout=ParallelConfig(cp=16, **layout))  # fmt: skip

    hierarchical = run(cp_comm_type="a2a+p2p", hierarchical_cp_sizes=(8, 2))
    assert "cp 16 (a2a 8 x p2p 2)" in layout_label(hierarchical.config)
    against_ring = compare(hierarchical, run())
    assert "cp comm a2a+p2p instead of p2p" in against_ring and "cp groups" not in against_ring
    other = compare(hierarchical, run(cp_comm_type="a2a+p2p", hierarchical_cp_sizes=(4, 4)))
    assert "cp groups a2a 8 x p2p 2 instead of a2a 4 x p2p 4" in other
