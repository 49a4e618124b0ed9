"""ModelSpec: the architecture of a decoder-only transformer, as data.

A spec describes *what* is trained, independent of where (cluster) and how (layout).
It covers dense decoders (MHA, GQA, MQA), gated (SwiGLU/GeGLU) and plain (GELU/ReLU)
MLPs, tied or untied embeddings, RoPE / learned / ALiBi positions, Mixture-of-Experts
layers (routed and shared experts, leading dense layers) and DeepSeek's multi-head latent
attention (MLA).

Glossary (the names used throughout autopar):
  L  num_layers            h  hidden_size           a  num_attention_heads
  kv num_kv_heads          d  head_dim (h // a unless given explicitly)
  f  ffn_hidden_size       V  vocab_size            E  moe.num_experts
  k  moe.top_k             f_e moe.expert_ffn_hidden_size
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveInt, model_validator

from planner.specs import limits as L
from planner.specs._base import Spec

MlpActivation = Literal["swiglu", "geglu", "gelu", "relu", "squared_relu"]
GATED_ACTIVATIONS: frozenset[str] = frozenset({"swiglu", "geglu"})
Width = Annotated[int, Field(gt=0, le=L.MAX_WIDTH)]
"""A layer width (hidden, FFN, head and latent dimensions)."""


class MoESpec(Spec):
    """Mixture-of-Experts MLP layers.

    ``first_dense_layers`` leading layers use the dense MLP (DeepSeek's
    ``first_k_dense_replace``); after them every ``layer_freq``-th layer is an MoE layer
    (Qwen2-MoE's ``decoder_sparse_step``; 1 means every layer).
    """

    num_experts: int = Field(ge=2, le=L.MAX_EXPERTS, description="routed experts per MoE layer (E)")
    top_k: PositiveInt = Field(
        le=L.MAX_EXPERTS, description="routed experts each token is sent to (k)"
    )
    expert_ffn_hidden_size: PositiveInt = Field(
        le=L.MAX_WIDTH, description="FFN width of one routed expert"
    )
    num_shared_experts: int = Field(
        default=0, ge=0, le=L.MAX_EXPERTS, description="always-active shared experts"
    )
    shared_expert_ffn_hidden_size: PositiveInt | None = Field(
        default=None,
        le=L.MAX_WIDTH,
        description="FFN width of ONE shared expert; defaults to expert_ffn_hidden_size",
    )
    shared_expert_gate: bool = Field(
        default=False, description="a sigmoid gate (h params) on the shared expert (Qwen2-MoE)"
    )
    first_dense_layers: int = Field(
        default=0, ge=0, le=L.MAX_LAYERS, description="leading dense-MLP layers"
    )
    layer_freq: PositiveInt = Field(
        default=1, le=L.MAX_LAYERS, description="every n-th layer after them is MoE"
    )
    router_bias: bool = Field(
        default=False, description="per-expert routing bias (DeepSeek-V3 aux-loss-free balancing)"
    )
    capacity_factor: float | None = Field(
        default=None, gt=0, le=1e3, description="token capacity per expert (None: dropless routing)"
    )

    @model_validator(mode="after")
    def _check_top_k(self) -> MoESpec:
        if self.top_k > self.num_experts:
            raise ValueError(
                f"moe.top_k ({self.top_k}) must not exceed moe.num_experts ({self.num_experts})"
            )
        return self

    @property
    def shared_ffn_hidden_size(self) -> int:
        """Width of one shared expert."""
        return self.shared_expert_ffn_hidden_size or self.expert_ffn_hidden_size


class MLASpec(Spec):
    """DeepSeek multi-head latent attention (DeepSeek-V2/V3 ``config.json`` names).

    Queries are optionally compressed through a rank-``q_lora_rank`` latent (None: a
    plain projection); keys and values through a shared rank-``kv_lora_rank`` latent. Each
    head's query/key has ``qk_nope_head_dim`` + ``qk_rope_head_dim`` dimensions, its value
    ``v_head_dim``.
    """

    q_lora_rank: Width | None = None
    kv_lora_rank: Width
    qk_nope_head_dim: Width
    qk_rope_head_dim: Width
    v_head_dim: Width


class ModelSpec(Spec):
    """A decoder-only transformer. Field names follow Megatron-LM's argument names."""

    name: str = Field(min_length=1, description="catalogue name, e.g. llama-3.1-70b")
    family: str = Field(default="custom", description="architecture family, e.g. llama")
    num_layers: PositiveInt = Field(le=L.MAX_LAYERS, description="transformer blocks (L)")
    hidden_size: Width = Field(description="model width (h)")
    num_attention_heads: PositiveInt = Field(le=L.MAX_HEADS, description="query heads (a)")
    num_kv_heads: PositiveInt | None = Field(
        default=None,
        le=L.MAX_HEADS,
        description="key/value heads (GQA groups); None means = num_attention_heads",
    )
    head_dim: Width | None = Field(
        default=None, description="per-head dimension; None means hidden_size / num_attention_heads"
    )
    ffn_hidden_size: Width = Field(description="dense MLP width (f)")
    vocab_size: PositiveInt = Field(le=L.MAX_VOCAB, description="tokenizer vocabulary (unpadded)")
    max_position_embeddings: PositiveInt = Field(
        le=L.MAX_POSITIONS, description="longest trained context"
    )
    mlp_activation: MlpActivation = "swiglu"
    normalization: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    norm_epsilon: float = Field(default=1e-5, gt=0, le=1.0)
    norms_per_layer: Literal[2, 4] = Field(
        default=2, description="4 for Gemma-2 style pre- and post-norms around each sublayer"
    )
    qk_norm: bool = Field(default=False, description="per-head RMSNorm on queries and keys")
    position_embedding: Literal["rope", "learned", "alibi"] = "rope"
    rope_theta: float | None = Field(default=None, gt=0, le=1e12, description="RoPE base frequency")
    rotary_percent: float = Field(
        default=1.0, gt=0, le=1, description="share of each head's dims that RoPE rotates"
    )
    learned_position_offset: int = Field(
        default=0,
        ge=0,
        le=L.MAX_POSITIONS,
        description="extra rows in a learned position table (OPT uses 2)",
    )
    tie_embeddings: bool = Field(default=False, description="output layer shares the input table")
    embedding_norm: bool = Field(
        default=False, description="a norm right after the input embedding (BLOOM)"
    )
    qkv_bias: bool = Field(default=False, description="bias on the Q, K, V projections")
    attention_output_bias: bool = Field(default=False, description="bias on the output projection")
    mlp_bias: bool = Field(default=False, description="bias on the MLP linears")
    parallel_residual: bool = Field(
        default=False, description="attention and MLP read the same input (GPT-J/NeoX, Falcon)"
    )
    shared_layer_norm: bool = Field(
        default=False,
        description="one input norm per layer shared by attention and MLP (Falcon-7B style)",
    )
    sliding_window: PositiveInt | None = Field(
        default=None,
        le=L.MAX_POSITIONS,
        description="local attention window in tokens (None: full causal)",
    )
    global_attention_every: PositiveInt | None = Field(
        default=None,
        le=L.MAX_LAYERS,
        description="with sliding_window: every n-th layer attends globally (Gemma-2: 2)",
    )
    hidden_dropout: float = Field(default=0.0, ge=0, lt=1)
    attention_dropout: float = Field(default=0.0, ge=0, lt=1)
    moe: MoESpec | None = None
    mla: MLASpec | None = None
    mtp_layers: int = Field(
        default=0,
        ge=0,
        le=L.MAX_LAYERS,
        description="multi-token-prediction modules (DeepSeek-V3); not counted",
    )
    source: str | None = Field(default=None, description="where the numbers come from")

    @model_validator(mode="after")
    def _check_shape(self) -> ModelSpec:
        a, kv = self.num_attention_heads, self.kv_heads
        if kv > a:
            raise ValueError(f"num_kv_heads ({kv}) must not exceed num_attention_heads ({a})")
        if a % kv != 0:
            raise ValueError(
                f"num_attention_heads ({a}) must be divisible by num_kv_heads ({kv}): "
                "each key/value head serves a whole group of query heads"
            )
        if self.head_dim is None and self.hidden_size % a != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({a}) "
                "unless head_dim is given"
            )
        if self.moe is not None and self.moe.first_dense_layers >= self.num_layers:
            raise ValueError(
                f"moe.first_dense_layers ({self.moe.first_dense_layers}) must be smaller than "
                f"num_layers ({self.num_layers})"
            )
        if self.global_attention_every is not None and self.sliding_window is None:
            raise ValueError("global_attention_every requires sliding_window")
        if self.position_embedding == "rope" and self.rope_theta is None:
            raise ValueError("rope_theta is required when position_embedding is 'rope'")
        from planner.graph.params import count_params  # the graph imports this module

        total = count_params(self).total
        if total > L.MAX_PARAMS:
            raise ValueError(
                f"the model has {total:.3g} parameters, more than the bound of "
                f"{L.MAX_PARAMS:.0e} (a thousand times the largest model trained so far)"
            )
        return self

    # --- derived shape -------------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        """Key/value heads (equal to query heads for MHA)."""
        return self.num_kv_heads or self.num_attention_heads

    @property
    def kv_channels(self) -> int:
        """Per-head dimension d (Megatron's ``--kv-channels``)."""
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def gated_mlp(self) -> bool:
        """True for SwiGLU/GeGLU (three weight matrices), False for GELU/ReLU (two)."""
        return self.mlp_activation in GATED_ACTIVATIONS

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    @property
    def num_moe_layers(self) -> int:
        """How many of the L layers carry an MoE MLP."""
        return sum(self.is_moe_layer(index) for index in range(self.num_layers))

    def is_moe_layer(self, index: int) -> bool:
        """Whether layer ``index`` (0-based) has an MoE MLP instead of the dense one."""
        if self.moe is None or index < self.moe.first_dense_layers:
            return False
        return (index - self.moe.first_dense_layers) % self.moe.layer_freq == 0

    def is_local_attention_layer(self, index: int) -> bool:
        """Whether layer ``index`` attends only within ``sliding_window`` tokens."""
        if self.sliding_window is None:
            return False
        if self.global_attention_every is None:
            return True
        return (index + 1) % self.global_attention_every != 0
