"""HuggingFace ``config.json`` -> a raw model record (the catalogue's data-file layout).

``hf_config_to_record(config)`` reads the architecture numbers of a decoder-only model
from its HuggingFace config and returns ``{"name", "family", "source": {"url", "note"},
"architecture": {...}}`` where ``architecture`` holds ``ModelSpec`` field names (nested
dicts for ``moe`` and ``mla``). ``planner/catalog.py`` validates the record into a spec;
this module imports nothing from the project (data packages sit below ``planner``: an
import-linter contract in pyproject.toml).

What the importer assumes, and what it refuses to assume:

* A key that is present is read verbatim (``head_dim`` is kept whenever the config has it).
* A missing key takes the default of the transformers config class for that
  ``model_type`` only when that default is a rule or a switch: ``num_key_value_heads``
  missing -> ``num_attention_heads`` (LlamaConfig), ``n_inner`` null -> 4·``n_embd``
  (GPT2Config), ``rms_norm_eps``, ``rope_theta``, the bias switches, and
  ``tie_word_embeddings`` (each default is written below with its config class).
  The values were read from transformers' ``configuration_*.py`` (v4 ``__init__``
  signatures and the v5 dataclass fields agree on every default used here).
* A missing key whose class default is just the size of a reference checkpoint
  (``hidden_size=4096``, Qwen2's ``num_key_value_heads=32``, Qwen3's ``head_dim=128``,
  Gemma-2's ``sliding_window=4096``) is an error naming the field: guessing a model's
  shape from another model's default would silently plan the wrong model.
* Anything ``ModelSpec`` cannot express (a per-layer pattern it has no field for,
  ``moe_layer_freq`` != 1, attention biases with MLA) is an error naming the key.
* RoPE scaling, partial rotary dimensions, logit soft-capping and router scoring details
  change no parameter count and have no ``ModelSpec`` field; they are ignored, and
  :func:`unmodelled` names those a config sets, so that the importer can say so.

Multimodal wrappers (Llava, Gemma 3, Qwen-VL, ...) nest the text model under
``text_config``; the importer reads that block.

The module is longer than the house guideline of ~400 lines because it is one reader per
model family, each next to the transformers defaults it relies on; splitting it by family
would separate the readers from the shared helpers and the one table that lists them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "HFImportError",
    "hf_config_to_record",
    "read_hf_config",
    "unmodelled",
]

UNMODELLED_KEYS = ("rope_scaling", "attn_logit_softcapping", "final_logit_softcapping")
"""Keys that change the computation but no size: the cost model does not see them."""


class HFImportError(ValueError):
    """A config.json that cannot be read, or that describes what ModelSpec cannot hold."""


_GELU = frozenset({"gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "gelu_python"})
_SWISH = frozenset({"silu", "swish"})
_MISSING = object()


class _Config:
    """Typed access to one config dict; every error names the key and the model_type.

    A key given as null counts as missing when the reader has a default (transformers
    treats ``num_key_value_heads: null`` as "use the default"); ``nullable`` keeps a null
    of a required key (``q_lora_rank: null``, ``sliding_window: null``).
    """

    def __init__(self, data: dict[str, Any], model_type: str) -> None:
        self.data = data
        self.model_type = model_type

    def error(self, message: str) -> HFImportError:
        return HFImportError(f"config.json: {message}")

    def _raw(self, keys: tuple[str, ...], default: Any, nullable: bool) -> tuple[str, Any]:
        for key in keys:
            value = self.data.get(key, _MISSING)
            if value is None and (nullable or default is not _MISSING):
                return key, None if nullable else default
            if value is not _MISSING and value is not None:
                return key, value
        if default is _MISSING:
            raise self.error(
                f"missing field '{keys[0]}' (required for model_type '{self.model_type}')"
            )
        return keys[0], default

    def integer(
        self, *keys: str, default: Any = _MISSING, minimum: int = 1, nullable: bool = False
    ) -> Any:
        """An integer >= ``minimum``; None only for a nullable key or a None default."""
        key, value = self._raw(keys, default, nullable)
        if value is None and (nullable or default is None):
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(
                f"field '{key}' must be an integer >= {minimum} "
                f"(model_type '{self.model_type}'), got {value!r}"
            )
        return value

    def number(self, *keys: str, default: Any = _MISSING) -> float:
        key, value = self._raw(keys, default, False)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(f"field '{key}' must be a number, got {value!r}")
        return float(value)

    def flag(self, key: str, default: Any = _MISSING) -> bool:
        key, value = self._raw((key,), default, False)
        if not isinstance(value, bool):
            raise self.error(f"field '{key}' must be true or false, got {value!r}")
        return value

    def text(self, key: str, default: Any = _MISSING) -> str:
        key, value = self._raw((key,), default, False)
        if not isinstance(value, str):
            raise self.error(f"field '{key}' must be a string, got {value!r}")
        return value

    def activation(self, key: str, default: str, *, gated: bool) -> str:
        """ModelSpec's mlp_activation for the HF activation name under ``key``."""
        act = self.text(key, default)
        if gated and act in _SWISH:
            return "swiglu"
        if gated and act in _GELU:
            return "geglu"
        if not gated and act in _GELU:
            return "gelu"
        if not gated and act == "relu":
            return "relu"
        kind = "gated (3-matrix)" if gated else "plain (2-matrix)"
        raise self.error(
            f"field '{key}' = {act!r} is not supported for the {kind} MLP of "
            f"model_type '{self.model_type}'"
        )

    def rope_theta(self, default: float, *aliases: str) -> float:
        """``rope_theta``, else ``rope_parameters.rope_theta`` (transformers v5), else aliases."""
        if self.data.get("rope_theta") is not None:
            return self.number("rope_theta")
        params = self.data.get("rope_parameters")
        if isinstance(params, dict):
            if params.get("rope_theta") is not None:
                return _Config(params, self.model_type).number("rope_theta")
            # v5 per-layer-type form: {"full_attention": {...}, "sliding_attention": {...}}
            thetas = {p.get("rope_theta") for p in params.values() if isinstance(p, dict)}
            thetas.discard(None)
            if len(thetas) == 1:
                return float(thetas.pop())
            if thetas:
                raise self.error(
                    f"rope_parameters gives different rope_theta per layer type {sorted(thetas)}; "
                    "ModelSpec has one rope_theta"
                )
        for alias in aliases:
            if self.data.get(alias) is not None:
                return self.number(alias)
        return default

    def dropouts(
        self, arch: dict[str, Any], *, hidden: str, attention: str, default: float
    ) -> None:
        """Set hidden/attention dropout from the given keys, only where nonzero."""
        for field, key in (("hidden_dropout", hidden), ("attention_dropout", attention)):
            value = self.number(key, default=default)
            if value:
                arch[field] = value


# --- shared pieces -----------------------------------------------------------------------


def _base(c: _Config, *, kv_from_heads: bool, head_dim_required: bool = False) -> dict[str, Any]:
    """The fields every Llama-style decoder has (layers, widths, heads, vocab, context).

    ``kv_from_heads``: a missing num_key_value_heads means MHA (LlamaConfig's rule);
    otherwise it is required. ``head_dim`` is read whenever present.
    """
    layers, hidden, heads = (
        c.integer(key) for key in ("num_hidden_layers", "hidden_size", "num_attention_heads")
    )
    kv_heads = heads if kv_from_heads else _MISSING
    arch: dict[str, Any] = {
        "num_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_kv_heads": c.integer("num_key_value_heads", default=kv_heads),
        "ffn_hidden_size": c.integer("intermediate_size"),
        "vocab_size": c.integer("vocab_size"),
        "max_position_embeddings": c.integer("max_position_embeddings"),
    }
    if head_dim_required or c.data.get("head_dim") is not None:
        arch["head_dim"] = c.integer("head_dim")
    return arch


def _rmsnorm(c: _Config, arch: dict[str, Any], *, eps: float, theta: float, tie: bool) -> None:
    arch["normalization"] = "rmsnorm"
    arch["norm_epsilon"] = c.number("rms_norm_eps", default=eps)
    arch["position_embedding"] = "rope"
    arch["rope_theta"] = c.rope_theta(theta)
    arch["tie_embeddings"] = c.flag("tie_word_embeddings", default=tie)
    c.dropouts(arch, hidden="hidden_dropout", attention="attention_dropout", default=0.0)


def _window_pattern(types: list[Any], num_layers: int) -> tuple[bool, int | None]:
    """Read a ``layer_types`` list as (any local layers, global_attention_every).

    global_attention_every is None when every layer is local, n when every n-th layer
    (counting from 1) attends globally. Raises ValueError for any other pattern.
    """
    local = [t == "sliding_attention" for t in types]
    if len(local) != num_layers:
        raise ValueError(f"has {len(local)} entries for {num_layers} layers")
    if not any(local):
        return False, None
    if all(local):
        return True, None
    every = local.index(False) + 1
    if all(is_local == ((i + 1) % every != 0) for i, is_local in enumerate(local)):
        return True, every
    raise ValueError("mixes local and global layers in a pattern ModelSpec cannot express")


def _sliding(c: _Config, arch: dict[str, Any], window: int, *, default_every: int | None) -> None:
    """Set sliding_window (+ global_attention_every) from ``layer_types`` or the default."""
    local, every = True, default_every
    if isinstance(c.data.get("layer_types"), list):
        try:
            local, every = _window_pattern(c.data["layer_types"], arch["num_layers"])
        except ValueError as error:
            raise c.error(f"field 'layer_types' {error}") from None
    if not local:
        return
    arch["sliding_window"] = window
    if every is not None:
        arch["global_attention_every"] = every


def _qwen_sliding(c: _Config, arch: dict[str, Any]) -> None:
    """Qwen2/Qwen3: windows only with use_sliding_window, on layers >= max_window_layers."""
    # Qwen2Config / Qwen3Config: use_sliding_window=False; layer i slides when
    # i >= max_window_layers (default 28) unless layer_types says otherwise.
    if not c.flag("use_sliding_window", default=False):
        return
    window = c.integer("sliding_window")
    if isinstance(c.data.get("layer_types"), list):
        _sliding(c, arch, window, default_every=None)
        return
    first = c.integer("max_window_layers", default=28, minimum=0)
    if first >= arch["num_layers"]:
        return
    if first > 0:
        raise c.error(
            f"use_sliding_window with max_window_layers={first} (full attention below layer "
            f"{first}, sliding from it on) is not expressible in ModelSpec"
        )
    arch["sliding_window"] = window


def _sparse_layers(c: _Config, num_layers: int) -> tuple[int, int] | None:
    """Qwen-MoE's decoder_sparse_step + mlp_only_layers -> (first_dense_layers, layer_freq).

    HF: layer i is MoE iff i not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0.
    None when no layer is MoE.
    """
    # Qwen2MoeConfig / Qwen3MoeConfig: decoder_sparse_step=1, mlp_only_layers=[] (None -> []).
    step = c.integer("decoder_sparse_step", default=1)
    dense_only = c.data.get("mlp_only_layers") or []
    if not isinstance(dense_only, list):
        raise c.error(f"field 'mlp_only_layers' must be a list, got {dense_only!r}")
    moe = [i for i in range(num_layers) if i not in dense_only and (i + 1) % step == 0]
    if not moe:
        return None
    first = moe[0]
    freq = moe[1] - moe[0] if len(moe) > 1 else num_layers - first
    if moe != list(range(first, num_layers, freq)):
        raise c.error(
            f"field 'mlp_only_layers' = {dense_only} with decoder_sparse_step={step} gives MoE "
            f"layers {moe}, which ModelSpec (leading dense layers, then every n-th) cannot express"
        )
    return first, freq


# --- families ------------------------------------------------------------------------------


def _llama(c: _Config) -> dict[str, Any]:
    # LlamaConfig: num_key_value_heads None -> num_attention_heads, head_dim None ->
    # hidden/heads, hidden_act="silu", rms_norm_eps=1e-6, rope_theta=10000.0,
    # tie_word_embeddings=False, attention_bias=False (q, k, v and o), mlp_bias=False.
    arch = _base(c, kv_from_heads=True)
    arch["mlp_activation"] = c.activation("hidden_act", "silu", gated=True)
    _rmsnorm(c, arch, eps=1e-6, theta=10000.0, tie=False)
    bias = c.flag("attention_bias", default=False)
    arch.update(qkv_bias=bias, attention_output_bias=bias, mlp_bias=c.flag("mlp_bias", False))
    return arch


def _mistral(c: _Config) -> dict[str, Any]:
    # MistralConfig / MixtralConfig: hidden_act="silu", rms_norm_eps 1e-6 / 1e-5, rope_theta
    # 10000.0 / 1e6, tie_word_embeddings=False; no biases (hard-coded in the modeling code).
    # Both default num_key_value_heads=8 and Mistral sliding_window=4096 (reference sizes,
    # so required here); a null sliding_window means full attention.
    mixtral = c.model_type == "mixtral"
    arch = _base(c, kv_from_heads=False)
    arch["mlp_activation"] = c.activation("hidden_act", "silu", gated=True)
    _rmsnorm(c, arch, eps=1e-5 if mixtral else 1e-6, theta=1e6 if mixtral else 10000.0, tie=False)
    window = c.integer("sliding_window", default=None if mixtral else _MISSING, nullable=True)
    if window is not None:
        arch["sliding_window"] = window
    if mixtral:
        # MixtralConfig: intermediate_size is the width of one expert; num_experts is an
        # alias of num_local_experts (attribute_map).
        arch["moe"] = {
            "num_experts": c.integer("num_local_experts", "num_experts"),
            "top_k": c.integer("num_experts_per_tok"),
            "expert_ffn_hidden_size": arch["ffn_hidden_size"],
        }
    return arch


def _qwen(c: _Config) -> dict[str, Any]:
    # Qwen2Config / Qwen2MoeConfig / Qwen3Config / Qwen3MoeConfig: hidden_act="silu",
    # rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False, no MLP bias.
    # Qwen2: q, k, v biased and o not, hard-coded in Qwen2Attention; Qwen2-MoE: the same
    # via Qwen2MoeConfig.qkv_bias=True; Qwen3(-MoE): attention_bias=False on q, k, v and o,
    # plus per-head q_norm/k_norm. Qwen3Config.head_dim=128 is a reference size (required);
    # Qwen3MoeConfig has no head_dim default (modeling: getattr(..., hidden // heads)).
    qwen3 = c.model_type.startswith("qwen3")
    arch = _base(c, kv_from_heads=False, head_dim_required=c.model_type == "qwen3")
    arch["mlp_activation"] = c.activation("hidden_act", "silu", gated=True)
    _rmsnorm(c, arch, eps=1e-6, theta=10000.0, tie=False)
    if qwen3:
        bias = c.flag("attention_bias", default=False)
        arch.update(qkv_bias=bias, attention_output_bias=bias, qk_norm=True)
    else:
        qkv = c.flag("qkv_bias", default=True) if c.model_type == "qwen2_moe" else True
        arch.update(qkv_bias=qkv, attention_output_bias=False)
    _qwen_sliding(c, arch)
    if c.model_type.endswith("_moe"):
        layers = _sparse_layers(c, arch["num_layers"])
        if layers is not None:
            moe: dict[str, Any] = {
                "num_experts": c.integer("num_experts", "num_local_experts"),
                "top_k": c.integer("num_experts_per_tok"),
                "expert_ffn_hidden_size": c.integer("moe_intermediate_size"),
                "first_dense_layers": layers[0],
                "layer_freq": layers[1],
            }
            if not qwen3:  # Qwen2-MoE: one shared expert behind a sigmoid gate Linear(h, 1)
                moe.update(
                    num_shared_experts=1,
                    shared_expert_ffn_hidden_size=c.integer("shared_expert_intermediate_size"),
                    shared_expert_gate=True,
                )
            arch["moe"] = moe
    return arch


def _deepseek(c: _Config) -> dict[str, Any]:
    # DeepseekV3Config (transformers) / DeepseekV2Config (deepseek-ai remote code):
    # hidden_act="silu", rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False,
    # attention_bias=False. num_key_value_heads is irrelevant to MLA (each head has its own
    # K/V from the shared latent); kept when given, else = heads.
    # Layer i is MoE iff i >= first_k_dense_replace (and i % moe_layer_freq == 0 in the
    # remote code, where moe_layer_freq defaults to 1).
    v3 = c.model_type == "deepseek_v3"
    arch = _base(c, kv_from_heads=True)
    arch.pop("head_dim", None)  # MLA: the head dims are the mla block's
    arch["mlp_activation"] = c.activation("hidden_act", "silu", gated=True)
    _rmsnorm(c, arch, eps=1e-6, theta=10000.0, tie=False)
    if c.flag("attention_bias", default=False):
        raise c.error("field 'attention_bias' = true with MLA is not expressible in ModelSpec")
    arch["mla"] = {
        # q_lora_rank: null means a plain query projection (DeepSeek-V2-Lite).
        "q_lora_rank": c.integer("q_lora_rank", nullable=True),
        "kv_lora_rank": c.integer("kv_lora_rank"),
        "qk_nope_head_dim": c.integer("qk_nope_head_dim"),
        "qk_rope_head_dim": c.integer("qk_rope_head_dim"),
        "v_head_dim": c.integer("v_head_dim"),
    }
    freq = c.integer("moe_layer_freq", default=1)
    if freq != 1:
        raise c.error(f"field 'moe_layer_freq' = {freq} is not supported (only 1)")
    # Aux-loss-free balancing adds a per-expert bias: topk_method "noaux_tc" (V3 remote
    # code default; transformers' DeepseekV3 router always has e_score_correction_bias).
    # DeepseekV2Config's default topk_method is "greedy" (no bias).
    method = c.text("topk_method", default="noaux_tc" if v3 else "greedy")
    arch["moe"] = {
        "num_experts": c.integer("n_routed_experts"),
        "top_k": c.integer("num_experts_per_tok"),
        "expert_ffn_hidden_size": c.integer("moe_intermediate_size"),
        "num_shared_experts": c.integer("n_shared_experts", minimum=0),
        "first_dense_layers": c.integer("first_k_dense_replace", minimum=0),
        "router_bias": method == "noaux_tc",
    }
    # Multi-token-prediction modules: in the checkpoint, not built by transformers.
    mtp = c.integer("num_nextn_predict_layers", default=0, minimum=0)
    if mtp:
        arch["mtp_layers"] = mtp
    return arch


def _gemma2(c: _Config) -> dict[str, Any]:
    # Gemma2Config: hidden_activation="gelu_pytorch_tanh" (what Gemma2MLP reads),
    # rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True, attention_bias=False
    # (q, k, v and o); 4 RMSNorms per layer; layer_types default: even layers slide, odd
    # layers are global. head_dim=256 and sliding_window=4096 are reference sizes: required.
    arch = _base(c, kv_from_heads=False, head_dim_required=True)
    arch["mlp_activation"] = c.activation("hidden_activation", "gelu_pytorch_tanh", gated=True)
    _rmsnorm(c, arch, eps=1e-6, theta=10000.0, tie=True)
    bias = c.flag("attention_bias", default=False)
    arch.update(qkv_bias=bias, attention_output_bias=bias, norms_per_layer=4)
    _sliding(c, arch, c.integer("sliding_window"), default_every=2)
    return arch


def _gpt_neox(c: _Config) -> dict[str, Any]:
    # GPTNeoXConfig: hidden_act="gelu", layer_norm_eps=1e-5, rotary_emb_base=10000,
    # tie_word_embeddings=False, use_parallel_residual=True, attention_bias=True (fused
    # query_key_value and dense); the MLP linears always have biases (GPTNeoXMLP).
    layers, hidden, heads = (
        c.integer(key) for key in ("num_hidden_layers", "hidden_size", "num_attention_heads")
    )
    arch: dict[str, Any] = {
        "num_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_kv_heads": heads,
        "ffn_hidden_size": c.integer("intermediate_size"),
        "vocab_size": c.integer("vocab_size"),
        "max_position_embeddings": c.integer("max_position_embeddings"),
        "mlp_activation": c.activation("hidden_act", "gelu", gated=False),
        "normalization": "layernorm",
        "norm_epsilon": c.number("layer_norm_eps", default=1e-5),
        "position_embedding": "rope",
        "rope_theta": c.rope_theta(10000.0, "rotary_emb_base"),
        "tie_embeddings": c.flag("tie_word_embeddings", default=False),
        "parallel_residual": c.flag("use_parallel_residual", default=True),
    }
    # GPTNeoXConfig: rotary_pct=0.25 (transformers v5 names it partial_rotary_factor).
    rotary = c.number("partial_rotary_factor", default=c.number("rotary_pct", default=0.25))
    if rotary != 1.0:
        arch["rotary_percent"] = rotary
    bias = c.flag("attention_bias", default=True)
    arch.update(qkv_bias=bias, attention_output_bias=bias, mlp_bias=True)
    c.dropouts(arch, hidden="hidden_dropout", attention="attention_dropout", default=0.0)
    return arch


def _gpt2(c: _Config) -> dict[str, Any]:
    # GPT2Config: n_inner=None -> 4·n_embd, activation_function="gelu_new",
    # layer_norm_epsilon=1e-5, resid_pdrop=attn_pdrop=0.1; tie_word_embeddings is the
    # PretrainedConfig default (True). Every linear has a bias (Conv1D); learned positions.
    # attribute_map lets the generic names stand for n_embd, n_layer, n_head, n_positions.
    layers = c.integer("n_layer", "num_hidden_layers")
    hidden = c.integer("n_embd", "hidden_size")
    heads = c.integer("n_head", "num_attention_heads")
    arch: dict[str, Any] = {
        "num_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_kv_heads": heads,
        "ffn_hidden_size": c.integer("n_inner", default=None) or 4 * hidden,
        "vocab_size": c.integer("vocab_size"),
        "max_position_embeddings": c.integer("n_positions", "max_position_embeddings"),
        "mlp_activation": c.activation("activation_function", "gelu_new", gated=False),
        "normalization": "layernorm",
        "norm_epsilon": c.number("layer_norm_epsilon", default=1e-5),
        "position_embedding": "learned",
        "tie_embeddings": c.flag("tie_word_embeddings", default=True),
        "qkv_bias": True,
        "attention_output_bias": True,
        "mlp_bias": True,
    }
    c.dropouts(arch, hidden="resid_pdrop", attention="attn_pdrop", default=0.1)
    return arch


def _falcon(c: _Config) -> dict[str, Any]:
    # FalconConfig: num_kv_heads None -> num_attention_heads, alibi=False,
    # new_decoder_architecture=False, multi_query=True, parallel_attn=True, bias=False (all
    # linears), layer_norm_epsilon=1e-5, max_position_embeddings=2048, rope_theta=10000.0,
    # ffn_hidden_size None -> 4·hidden, activation="gelu"; tie_word_embeddings is the
    # PretrainedConfig default (True). attribute_map: n_layer, n_head; n_embed is accepted.
    layers = c.integer("num_hidden_layers", "n_layer")
    hidden = c.integer("hidden_size", "n_embed")
    heads = c.integer("num_attention_heads", "n_head")
    new_arch = c.flag("new_decoder_architecture", default=False)
    parallel = c.flag("parallel_attn", default=True)
    # FalconAttention: num_kv_heads if new_decoder_architecture or not multi_query, else 1.
    kv = c.integer("num_kv_heads", "n_head_kv", default=heads)
    if not new_arch and c.flag("multi_query", default=True):
        kv = 1
    # FalconDecoderLayer: num_ln_in_parallel_attn None -> 2 with the new architecture;
    # parallel_attn with one norm shares input_layernorm between attention and MLP.
    num_ln = c.integer("num_ln_in_parallel_attn", default=None) or (2 if new_arch else 1)
    alibi = c.flag("alibi", default=False)
    bias = c.flag("bias", default=False)
    arch: dict[str, Any] = {
        "num_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_kv_heads": kv,
        "ffn_hidden_size": c.integer("ffn_hidden_size", default=None) or 4 * hidden,
        "vocab_size": c.integer("vocab_size"),
        "max_position_embeddings": c.integer("max_position_embeddings", default=2048),
        "mlp_activation": c.activation("activation", "gelu", gated=False),
        "normalization": "layernorm",
        "norm_epsilon": c.number("layer_norm_epsilon", default=1e-5),
        "position_embedding": "alibi" if alibi else "rope",
        "tie_embeddings": c.flag("tie_word_embeddings", default=True),
        "qkv_bias": bias,
        "attention_output_bias": bias,
        "mlp_bias": bias,
        # The new architecture runs attention and MLP in parallel whatever parallel_attn says.
        "parallel_residual": parallel or new_arch,
        "shared_layer_norm": parallel and num_ln != 2,
    }
    if not alibi:
        arch["rope_theta"] = c.rope_theta(10000.0)
    c.dropouts(arch, hidden="hidden_dropout", attention="attention_dropout", default=0.0)
    return arch


_FAMILIES: dict[str, tuple[str, Callable[[_Config], dict[str, Any]]]] = {
    "llama": ("llama", _llama),
    "mistral": ("mistral", _mistral),
    "mixtral": ("mixtral", _mistral),
    "qwen2": ("qwen2", _qwen),
    "qwen2_moe": ("qwen2_moe", _qwen),
    "qwen3": ("qwen3", _qwen),
    "qwen3_moe": ("qwen3_moe", _qwen),
    "deepseek_v2": ("deepseek_v2", _deepseek),
    "deepseek_v3": ("deepseek_v3", _deepseek),
    "gemma2": ("gemma2", _gemma2),
    "gpt_neox": ("gpt_neox", _gpt_neox),
    "gpt2": ("gpt2", _gpt2),
    "falcon": ("falcon", _falcon),
}
"""model_type -> (record family, reader)."""

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_FAMILIES))


# --- entry points --------------------------------------------------------------------------


def read_hf_config(path: str | Path) -> dict[str, Any]:
    """Parse a config.json file; errors name the path."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise HFImportError(f"cannot read HuggingFace config {path}: {reason}") from None
    except RecursionError:
        raise HFImportError(f"{path} nests JSON too deeply to be a config.json") from None
    except json.JSONDecodeError as error:
        raise HFImportError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise HFImportError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def unmodelled(config: dict[str, Any]) -> list[str]:
    """The keys of ``UNMODELLED_KEYS`` that ``config`` (or its ``text_config``) sets, each
    with its value, e.g. ``rope_scaling {'rope_type': 'llama3', 'factor': 8.0}``."""
    text = config.get("text_config") if isinstance(config, dict) else None
    data = text if isinstance(text, dict) else config
    if not isinstance(data, dict):
        return []
    return [f"{key} {data[key]!r}" for key in UNMODELLED_KEYS if data.get(key) is not None]


def hf_config_to_record(
    config: dict[str, Any], *, name: str | None = None, source: str | None = None
) -> dict[str, Any]:
    """A raw model record from a parsed HuggingFace config.json.

    ``name`` defaults to the lowercased last component of ``_name_or_path``, else to the
    name of the ``source`` file (its folder for ``.../config.json``, else its stem).
    ``source`` (a URL or path) defaults to the Hub page of ``_name_or_path`` when that is
    a Hub id.

    >>> record = hf_config_to_record({"model_type": "gpt2", "n_embd": 64, "n_layer": 2,
    ...     "n_head": 4, "vocab_size": 100, "n_positions": 128}, name="tiny-gpt2")
    >>> record["architecture"]["ffn_hidden_size"], record["architecture"]["tie_embeddings"]
    (256, True)
    """
    if not isinstance(config, dict):
        raise HFImportError(f"config.json must be a JSON object, not {type(config).__name__}")
    text = config.get("text_config")
    data = text if isinstance(text, dict) else config
    model_type = data.get("model_type")
    if model_type is None:
        where = "text_config" if data is text else "config.json"
        raise HFImportError(f"{where}: missing field 'model_type'")
    if model_type not in _FAMILIES:
        raise HFImportError(
            f"unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    family, reader = _FAMILIES[model_type]
    architecture = reader(_Config(data, model_type))
    name_or_path = config.get("_name_or_path") or data.get("_name_or_path")
    note = f"imported from a HuggingFace config.json (model_type {model_type!r})"
    version = config.get("transformers_version") or data.get("transformers_version")
    if version:
        note += f", written by transformers {version}"
    return {
        "name": name or _slug(name_or_path) or _slug(_name_from_path(source)) or _no_name(),
        "family": family,
        "source": {"url": source or _hub_url(name_or_path), "note": note},
        "architecture": architecture,
    }


def _slug(name_or_path: Any) -> str:
    """``meta-llama/Llama-3.1-8B`` -> ``llama-3.1-8b`` ("" when there is nothing usable)."""
    if not isinstance(name_or_path, str):
        return ""
    last = name_or_path.rstrip("/\\").replace("\\", "/").split("/")[-1]
    return re.sub(r"[^a-z0-9._-]+", "-", last.lower()).strip("-.")


def _name_from_path(source: str | None) -> str | None:
    """A local source file's model name: its folder for ``config.json``, else its stem."""
    if not source or "://" in source:
        return None
    path = Path(source)
    return path.parent.name if path.name == "config.json" else path.stem


def _no_name() -> str:
    raise HFImportError(
        "config.json: no name given and none to derive from '_name_or_path' or the file "
        "path; pass a name"
    )


def _hub_url(name_or_path: Any) -> str | None:
    """The Hub page for an ``owner/name`` id; None for local paths."""
    hub_id = isinstance(name_or_path, str) and re.fullmatch(r"\w[\w.-]*/[\w.-]+", name_or_path)
    return f"https://huggingface.co/{name_or_path}" if hub_id else None
