"""ModelSpec validation and the hand-checked parameter and FLOP counts of tiny models."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from planner.graph.params import (
    count_params,
    layer_params,
    mean_attended_tokens,
    training_flops_per_token,
)
from planner.specs import MLASpec, ModelSpec, MoESpec


def test_tiny_model_parameter_count_by_hand(tiny_model: ModelSpec) -> None:
    # d = 64/8 = 8; attention: q 64*64 + k,v 2*64*(2*8) + o 64*64 = 4096+2048+4096
    attention = 64 * 64 + 2 * 64 * 16 + 64 * 64
    mlp = 3 * 64 * 128  # SwiGLU: gate, up, down
    norms = 2 * 64  # two RMSNorms
    per_layer = attention + mlp + norms
    embedding, output = 1000 * 64, 1000 * 64 + 64  # untied output + final norm
    counts = count_params(tiny_model)
    assert counts.total == 4 * per_layer + embedding + output
    assert counts.active == counts.total
    assert counts.active_matmul == 4 * (attention + mlp) + 1000 * 64


def test_tied_embeddings_remove_the_output_matrix(tiny_model: ModelSpec) -> None:
    tied = tiny_model.model_copy(update={"tie_embeddings": True})
    assert count_params(tiny_model).total - count_params(tied).total == 1000 * 64


def test_moe_layers_count_routed_shared_and_router(tiny_model: ModelSpec) -> None:
    moe = MoESpec(
        num_experts=4,
        top_k=2,
        expert_ffn_hidden_size=32,
        num_shared_experts=1,
        first_dense_layers=1,
    )
    model = ModelSpec(**{**tiny_model.model_dump(exclude={"moe"}), "moe": moe})
    dense, sparse = layer_params(model, 0), layer_params(model, 1)
    expert = 3 * 64 * 32
    assert dense.mlp == 3 * 64 * 128
    assert sparse.mlp == 4 * expert + expert + 64 * 4
    assert sparse.mlp_active == 2 * expert + expert + 64 * 4
    assert model.num_moe_layers == 3


def test_mla_attention_matches_deepseek_v3_layer() -> None:
    # DeepSeek-V3's config.json (MLA ranks 1536/512, heads 128, nope/rope/v 128/64/128)
    # gives 187,107,328 MLA attention parameters per layer, counted by hand.
    model = ModelSpec(
        name="mla",
        num_layers=1,
        hidden_size=7168,
        num_attention_heads=128,
        ffn_hidden_size=18432,
        vocab_size=129280,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        mla=MLASpec(
            q_lora_rank=1536,
            kv_lora_rank=512,
            qk_nope_head_dim=128,
            qk_rope_head_dim=64,
            v_head_dim=128,
        ),
    )
    assert layer_params(model, 0).attention == 187_107_328


def test_flops_per_token_is_6n_plus_causal_attention(tiny_model: ModelSpec) -> None:
    seq = 256
    n = count_params(tiny_model).active_matmul
    # 6N + 6·L·a·d·s (Megatron's causal count); PaLM's non-causal count doubles the term.
    assert training_flops_per_token(tiny_model, seq) == 6 * n + 6 * 4 * 8 * 8 * seq
    assert training_flops_per_token(tiny_model, seq, causal=False) == 6 * n + 12 * 4 * 8 * 8 * seq


def test_sliding_window_caps_attended_tokens(tiny_model: ModelSpec) -> None:
    local = tiny_model.model_copy(update={"sliding_window": 64, "global_attention_every": 2})
    assert mean_attended_tokens(local, 0, 1024, causal=True) == 64 - 64 * 64 / 2048
    assert mean_attended_tokens(local, 1, 1024, causal=True) == 512  # a global layer
    assert mean_attended_tokens(local, 0, 32, causal=True) == 16  # window longer than seq


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_kv_heads": 3}, "divisible by num_kv_heads"),
        ({"num_kv_heads": 16}, "must not exceed num_attention_heads"),
        ({"num_layers": 0}, "num_layers"),
        ({"hidden_size": 65}, "divisible by num_attention_heads"),
        ({"rope_theta": None}, "rope_theta is required"),
        ({"mlp_activation": "tanh"}, "mlp_activation"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_models_name_the_rule(tiny_model: ModelSpec, change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelSpec(**{**tiny_model.model_dump(), **change})


def test_moe_top_k_cannot_exceed_experts() -> None:
    with pytest.raises(ValidationError, match="top_k"):
        MoESpec(num_experts=4, top_k=5, expert_ffn_hidden_size=8)


def test_specs_are_frozen(tiny_model: ModelSpec) -> None:
    with pytest.raises(ValidationError):
        tiny_model.num_layers = 8  # type: ignore[misc]
