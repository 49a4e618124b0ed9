"""Fused attention under context parallelism is timed by the kernels each rank runs.

Ring and all-gather context parallelism keep two of the 2·cp sequence chunks per rank
(Megatron-LM's load balancing) and attend them to every earlier chunk: 1/(2·cp) of the
score FLOPs fall in the two causal diagonal blocks, the rest in unmasked blocks, which a
flash kernel runs at its non-causal rate. Ulysses (a2a) runs whole sequences for 1/cp of
the heads. The FLOPs are the same in every case; only the kernels' shapes differ.
"""

from __future__ import annotations

import pytest

from planner import load_model
from planner.cost.compute import AttentionShape, LayerShape, layer_work
from planner.cost.frameworks import implementation, state_layout

MODEL = load_model("llama-3.1-8b")
IMPL = implementation(framework="megatron", layout=state_layout("megatron"), precision="bf16")
SEQ = 32768


def _attention(cp: int, cp_comm_type: str = "p2p") -> list:
    shape = LayerShape(
        tokens=SEQ / cp, seq_len=SEQ, tp=1, etp=1, ep=1, cp=cp, cp_comm_type=cp_comm_type
    )
    return [
        w for w in layer_work(MODEL, 0, shape=shape, impl=IMPL).forward if w.kind == "attention"
    ]


def test_one_causal_kernel_without_context_parallelism() -> None:
    (work,) = _attention(1)
    assert isinstance(work.shape, AttentionShape)
    assert work.shape.causal and work.shape.seq_len == SEQ and work.kernels == 1


@pytest.mark.parametrize("cp_comm_type", ["p2p", "all_gather"])
@pytest.mark.parametrize("cp", [2, 4, 8])
def test_chunked_context_parallelism_splits_masked_and_unmasked_tiles(
    cp: int, cp_comm_type: str
) -> None:
    full, diagonal = _attention(cp, cp_comm_type)
    (whole,) = _attention(1)
    assert not full.shape.causal and diagonal.shape.causal
    assert full.shape.seq_len == diagonal.shape.seq_len == SEQ / cp
    # each rank does 1/cp of the causal work, 1/(2cp) of it in the diagonal blocks
    assert full.flops + diagonal.flops == pytest.approx(whole.flops / cp)
    assert diagonal.flops / (full.flops + diagonal.flops) == pytest.approx(1 / (2 * cp))
    assert full.kernels + diagonal.kernels == 1  # launches as before: one call per layer
    assert full.attention_core and diagonal.attention_core  # selective recompute re-runs both


def test_ulysses_runs_whole_sequences_for_a_share_of_the_heads() -> None:
    (work,) = _attention(4, "a2a")
    (whole,) = _attention(1)
    assert work.shape.causal and work.shape.seq_len == SEQ
    assert work.shape.heads == MODEL.num_attention_heads / 4
    assert work.shape.batch == pytest.approx(1.0)
    assert work.flops == pytest.approx(whole.flops / 4)
