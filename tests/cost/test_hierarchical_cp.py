"""Hierarchical context parallelism (Megatron-LM ``--cp-comm-type a2a+p2p`` with
``--hierarchical-context-parallel-sizes A R``): the layout's rules, where its groups sit,
and how its kernels and communication are priced.

Transformer Engine's ``AttnFuncWithCPAndKVP2P``, given an a2a and a p2p group, runs the
Ulysses all-to-all over the ``A`` adjacent CP ranks of the a2a group (each rank then holds
``A`` times the tokens for ``1/A`` of the heads), the ring over the ``R = cp / A`` groups,
and the all-to-all back. With ``A = cp`` that is a2a, with ``A = 1`` it is p2p: the cost
model must give exactly their numbers there.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from planner import load_model
from planner.catalog import load_cluster
from planner.cost.compute import LayerShape, layer_work
from planner.cost.frameworks import implementation, state_layout
from planner.cost.placement import place_groups
from planner.predict import estimate
from planner.specs import ModelSpec, ParallelConfig, WorkloadSpec
from planner.specs.layout import layout_violations, resolve_data_parallel
from planner.specs.rules import Rule

EIGHT_B = load_model("llama-3.1-8b")  # 32 heads, 8 KV heads
TWO_NODES = load_cluster("dgx-h100", nodes=2)
LONG = WorkloadSpec(seq_len=32768, global_batch=16)


def _layout(comm: str, sizes: tuple[int, int] | None = None, **fields: int) -> ParallelConfig:
    return ParallelConfig(
        cp=fields.pop("cp", 16), cp_comm_type=comm, hierarchical_cp_sizes=sizes, **fields
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cp": 8, "cp_comm_type": "a2a+p2p"}, r"needs hierarchical_cp_sizes.*product cp \(8\)"),
        (
            {"cp": 8, "cp_comm_type": "a2a+p2p", "hierarchical_cp_sizes": (2, 2)},
            r"a2a x p2p = 2 x 2 = 4 must equal cp \(8\)",
        ),
        (
            {"cp": 8, "cp_comm_type": "p2p", "hierarchical_cp_sizes": (2, 4)},
            r"apply only to cp_comm_type a2a\+p2p \(not p2p\)",
        ),
    ],
)
def test_the_group_sizes_are_checked_as_megatron_does(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ParallelConfig(**fields)


def test_the_a2a_group_must_divide_the_heads_and_kv_heads_per_tp_rank(
    tiny_model: ModelSpec,
) -> None:
    """tiny: 8 heads, 2 KV heads. Transformer Engine reshapes Q and K/V heads into a2a
    groups; the ring level has no head rule."""

    def problems(tp: int, sizes: tuple[int, int]) -> list[str]:
        layout = resolve_data_parallel(
            _layout("a2a+p2p", sizes, cp=sizes[0] * sizes[1], tp=tp), num_gpus=64
        )
        return [
            v.message
            for v in layout_violations(
                model=tiny_model,
                cluster=TWO_NODES.model_copy(update={"num_gpus": 64}),
                workload=WorkloadSpec(seq_len=256, global_batch=64),
                layout=layout,
            )
            if v.rule is Rule.A2A_HEADS_DIVISIBLE_BY_CP
        ]

    assert problems(tp=1, sizes=(2, 8)) == []  # 8 heads, 2 KV heads over 2
    (kv,) = problems(tp=1, sizes=(4, 4))  # 2 KV heads over 4
    assert "KV heads per TP rank (2) must be divisible by the a2a group (4)" in kv
    assert len(problems(tp=2, sizes=(8, 2))) == 2  # 4 heads and 1 KV head over 8


def test_the_a2a_group_is_adjacent_cp_ranks_and_the_ring_strides_across_them() -> None:
    """Megatron-LM's create_hierarchical_groups: level 0 (a2a) is A consecutive members of
    the CP group, level 1 (p2p) every A-th one. cp 16 over two 8-GPU nodes with A = 8:
    the all-to-all stays on NVLink, the ring is one rank per node."""
    groups = place_groups(_layout("a2a+p2p", (8, 2)), TWO_NODES)
    assert (groups["cp_a2a"].size, groups["cp_a2a"].nodes) == (8, 1)
    assert (groups["cp_p2p"].size, groups["cp_p2p"].ranks_per_node) == (2, 1)
    flat = place_groups(_layout("p2p"), TWO_NODES)
    ring, cp = flat["cp_p2p"], flat["cp"]
    assert flat["cp_a2a"].size == 1
    assert (ring.size, ring.ranks_per_node, ring.nodes) == (cp.size, cp.ranks_per_node, cp.nodes)


def test_the_ring_level_runs_the_chunked_kernels_of_a_smaller_ring() -> None:
    """After the all-to-all a rank attends 2 of 2R chunks for 1/A of the heads: the p2p
    kernels of cp = R, same FLOPs as every other algorithm."""
    impl = implementation(framework="megatron", layout=state_layout("megatron"), precision="bf16")
    seq = LONG.seq_len

    def attention(cp: int, comm: str, a2a: int = 1) -> list:
        shape = LayerShape(
            tokens=seq / cp, seq_len=seq, tp=1, etp=1, ep=1, cp=cp, cp_comm_type=comm,
            cp_a2a=a2a,
        )  # fmt: skip
        works = layer_work(EIGHT_B, 0, shape=shape, impl=impl).forward
        return [w for w in works if w.kind == "attention"]

    full, diagonal = attention(16, "a2a+p2p", a2a=4)
    ring_full, ring_diagonal = attention(4, "p2p")
    assert full.shape.seq_len == diagonal.shape.seq_len == seq / 4
    assert full.shape.heads == EIGHT_B.num_attention_heads / 4 and not full.shape.causal
    assert diagonal.flops / (full.flops + diagonal.flops) == pytest.approx(1 / 8)
    assert full.flops + diagonal.flops == pytest.approx((ring_full.flops + ring_diagonal.flops) / 4)


@pytest.mark.parametrize(("sizes", "flat"), [((8, 1), "a2a"), ((1, 8), "p2p")])
def test_a_one_level_hierarchy_is_priced_as_that_level(sizes: tuple[int, int], flat: str) -> None:
    """Transformer Engine runs [cp, 1] as a2a and [1, cp] as p2p: the same numbers."""
    hierarchical = estimate(
        model=EIGHT_B, cluster=TWO_NODES, workload=LONG,
        layout=_layout("a2a+p2p", sizes, cp=8),
    )  # fmt: skip
    plain = estimate(model=EIGHT_B, cluster=TWO_NODES, workload=LONG, layout=_layout(flat, cp=8))
    assert hierarchical.time.breakdown_s == plain.time.breakdown_s
    assert hierarchical.memory == plain.memory


def test_across_nodes_the_hierarchy_sits_between_the_ring_and_ulysses() -> None:
    """cp 16 over two nodes at 32K tokens (Llama 2 7B: 32 heads, 32 KV heads, so Megatron
    runs all three): the ring hides behind attention; Ulysses sends half of each
    all-to-all over the NICs; a2a+p2p (8, 2) keeps its all-to-all on NVLink and its
    2-group ring hidden, so its exposed CP time lies between the two, and far below
    Ulysses'. Memory is the same: every algorithm saves the same bytes per rank."""
    model = load_model("llama-2-7b")
    runs = {
        name: estimate(model=model, cluster=TWO_NODES, workload=LONG, layout=layout)
        for name, layout in (
            ("p2p", _layout("p2p")),
            ("a2a+p2p", _layout("a2a+p2p", (8, 2))),
            ("a2a", _layout("a2a")),
        )
    }
    exposed = {name: run.time.breakdown_s["cp_comm"] for name, run in runs.items()}
    assert exposed["p2p"] <= exposed["a2a+p2p"] < exposed["a2a"] / 2
    assert len({run.memory.model_dump_json() for run in runs.values()}) == 1
