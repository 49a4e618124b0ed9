"""enumerate_layouts: the legal layout space, pinned and bounded, counted by hand."""

from __future__ import annotations

import pytest

from planner.catalog import load_cluster
from planner.errors import SpecError
from planner.search.candidates import enumerate_layouts, enumerate_space
from planner.specs import ModelSpec, MoESpec, ParallelConfig, WorkloadSpec
from planner.specs.layout import layout_violations
from planner.specs.rules import Rule

WORKLOAD = WorkloadSpec(seq_len=64, global_batch=4)


def _key(layout: ParallelConfig) -> tuple:
    return (layout.tp, layout.cp, layout.pp, layout.dp, layout.vpp, layout.mbs)


def test_tiny_model_on_two_gpus_counted_by_hand(tiny_model: ModelSpec) -> None:
    # 2 GPUs: (tp, cp, pp, dp) in (1,1,1,2), (1,1,2,1), (1,2,1,1), (2,1,1,1) (tp | 8 and
    # kv_heads 2; cp 2 needs seq 64 % 4 == 0), cp 2 with Megatron's p2p, all_gather or a2a
    # (8 heads scatter over 2). mbs 1 or 2 always divides 4 / dp. pp 2 adds vpp 2
    # (4 layers / 2 / 2) but not vpp 3 or 4 (2 layers per rank):
    # 2 x 3 (dp 2, tp 2) + 2 x 3 (cp 2) + 2 x 1 x 3 (pp 2) = 18 built, the 4 with vpp 3 or 4
    # dropped, 14 legal.
    cluster = load_cluster("dgx-h100", gpus=2)
    space = enumerate_space(tiny_model, cluster, WORKLOAD, fixed={"recompute": "none"}, max_mbs=2)
    assert space.considered == 18
    assert len(space.layouts) == 14
    assert sum(space.dropped.values()) == 4
    assert space.dropped == {Rule.LAYERS_PER_RANK_DIVISIBLE_BY_VPP: 4}
    assert "must be divisible by vpp" in space.examples[Rule.LAYERS_PER_RANK_DIVISIBLE_BY_VPP]
    keys = {_key(layout) for layout in space.layouts}
    assert (1, 1, 2, 1, 2, 1) in keys and (1, 1, 2, 1, 4, 1) not in keys
    assert (2, 1, 1, 1, None, 2) in keys


def test_every_candidate_is_legal_and_derived_knobs_follow(tiny_model: ModelSpec) -> None:
    cluster = load_cluster("dgx-h100", gpus=8)
    layouts = enumerate_layouts(tiny_model, cluster, WORKLOAD)
    assert layouts
    for layout in layouts:
        assert (
            layout_violations(model=tiny_model, cluster=cluster, workload=WORKLOAD, layout=layout)
            == []
        )
        assert layout.tp * layout.cp * layout.pp * layout.dp == 8
        assert layout.sequence_parallel == (layout.tp > 1)
        assert layout.distributed_optimizer and layout.overlap_param_gather
        if layout.recompute == "full":
            assert (layout.recompute_method, layout.recompute_num_layers) == ("uniform", 1)
    assert {layout.recompute for layout in layouts} == {"none", "selective", "full"}


def test_deterministic(tiny_model: ModelSpec) -> None:
    cluster = load_cluster("dgx-h100", gpus=4)
    first = enumerate_layouts(tiny_model, cluster, WORKLOAD)
    assert first == enumerate_layouts(tiny_model, cluster, WORKLOAD)


def test_fixed_and_maxima_respected(tiny_model: ModelSpec) -> None:
    cluster = load_cluster("dgx-h100", gpus=8)
    layouts = enumerate_layouts(
        tiny_model,
        cluster,
        WORKLOAD,
        fixed={"tp": 2, "recompute": "full", "cp_comm_type": "all_gather"},
        maxima={"pp": 2, "mbs": 1},
    )
    assert layouts
    assert all(layout.tp == 2 and layout.recompute == "full" for layout in layouts)
    assert all(layout.cp_comm_type == "all_gather" for layout in layouts)
    assert all(layout.pp <= 2 and layout.mbs == 1 for layout in layouts)


def test_fixed_value_no_candidate_can_take_names_it(tiny_model: ModelSpec) -> None:
    cluster = load_cluster("dgx-h100", gpus=8)
    with pytest.raises(SpecError, match=r"tp=3.*GPUs per node"):
        enumerate_layouts(tiny_model, cluster, WORKLOAD, fixed={"tp": 3})
    with pytest.raises(SpecError, match="unknown knob 'bogus'"):
        enumerate_layouts(tiny_model, cluster, WORKLOAD, fixed={"bogus": 1})
    with pytest.raises(SpecError, match="unknown knob 'nope'"):
        enumerate_layouts(tiny_model, cluster, WORKLOAD, maxima={"nope": 1})


def test_moe_model_gets_expert_parallel_candidates(tiny_model: ModelSpec) -> None:
    moe = tiny_model.model_copy(
        update={"moe": MoESpec(num_experts=4, top_k=2, expert_ffn_hidden_size=64)}
    )
    moe = ModelSpec(**moe.model_dump())
    cluster = load_cluster("dgx-h100", gpus=4)
    layouts = enumerate_layouts(moe, cluster, WORKLOAD)
    assert {layout.ep for layout in layouts} == {1, 2, 4}
    for layout in layouts:
        assert (layout.dp * layout.cp * layout.tp) % layout.ep == 0
        assert layout_violations(model=moe, cluster=cluster, workload=WORKLOAD, layout=layout) == []


def test_balanced_uneven_split_when_layers_do_not_divide() -> None:
    from planner.search.candidates import stage_split

    assert stage_split(80, 8) == {}
    # Llama 3 405B: 126 layers on 16 stages = 7 + 14 x 8 + 7
    assert stage_split(126, 16) == {"first_stage_layers": 7, "last_stage_layers": 7}
    # 32 on each middle stage leaves 62: 31 on each end, which also hold embedding and head
    assert stage_split(126, 4) == {"first_stage_layers": 31, "last_stage_layers": 31}
    assert stage_split(5, 2) is None  # two stages: no middle to even out
    assert stage_split(10, 4) == {"first_stage_layers": 2, "last_stage_layers": 2}
    # 3 per middle stage leaves 5: the extra layer goes to the first stage (the last runs the head)
    assert stage_split(11, 4) == {"first_stage_layers": 3, "last_stage_layers": 2}
    # DeepSeek-V3: 61 layers on 16 stages = 3 + 14 x 4 + 2
    assert stage_split(61, 16) == {"first_stage_layers": 3, "last_stage_layers": 2}


def test_cp_algorithm_searched_only_where_the_cost_model_prices_it() -> None:
    """CP_COMM_PRICED must say whether the cost model tells p2p from a2a: compare one
    layout with exposed CP communication under both."""
    from planner.catalog import load_model
    from planner.predict import estimate
    from planner.search.candidates import CP_COMM_PRICED

    model = load_model("llama-3.1-8b")
    cluster = load_cluster("dgx-h100", gpus=16)
    workload = WorkloadSpec(seq_len=32768, global_batch=16)
    results = [
        estimate(
            model=model, cluster=cluster, workload=workload,
            layout=ParallelConfig(tp=1, cp=16, cp_comm_type=comm, mbs=1),
        )
        for comm in ("p2p", "a2a")
    ]  # fmt: skip
    priced = results[0].time != results[1].time or results[0].memory != results[1].memory
    assert priced == CP_COMM_PRICED, "flip planner.search.candidates.CP_COMM_PRICED"
    layouts = enumerate_layouts(model, cluster, workload, fixed={"tp": 1, "pp": 1})
    comms = {layout.cp_comm_type for layout in layouts if layout.cp > 1}
    assert comms == ({"p2p", "all_gather", "a2a", "a2a+p2p"} if CP_COMM_PRICED else {"p2p"})
    deepspeed = enumerate_layouts(
        model, cluster, workload, framework="deepspeed", fixed={"tp": 1, "pp": 1}
    )
    assert {layout.cp_comm_type for layout in deepspeed if layout.cp > 1} == {"a2a"}
    pinned = enumerate_layouts(
        model, cluster, workload, fixed={"tp": 1, "pp": 1, "cp_comm_type": "all_gather"}
    )
    assert pinned and {layout.cp_comm_type for layout in pinned} == {"all_gather"}
    # torchtitan: the release planned for decides (0.3.0 all-gathers K/V; 0.2.2 also rings)
    for version, expected in (("current", {"all_gather"}), ("0.2", {"p2p", "all_gather"})):
        titan = enumerate_layouts(
            model, cluster, workload, framework="torchtitan", framework_version=version,
            fixed={"tp": 1, "pp": 1},
        )  # fmt: skip
        assert {layout.cp_comm_type for layout in titan if layout.cp > 1} == expected


def test_long_sequences_search_context_parallel_beyond_eight(tiny_model: ModelSpec) -> None:
    from planner.search.candidates import max_cp

    assert max_cp(4096) == 8 and max_cp(131072) == 16
    cluster = load_cluster("dgx-h100", gpus=32)
    long = WorkloadSpec(seq_len=131072, global_batch=4)
    tiny = tiny_model.model_copy(update={"max_position_embeddings": 131072})
    assert 16 in {layout.cp for layout in enumerate_layouts(tiny, cluster, long)}


def test_uneven_splits_with_virtual_stages_divide_every_stage() -> None:
    """Megatron-LM's uneven-split check: with vpp, the first, the last and every middle
    stage divide by vpp (126 layers on 32 stages = 3 + 30 x 4 + 3 cannot run 3 virtual
    stages); under the account-for split the layer slots per rank (layers plus the
    accounted embedding and output layer) divide by vpp (``get_num_layers_to_build``)."""
    from planner.catalog import load_model
    from planner.cost.memory import virtual_stages
    from planner.specs.layout import stage_layer_counts

    model = load_model("llama-3.1-405b")
    cluster = load_cluster("dgx-h100", gpus=1024)
    workload = WorkloadSpec(seq_len=8192, global_batch=2048)
    layouts = enumerate_layouts(model, cluster, workload, fixed={"tp": 8, "recompute": "none"})
    assert layouts
    for layout in layouts:
        counts = stage_layer_counts(model, layout)
        counts[0] += int(layout.account_for_embedding_in_pipeline_split)
        counts[-1] += int(layout.account_for_loss_in_pipeline_split)
        assert all(count % (layout.vpp or 1) == 0 for count in counts)
        assert sum(len(chunk) for chunk in virtual_stages(model, layout)) == model.num_layers


def test_the_cp_algorithm_changes_no_memory_so_the_search_shares_it() -> None:
    """``planner.search.tabulate`` computes the memory of layouts that differ only in the
    CP algorithm once: that holds while the cost model has no memory per algorithm."""
    from planner.catalog import load_model
    from planner.predict import estimate
    from planner.search.tabulate import tabulate

    model = load_model("llama-3.1-8b")
    cluster = load_cluster("dgx-h100", gpus=16)
    workload = WorkloadSpec(seq_len=32768, global_batch=16)
    memories = {
        comm: estimate(
            model=model, cluster=cluster, workload=workload,
            layout=ParallelConfig(
                tp=2, cp=8, cp_comm_type=comm, recompute="selective",
                hierarchical_cp_sizes=(2, 4) if comm == "a2a+p2p" else None,
            ),
        ).memory
        for comm in ("p2p", "all_gather", "a2a", "a2a+p2p")
    }  # fmt: skip
    assert len({memory.model_dump_json() for memory in memories.values()}) == 1
    layouts = enumerate_layouts(model, cluster, workload, fixed={"tp": 2, "pp": 1})
    table = tabulate(
        layouts, model=model, cluster=cluster, workload=workload, framework="megatron",
        headroom_gib=0.0,
    )  # fmt: skip
    for row in table.rows:
        alone = tabulate(
            [row.layout], model=model, cluster=cluster, workload=workload,
            framework="megatron", headroom_gib=0.0,
        ).rows[0]  # fmt: skip
        assert (row.peak_gib, row.stages) == (alone.peak_gib, alone.stages)


def test_hierarchical_cp_is_searched_with_each_proper_split() -> None:
    """Megatron-LM's a2a+p2p at cp 16 (Llama 3.1 8B: 8 KV heads per rank at tp 1): the
    a2a groups 2, 4 and 8 (16 would split 8 KV heads, and 1 or 16 are p2p and a2a);
    pinned, the one-level splits join, and pinned sizes bring their algorithm and cp."""
    from planner.catalog import load_model

    model = load_model("llama-3.1-8b")
    cluster = load_cluster("dgx-h100", gpus=16)
    workload = WorkloadSpec(seq_len=131072, global_batch=16)  # cp 16 keeps 8K tokens each
    base = {"tp": 1, "pp": 1, "cp": 16, "mbs": 1, "recompute": "none"}

    def sizes(fixed: dict) -> set:
        layouts = enumerate_layouts(model, cluster, workload, fixed={**base, **fixed})
        return {x.hierarchical_cp_sizes for x in layouts if x.cp_comm_type == "a2a+p2p"}

    assert sizes({}) == {(2, 8), (4, 4), (8, 2)}
    assert sizes({"cp_comm_type": "a2a+p2p"}) == {(1, 16), (2, 8), (4, 4), (8, 2)}
    pinned = enumerate_layouts(
        model, cluster, workload, fixed={"tp": 1, "pp": 1, "hierarchical_cp_sizes": "4,2"}
    )
    assert pinned and {(x.cp, x.cp_comm_type, x.hierarchical_cp_sizes) for x in pinned} == {
        (8, "a2a+p2p", (4, 2))
    }
    deepspeed = enumerate_layouts(model, cluster, workload, framework="deepspeed", fixed=base)
    assert all(x.hierarchical_cp_sizes is None for x in deepspeed)


@pytest.mark.parametrize(
    ("value", "strict", "pinned"),
    [("2x4", False, (2, 4)), ("2,4", False, (2, 4)), ("2x4", True, (2, 4)),
     ([2, 4], True, (2, 4)), ("none", False, None)],
)  # fmt: skip
def test_group_sizes_are_pinned_as_text_or_a_list(value: object, strict: bool, pinned) -> None:
    from planner.search.candidates import coerce_knobs

    fixed = coerce_knobs({"hierarchical_cp_sizes": value}, option="--fix", strict=strict)
    assert fixed == {"hierarchical_cp_sizes": pinned}
    with pytest.raises(SpecError, match="not a valid value for hierarchical_cp_sizes"):
        coerce_knobs({"hierarchical_cp_sizes": "2x"}, option="--fix")
