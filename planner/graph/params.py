"""Parameter counts and training FLOPs per token, per layer and for the whole model.

Every count is the sum of the weight (and bias) tensor sizes that the HuggingFace and
Megatron-LM implementations allocate; the per-layer breakdown is the one the model graph
(and so the memory and time models) reads, so the totals here and the graph cannot
disagree.

Sources:
* Parameter formulas: Narayanan et al. 2021 (SC'21), Appendix "FLOP count" for the MHA
  layer (12·h² + 13·h per layer); GQA, gated MLP, MoE and MLA follow the weight shapes
  of the HF modeling code (LlamaAttention, MixtralSparseMoeBlock, DeepseekV3Attention).
* Training FLOPs per token: the "6N" rule of Kaplan et al. 2020 (Scaling Laws, section
  2.1 and Table 1: forward 2N + 2·L·n_ctx·d_attn per token, backward twice the forward)
  with N the active matrix-multiply parameters (the output projection counts, the input
  embedding lookup does not). The attention term is causal by default, 6·L·a·d·s for
  d_qk = d_v = d, which is what Megatron-LM's ``num_floating_point_operations`` counts;
  ``causal=False`` gives PaLM's 12·L·a·d·s (Chowdhery et al. 2022, Appendix B).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from planner.specs.model import ModelSpec

TRAINING_PASSES = 3
"""Forward (1) + backward (2: gradients of inputs and of weights): Kaplan et al. 2020."""

FLOPS_PER_MAC = 2


@dataclass(frozen=True)
class LayerParams:
    """Parameters of one transformer layer, split by sub-block.

    ``mlp_active`` counts the experts a token actually passes through (top-k routed plus
    shared) and equals ``mlp`` for a dense layer. ``*_matmul`` exclude biases and norms:
    they are the weights that enter matrix multiplications, the N of the 6N rule.
    """

    attention: int
    attention_matmul: int
    mlp: int
    mlp_active: int
    mlp_active_matmul: int
    norms: int

    @property
    def total(self) -> int:
        return self.attention + self.mlp + self.norms

    @property
    def active(self) -> int:
        return self.attention + self.mlp_active + self.norms

    @property
    def active_matmul(self) -> int:
        return self.attention_matmul + self.mlp_active_matmul


@dataclass(frozen=True)
class ParamCounts:
    """Whole-model parameter counts (integers, in parameters)."""

    total: int
    active: int
    embedding: int
    output_layer: int
    layers_total: int
    active_matmul: int
    """Active parameters that enter matrix multiplications, output projection included."""


def norm_params(model: ModelSpec, width: int) -> int:
    """One normalisation of ``width`` features: RMSNorm has a scale, LayerNorm scale and bias."""
    return width if model.normalization == "rmsnorm" else 2 * width


def _attention_weights(model: ModelSpec) -> tuple[int, int]:
    """(matmul weights, other params: biases and latent/qk norms) of one attention block."""
    h, a = model.hidden_size, model.num_attention_heads
    if model.mla is not None:
        mla = model.mla
        qk_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        if mla.q_lora_rank is None:
            q_matmul, q_norm = h * a * qk_dim, 0
        else:
            q_matmul = h * mla.q_lora_rank + mla.q_lora_rank * a * qk_dim
            q_norm = norm_params(model, mla.q_lora_rank)
        kv_matmul = h * (mla.kv_lora_rank + mla.qk_rope_head_dim) + mla.kv_lora_rank * a * (
            mla.qk_nope_head_dim + mla.v_head_dim
        )
        out_matmul = a * mla.v_head_dim * h
        return q_matmul + kv_matmul + out_matmul, q_norm + norm_params(model, mla.kv_lora_rank)
    d, kv = model.kv_channels, model.kv_heads
    matmul = h * a * d + 2 * h * kv * d + a * d * h
    other = 0
    if model.qkv_bias:
        other += a * d + 2 * kv * d
    if model.attention_output_bias:
        other += h
    if model.qk_norm:
        other += 2 * norm_params(model, d)
    return matmul, other


def mlp_params(model: ModelSpec, ffn_hidden_size: int) -> tuple[int, int]:
    """(matmul weights, biases) of one MLP (a dense MLP or one expert) of the given width."""
    h, f = model.hidden_size, ffn_hidden_size
    if model.gated_mlp:
        return 3 * h * f, (2 * f + h) if model.mlp_bias else 0
    return 2 * h * f, (f + h) if model.mlp_bias else 0


def layer_params(model: ModelSpec, index: int) -> LayerParams:
    """Parameters of layer ``index`` (0-based): dense or MoE as the spec says."""
    attention_matmul, attention_other = _attention_weights(model)
    norms_per_layer = 1 if model.shared_layer_norm else model.norms_per_layer
    norms = norms_per_layer * norm_params(model, model.hidden_size)
    if not model.is_moe_layer(index):
        matmul, bias = mlp_params(model, model.ffn_hidden_size)
        mlp = matmul + bias
        return LayerParams(
            attention=attention_matmul + attention_other,
            attention_matmul=attention_matmul,
            mlp=mlp,
            mlp_active=mlp,
            mlp_active_matmul=matmul,
            norms=norms,
        )
    moe = model.moe
    assert moe is not None  # is_moe_layer is False without an MoE spec
    expert_matmul, expert_bias = mlp_params(model, moe.expert_ffn_hidden_size)
    shared_matmul, shared_bias = mlp_params(model, moe.shared_ffn_hidden_size)
    router_matmul = model.hidden_size * moe.num_experts
    router_other = (moe.num_experts if moe.router_bias else 0) + (
        model.hidden_size if moe.shared_expert_gate else 0
    )
    shared = moe.num_shared_experts * (shared_matmul + shared_bias)
    routed = moe.num_experts * (expert_matmul + expert_bias)
    routed_active = moe.top_k * (expert_matmul + expert_bias)
    return LayerParams(
        attention=attention_matmul + attention_other,
        attention_matmul=attention_matmul,
        mlp=routed + shared + router_matmul + router_other,
        mlp_active=routed_active + shared + router_matmul + router_other,
        mlp_active_matmul=moe.top_k * expert_matmul
        + moe.num_shared_experts * shared_matmul
        + router_matmul,
        norms=norms,
    )


def embedding_params(model: ModelSpec) -> int:
    """Input side: token table, learned position table, embedding norm."""
    h = model.hidden_size
    count = model.vocab_size * h
    if model.position_embedding == "learned":
        count += (model.max_position_embeddings + model.learned_position_offset) * h
    if model.embedding_norm:
        count += norm_params(model, h)
    return count


def output_layer_params(model: ModelSpec) -> int:
    """Output side: final norm, plus the output projection when it is not tied."""
    final_norm = norm_params(model, model.hidden_size)
    if model.tie_embeddings:
        return final_norm
    return final_norm + model.vocab_size * model.hidden_size


@lru_cache(maxsize=256)
def count_params(model: ModelSpec) -> ParamCounts:
    """Total and active parameters (MTP modules excluded, as in the models' stated counts)."""
    layers = [layer_params(model, index) for index in range(model.num_layers)]
    embedding = embedding_params(model)
    output = output_layer_params(model)
    layers_total = sum(layer.total for layer in layers)
    return ParamCounts(
        total=embedding + layers_total + output,
        active=embedding + sum(layer.active for layer in layers) + output,
        embedding=embedding,
        output_layer=output,
        layers_total=layers_total,
        active_matmul=sum(layer.active_matmul for layer in layers)
        + model.vocab_size * model.hidden_size,
    )


def mean_attended_tokens(model: ModelSpec, index: int, seq_len: int, *, causal: bool) -> float:
    """Keys a query attends to on average in layer ``index`` for a sequence of ``seq_len``.

    Causal full attention: s/2 (Megatron's convention). A sliding window w < s: position i
    sees min(i, w) keys, on average w - w²/(2s) (the same continuous approximation,
    which reduces to s/2 at w = s). Non-causal: s.
    """
    if not causal:
        return float(seq_len)
    window = model.sliding_window if model.is_local_attention_layer(index) else None
    if window is None or window >= seq_len:
        return seq_len / 2
    return window - window * window / (2 * seq_len)


def attention_score_flops_per_token(
    model: ModelSpec, index: int, seq_len: int, *, causal: bool = True
) -> float:
    """Forward FLOPs per token of Q·Kᵀ and softmax·V in layer ``index``."""
    a = model.num_attention_heads
    if model.mla is not None:
        qk_dim = model.mla.qk_nope_head_dim + model.mla.qk_rope_head_dim
        v_dim = model.mla.v_head_dim
    else:
        qk_dim = v_dim = model.kv_channels
    keys = mean_attended_tokens(model, index, seq_len, causal=causal)
    return FLOPS_PER_MAC * a * (qk_dim + v_dim) * keys


@lru_cache(maxsize=1024)
def training_flops_per_token(model: ModelSpec, seq_len: int, *, causal: bool = True) -> float:
    """Model FLOPs (no recomputation) to train on one token of a ``seq_len`` sequence.

    6·N_active_matmul + 3·Σ_layers(attention-score forward FLOPs); see the module docstring
    for the sources. With MHA, causal attention and no window this is 6N + 6·L·a·d·s.
    """
    counts = count_params(model)
    attention = sum(
        attention_score_flops_per_token(model, index, seq_len, causal=causal)
        for index in range(model.num_layers)
    )
    return TRAINING_PASSES * (FLOPS_PER_MAC * counts.active_matmul + attention)
