"""Saved activation bytes per layer (build_graph + SavedBytes.sharded) against hand counts.

The reference is Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models" (arXiv:2205.05198), section 4.1 / Table 2: for GPT (MHA, GELU, f = 4h,
dropout, no flash attention, 2-byte activations, 1-byte masks) one layer keeps, per
micro-batch,

    no parallelism               s·b·h·(34 + 5·a·s/h)
    tensor parallel t            s·b·h·(10 + 24/t + 5·a·s/(h·t))
    TP + sequence parallel       s·b·h/t·(34 + 5·a·s/h)
    TP + selective recompute     s·b·h·(10 + 24/t)
    TP + SP + selective          34·s·b·h/t
    full recompute               2·s·b·h (the layer input)

The paper does not count the norms' statistics; our kernels (Apex / Transformer Engine
LayerNorm) keep one fp32 value per token per norm, so every row gets 2 norms × 4 bytes =
8 bytes per token on top, divided by t where the norms run sequence-parallel. The
expected values below are those formulas evaluated exactly (``Fraction``) plus 8·s·b/sp.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from planner.cost.frameworks import implementation, state_layout
from planner.graph.build import Implementation, build_graph
from planner.graph.ops import LayerNode
from planner.specs import ModelSpec

MEGATRON_UNFUSED = Implementation(
    name="megatron-unfused",
    residual_bytes=2,
    activation_bytes=2,
    flash_attention=False,
    fused_gated_mlp=True,
)
MEGATRON_FLASH = Implementation(
    name="megatron", residual_bytes=2, activation_bytes=2, flash_attention=True,
    fused_gated_mlp=True,
)  # fmt: skip
NORM_STATISTICS_PER_TOKEN = 2 * 4  # two LayerNorms, one fp32 statistic per token each


def gpt(*, hidden: int, heads: int, seq_len: int, kv_heads: int | None = None) -> ModelSpec:
    """GPT-2/3 style block: MHA, GELU, LayerNorm, f = 4h, dropout 0.1, biases, learned pos."""
    return ModelSpec(
        name="gpt-test",
        num_layers=2,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        ffn_hidden_size=4 * hidden,
        vocab_size=1000,
        max_position_embeddings=seq_len,
        mlp_activation="gelu",
        normalization="layernorm",
        position_embedding="learned",
        qkv_bias=True,
        attention_output_bias=True,
        mlp_bias=True,
        hidden_dropout=0.1,
        attention_dropout=0.1,
    )


def layer_of(model: ModelSpec, *, seq_len: int, impl: Implementation) -> LayerNode:
    return build_graph(model, seq_len=seq_len, implementation=impl).layers[0]


def layer_bytes(layer: LayerNode, *, s: int, b: int, t: int, sp: bool, selective: bool) -> float:
    """Bytes one GPU keeps for one layer and one micro-batch of b sequences of s tokens."""
    per_token = layer.saved.sharded(tp=t, sp_divisor=t if sp else 1, etp=t, selective=selective)
    return s * b * per_token


def korthikanti(s: int, b: int, h: int, a: int, t: int, setting: str) -> Fraction:
    """The paper's row, exactly, plus the 8 bytes/token of norm statistics (see module doc)."""
    sbh = Fraction(s * b * h)
    scores = Fraction(5 * a * s, h)
    stats = Fraction(NORM_STATISTICS_PER_TOKEN * s * b)
    rows = {
        "none": sbh * (34 + scores) + stats,
        "tp": sbh * (10 + Fraction(24, t) + scores / t) + stats,
        "tp+sp": sbh / t * (34 + scores) + stats / t,
        "tp+selective": sbh * (10 + Fraction(24, t)) + stats,
        "tp+sp+selective": 34 * sbh / t + stats / t,
    }
    return rows[setting]


SETTINGS = {
    # setting: (use tp degree, sequence parallel, selective recompute)
    "none": (False, False, False),
    "tp": (True, False, False),
    "tp+sp": (True, True, False),
    "tp+selective": (True, False, True),
    "tp+sp+selective": (True, True, True),
}
SHAPES = [
    # (s, b, h, a, t): a tiny model, then the paper's GPT-3 175B, MT-NLG 530B and 1T shapes
    pytest.param(128, 4, 64, 4, 2, id="tiny"),
    pytest.param(2048, 1, 12288, 96, 8, id="gpt3-175b"),
    pytest.param(2048, 1, 20480, 128, 8, id="mt-nlg-530b"),
    pytest.param(2048, 1, 25600, 160, 8, id="1t"),
]


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize(("s", "b", "h", "a", "t"), SHAPES)
def test_gpt_layer_reproduces_korthikanti(
    s: int, b: int, h: int, a: int, t: int, setting: str
) -> None:
    layer = layer_of(gpt(hidden=h, heads=a, seq_len=s), seq_len=s, impl=MEGATRON_UNFUSED)
    use_tp, sp, selective = SETTINGS[setting]
    got = layer_bytes(layer, s=s, b=b, t=t if use_tp else 1, sp=sp, selective=selective)
    expected = korthikanti(s, b, h, a, t, setting)
    assert got == pytest.approx(float(expected), rel=1e-12, abs=0)


def test_tiny_gpt_layer_by_hand() -> None:
    # s=128, b=4, h=64, a=4, t=2: sbh = 32768, 5as/h = 40, statistics 8·s·b = 4096
    layer = layer_of(gpt(hidden=64, heads=4, seq_len=128), seq_len=128, impl=MEGATRON_UNFUSED)
    by_setting = {
        "none": 32768 * 74 + 4096,  # 2_428_928
        "tp": 32768 * (10 + 12 + 20) + 4096,  # 1_380_352
        "tp+sp": 32768 // 2 * 74 + 2048,  # 1_214_464
        "tp+selective": 32768 * 22 + 4096,  # 724_992
        "tp+sp+selective": 34 * 32768 // 2 + 2048,  # 559_104
    }
    for setting, expected in by_setting.items():
        use_tp, sp, selective = SETTINGS[setting]
        got = layer_bytes(layer, s=128, b=4, t=2 if use_tp else 1, sp=sp, selective=selective)
        assert got == expected, setting


def test_gpt_layer_regions_follow_the_paper_breakdown() -> None:
    # Per token (h = 64, a = 4, s = 128): inside TP 24h (Q, K, V, projection input 8h;
    # GELU input and output 16h); outside it 10h (two norm inputs 4h, the attention and MLP
    # inputs 4h, two dropout masks 2h) + 8 statistics; scores 5as (softmax 2, mask 1, 2).
    layer = layer_of(gpt(hidden=64, heads=4, seq_len=128), seq_len=128, impl=MEGATRON_UNFUSED)
    assert layer.saved.tp == 24 * 64 == 1536
    assert layer.saved.sp == 10 * 64 + 8 == 648
    assert layer.saved.attention_scores == 5 * 4 * 128 == 2560
    assert layer.saved.ep_tp == 0


def test_full_recompute_keeps_the_layer_input() -> None:
    # Korthikanti: 2·s·b·h, the bf16 residual stream entering the layer
    layer = layer_of(gpt(hidden=64, heads=4, seq_len=128), seq_len=128, impl=MEGATRON_UNFUSED)
    assert 128 * 4 * layer.input_bytes_per_token == 2 * 128 * 4 * 64


@pytest.mark.parametrize("seq_len", [128, 1024, 8192])
def test_flash_attention_keeps_no_s_squared_terms(seq_len: int) -> None:
    # h = 64, a = 4: 34h + 8 statistics + the fp32 log-sum-exp, 4 bytes per head = 2200
    model = gpt(hidden=64, heads=4, seq_len=seq_len)
    layer = layer_of(model, seq_len=seq_len, impl=MEGATRON_FLASH)
    assert layer.saved.attention_scores == 4 * 4 == 16
    per_token = layer.saved.sharded(tp=1, sp_divisor=1, etp=1, selective=False)
    assert per_token == 34 * 64 + 8 + 16 == 2200
    # TP 2 with SP: everything halves, the log-sum-exp with the heads
    assert layer.saved.sharded(tp=2, sp_divisor=2, etp=1, selective=False) == 1100
    # selective recompute drops the log-sum-exp as well
    assert layer.saved.sharded(tp=1, sp_divisor=1, etp=1, selective=True) == 2184


def test_gqa_shrinks_keys_and_values_by_kv_over_a() -> None:
    # h = 64, a = 8, d = 8. MHA attention inside TP: q 64 + k 64 + v 64 + out 64 = 256
    # elements -> 512 bytes. With 2 KV heads k and v are 2·8 = 16 wide: 64 + 16 + 16 + 64
    # = 160 -> 320 bytes; K/V bytes 256 -> 64 = 256 · kv/a. The MLP adds 16h = 1024.
    mha = layer_of(gpt(hidden=64, heads=8, seq_len=128), seq_len=128, impl=MEGATRON_UNFUSED)
    gqa = layer_of(
        gpt(hidden=64, heads=8, seq_len=128, kv_heads=2), seq_len=128, impl=MEGATRON_UNFUSED
    )
    assert mha.saved.tp == 512 + 1024
    assert gqa.saved.tp == 320 + 1024
    assert mha.saved.tp - gqa.saved.tp == 2 * (2 * 64) * (1 - 2 / 8)
    # scores are per query head: unchanged; nothing outside TP changes
    assert gqa.saved.attention_scores == mha.saved.attention_scores == 5 * 8 * 128
    assert gqa.saved.sp == mha.saved.sp


def test_eager_swiglu_saves_four_f_wide_tensors_fused_three(tiny_model: ModelSpec) -> None:
    # tiny_model: h 64, a 8, kv 2 (d 8), f 128, SwiGLU, RMSNorm, no dropout, flash.
    # Attention inside TP: 2·(64 + 16 + 16 + 64) = 320. MLP: fused bias_swiglu keeps the
    # 2f first-linear output and the f second-linear input (3·2·f = 768); eager keeps
    # w1(x), w3(x), silu(w1 x) and the product (4·2·f = 1024).
    eager = Implementation(name="eager", residual_bytes=2, activation_bytes=2)
    fused = layer_of(tiny_model, seq_len=256, impl=MEGATRON_FLASH)
    plain = layer_of(tiny_model, seq_len=256, impl=eager)
    assert fused.saved.tp == 320 + 3 * 2 * 128 == 1088
    assert plain.saved.tp == 320 + 4 * 2 * 128 == 1344
    # outside TP: two RMSNorm inputs + rstd 2·(128 + 4), attention and MLP inputs 2·128
    assert fused.saved.sp == plain.saved.sp == 264 + 256
    assert fused.saved.attention_scores == plain.saved.attention_scores == 4 * 8
    # backward temporaries: two f-wide gradients fused, three eager
    assert fused.backward_workspace_per_token == 2 * 2 * 128
    assert plain.backward_workspace_per_token == 3 * 2 * 128


def llama_measure_tiny() -> ModelSpec:
    """benchmarks/measure's ``tiny`` preset: 2 layers, h 64, 4 heads of 16, 2 KV heads, f 128."""
    return ModelSpec(
        name="measure-tiny",
        num_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        num_kv_heads=2,
        ffn_hidden_size=128,
        vocab_size=256,
        max_position_embeddings=128,
        rope_theta=500_000.0,
    )


def test_autocast_layer_matches_the_measuring_script_docstring() -> None:
    # benchmarks/measure/llama.py, autocast over fp32 weights, per token (b = s = 1),
    # h = 64, n_q = 4, kv = n_kv·d = 32, f = 128:
    #   RMSNorm x2      2·(4h + 4)             = 520
    #   q/k/v input     3·2h                   = 384
    #   SDPA            2h + 2·2·kv + 2h + 4n_q = 128 + 128 + 128 + 16 = 400
    #   wo input        0 (shares the SDPA output)
    #   MLP             2·2h + 4·2f            = 256 + 1024 = 1280
    #   total                                  = 2584
    impl = Implementation(
        name="autocast", residual_bytes=4, activation_bytes=2, casts_linear_inputs=True,
        casts_weights=True,
    )  # fmt: skip
    layer = layer_of(llama_measure_tiny(), seq_len=128, impl=impl)
    assert layer.saved.sharded(tp=1, sp_divisor=1, etp=1, selective=False) == 2584
    assert layer.input_bytes_per_token == 4 * 64  # fp32 residual stream
    # one bf16 copy per Linear weight: wq 64·64 + wk, wv 2·64·32 + wo 64·64 + 3·64·128
    assert layer.weight_cast_bytes == 2 * (4096 + 4096 + 4096 + 24576) == 73728
    # the framework table gives the same kernels for plain PyTorch with autocast states
    assert implementation(
        framework="pytorch", layout=state_layout("autocast"), precision="bf16"
    ) == Implementation(
        name="pytorch-autocast", residual_bytes=4, activation_bytes=2, flash_attention=True,
        casts_linear_inputs=True, casts_weights=True, eager=True,
    )  # fmt: skip


def test_pure_bf16_layer_matches_the_measuring_script_docstring() -> None:
    # llama.py, pure bf16, per token: RMSNorm x2 2·(2h + 4) = 264; q/k/v input 2h = 128;
    # SDPA 400 (as above); MLP 2h + 4·2f = 1152; total 1944. No weight casts.
    impl = implementation(framework="pytorch", layout=state_layout("bf16"), precision="bf16")
    layer = layer_of(llama_measure_tiny(), seq_len=128, impl=impl)
    assert layer.saved.sharded(tp=1, sp_divisor=1, etp=1, selective=False) == 1944
    assert layer.weight_cast_bytes == 0.0
    assert layer.input_bytes_per_token == 2 * 64


def test_head_and_embedding_saved_bytes_match_the_measuring_script() -> None:
    # llama.py head, per token: final norm input + rstd (2h + 4), the output Linear's bf16
    # input 2h, fp32 log-softmax 4V; transient bf16 + fp32 logits 6V. Embedding: int64 ids.
    impl = implementation(framework="pytorch", layout=state_layout("bf16"), precision="bf16")
    graph = build_graph(llama_measure_tiny(), seq_len=128, implementation=impl)
    assert graph.output.saved.tp == 4 * 256
    assert graph.output.saved.sp == 2 * 64 + 4 + 2 * 64
    # eager loss: bf16 logits + fp32 copy forward; nll and log_softmax gradients backward
    assert graph.output.forward_transient_per_token == 6 * 256
    assert graph.output.backward_transient_per_token == 8 * 256
    assert graph.embedding.saved.sp == 8
    autocast = implementation(
        framework="pytorch", layout=state_layout("autocast"), precision="bf16"
    )
    head = build_graph(llama_measure_tiny(), seq_len=128, implementation=autocast).output
    assert head.saved.sp == 4 * 64 + 4 + 2 * 64
    assert head.weight_cast_bytes == 2 * 256 * 64


def test_llama_layer_params_split_norms_replicated(tiny_model: ModelSpec) -> None:
    # tiny_model: h 64, a 8, kv 2 (d 8), f 128, no biases. Attention 2·64² + 2·64·16 = 10240,
    # MLP 3·64·128 = 24576, two RMSNorms 2·64: only the norms are on every TP rank.
    layer = layer_of(tiny_model, seq_len=256, impl=MEGATRON_FLASH)
    assert layer.params.replicated == 128
    assert layer.params.tp == 10240 + 24576 == 34816
    assert layer.params.per_gpu(tp=4, expert_shards=1) == 34816 / 4 + 128


def test_row_parallel_biases_are_replicated_over_tp() -> None:
    # GPT, h 64, f 256: attention 4h² + qkv bias 3h + output bias h = 16640; MLP 2·h·f +
    # fc1 bias f + fc2 bias h = 33088; two LayerNorms 2·2h = 256; total 49984.
    # On every TP rank: both norms (256), the attention output bias (64) and the fc2 bias
    # (64), the two row-parallel biases; the column-parallel qkv and fc1 biases are split.
    layer = layer_of(gpt(hidden=64, heads=4, seq_len=128), seq_len=128, impl=MEGATRON_UNFUSED)
    assert layer.params.total == 49984
    assert layer.params.replicated == 256 + 64 + 64
