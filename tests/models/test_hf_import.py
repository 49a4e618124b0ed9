"""HuggingFace config.json importer: published configs -> specs with exact parameter counts.

The fixtures under tests/fixtures/hf/ are the published config.json files of the models
(verbatim keys and values), named by catalogue name. The expected parameter counts are
worked out by hand from those same configs (weight-matrix sizes summed layer by layer), and
each rounds to the size its publisher states.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import models_db
from models_db.hf_import import (
    SUPPORTED_MODEL_TYPES,
    HFImportError,
    hf_config_to_record,
    read_hf_config,
)
from planner.graph.params import count_params
from planner.specs.model import ModelSpec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hf"
FIXTURE_NAMES = sorted(path.stem for path in FIXTURES.glob("*.json"))

# Hand counts from config.json (total, active); GPT-NeoX-20B from its model card
# ("20554567680").
EXPECTED_PARAMS: dict[str, tuple[int, int | None]] = {
    "llama-3.1-8b": (8_030_261_248, None),
    "llama-3.1-70b": (70_553_706_496, None),
    "qwen2.5-7b": (7_615_616_512, None),
    "qwen3-8b": (8_190_735_360, None),
    "gpt2": (124_439_808, None),
    "mixtral-8x7b": (46_702_792_704, 12_879_925_248),
    "deepseek-v3": (671_026_419_200, 37_552_297_472),
    "gpt-neox-20b": (20_554_567_680, None),
}


def load(name: str) -> dict[str, Any]:
    return read_hf_config(FIXTURES / f"{name}.json")


def spec_of(record: dict[str, Any]) -> ModelSpec:
    source = record["source"]
    url = source.get("url") if isinstance(source, dict) else source
    return ModelSpec(
        name=record["name"], family=record["family"], source=url, **record["architecture"]
    )


def import_spec(config: dict[str, Any], name: str = "test-model") -> ModelSpec:
    return spec_of(hf_config_to_record(config, name=name))


def test_every_supported_type_has_a_fixture() -> None:
    covered = {load(name)["model_type"] for name in FIXTURE_NAMES}
    assert covered == set(SUPPORTED_MODEL_TYPES)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_imports(name: str) -> None:
    path = FIXTURES / f"{name}.json"
    record = hf_config_to_record(read_hf_config(path), name=name, source=str(path))
    assert set(record) == {"name", "family", "source", "architecture"}
    assert record["source"]["url"] == str(path)
    assert record["family"] == load(name)["model_type"]
    spec = spec_of(record)
    assert spec.name == name
    assert count_params(spec).total > 0


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_counts(name: str) -> None:
    counts = count_params(import_spec(load(name), name))
    total, active = EXPECTED_PARAMS[name]
    assert counts.total == total
    assert counts.active == (total if active is None else active)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_matches_catalogue(name: str) -> None:
    if name not in models_db.list_models():
        pytest.skip("not in catalogue")
    imported = import_spec(load(name), name)
    catalogue = spec_of(models_db.read_model(name))
    exclude = {"name", "source"}
    assert imported.model_dump(exclude=exclude) == catalogue.model_dump(exclude=exclude)


# --- shapes the importer must get right ----------------------------------------------------


def test_llama_reads_biases_and_gqa() -> None:
    spec = import_spec(load("llama-3.1-8b"))
    assert (spec.num_kv_heads, spec.head_dim, spec.rope_theta) == (8, None, 500000.0)
    assert not (spec.qkv_bias or spec.attention_output_bias or spec.mlp_bias or spec.tie_embeddings)
    biased = import_spec({**load("llama-3.1-8b"), "attention_bias": True, "mlp_bias": True})
    assert biased.qkv_bias and biased.attention_output_bias and biased.mlp_bias


def test_qwen_biases_and_qk_norm() -> None:
    qwen2 = import_spec(load("qwen2.5-7b"))
    assert qwen2.qkv_bias and not qwen2.attention_output_bias and not qwen2.qk_norm
    qwen3 = import_spec(load("qwen3-8b"))
    assert qwen3.qk_norm and not qwen3.qkv_bias and qwen3.head_dim == 128
    assert qwen2.sliding_window is None and qwen3.sliding_window is None


def test_qwen2_moe_shared_expert() -> None:
    spec = import_spec(load("qwen1.5-moe-a2.7b"))
    assert spec.moe is not None
    assert (spec.moe.num_experts, spec.moe.top_k, spec.moe.expert_ffn_hidden_size) == (60, 4, 1408)
    assert spec.moe.num_shared_experts == 1 and spec.moe.shared_expert_ffn_hidden_size == 5632
    assert spec.moe.shared_expert_gate and spec.qkv_bias and spec.num_moe_layers == 24


@pytest.mark.parametrize(
    ("step", "dense_only"), [(1, []), (2, []), (1, [0, 1]), (3, [2]), (2, [1, 3])]
)
def test_qwen_moe_layer_pattern_matches_hf_rule(step: int, dense_only: list[int]) -> None:
    config = {**load("qwen3-30b-a3b"), "decoder_sparse_step": step, "mlp_only_layers": dense_only}
    spec = import_spec(config)
    # Qwen3MoeDecoderLayer: MoE iff i not in mlp_only_layers and (i + 1) % step == 0.
    expected = [i not in dense_only and (i + 1) % step == 0 for i in range(spec.num_layers)]
    assert [spec.is_moe_layer(i) for i in range(spec.num_layers)] == expected


def test_qwen_moe_inexpressible_dense_layers() -> None:
    config = {**load("qwen3-30b-a3b"), "mlp_only_layers": [5]}
    with pytest.raises(HFImportError, match="'mlp_only_layers'"):
        hf_config_to_record(config, name="x")


def test_deepseek_v3_mla_and_moe() -> None:
    spec = import_spec(load("deepseek-v3"))
    assert spec.mla is not None and spec.moe is not None
    assert (spec.mla.q_lora_rank, spec.mla.kv_lora_rank) == (1536, 512)
    assert spec.moe.first_dense_layers == 3 and spec.moe.router_bias
    assert spec.num_moe_layers == 58 and spec.mtp_layers == 1
    plain_query = import_spec({**load("deepseek-v3"), "q_lora_rank": None})
    assert plain_query.mla is not None and plain_query.mla.q_lora_rank is None
    with pytest.raises(HFImportError, match="'moe_layer_freq'"):
        hf_config_to_record({**load("deepseek-v3"), "moe_layer_freq": 2}, name="x")


def test_deepseek_v2_router_has_no_bias() -> None:
    spec = import_spec(load("deepseek-v2"))
    assert spec.moe is not None and spec.mla is not None
    assert not spec.moe.router_bias and spec.moe.num_shared_experts == 2
    assert spec.num_moe_layers == 59 and spec.mtp_layers == 0


def test_gemma2_alternating_windows() -> None:
    spec = import_spec(load("gemma-2-9b"))
    assert (spec.norms_per_layer, spec.mlp_activation, spec.tie_embeddings) == (4, "geglu", True)
    assert (spec.sliding_window, spec.global_attention_every) == (4096, 2)
    assert spec.is_local_attention_layer(0) and not spec.is_local_attention_layer(1)


def test_gemma2_layer_types() -> None:
    config = load("gemma-2-9b")
    every_third = ["full_attention" if (i + 1) % 3 == 0 else "sliding_attention" for i in range(42)]
    assert import_spec({**config, "layer_types": every_third}).global_attention_every == 3
    irregular = ["full_attention"] * 2 + ["sliding_attention"] * 40
    with pytest.raises(HFImportError, match="'layer_types'"):
        hf_config_to_record({**config, "layer_types": irregular}, name="x")


def test_mistral_sliding_window() -> None:
    assert import_spec(load("mistral-7b")).sliding_window == 4096
    assert import_spec({**load("mistral-7b"), "sliding_window": None}).sliding_window is None
    assert import_spec(load("mixtral-8x7b")).sliding_window is None


def test_qwen_use_sliding_window() -> None:
    config = {**load("qwen2.5-7b"), "use_sliding_window": True, "sliding_window": 4096}
    assert import_spec({**config, "max_window_layers": 0}).sliding_window == 4096
    assert import_spec({**config, "max_window_layers": 28}).sliding_window is None
    with pytest.raises(HFImportError, match="max_window_layers=14"):
        hf_config_to_record({**config, "max_window_layers": 14}, name="x")


def test_gpt_family_layernorm_and_biases() -> None:
    gpt2 = import_spec(load("gpt2"))
    assert (gpt2.position_embedding, gpt2.ffn_hidden_size, gpt2.rope_theta) == (
        "learned",
        3072,
        None,
    )
    assert gpt2.tie_embeddings and gpt2.hidden_dropout == 0.1 and gpt2.attention_dropout == 0.1
    neox = import_spec(load("gpt-neox-20b"))
    assert neox.parallel_residual and neox.mlp_bias and neox.qkv_bias and not neox.tie_embeddings
    assert (neox.rope_theta, neox.mlp_activation, neox.normalization) == (
        10000.0,
        "gelu",
        "layernorm",
    )


def test_falcon_variants() -> None:
    big = import_spec(load("falcon-180b"))
    assert (big.num_kv_heads, big.ffn_hidden_size, big.max_position_embeddings) == (8, 59392, 2048)
    assert big.parallel_residual and not big.shared_layer_norm and big.tie_embeddings
    # Falcon-7B style: old architecture, multi-query, one LayerNorm shared by both branches.
    old = {
        "model_type": "falcon",
        "hidden_size": 4544,
        "num_attention_heads": 71,
        "num_hidden_layers": 32,
        "vocab_size": 65024,
        "multi_query": True,
        "parallel_attn": True,
        "new_decoder_architecture": False,
    }
    seven = import_spec(old)
    assert seven.num_kv_heads == 1 and seven.shared_layer_norm and seven.parallel_residual
    alibi = import_spec({**old, "alibi": True, "multi_query": False})
    assert alibi.position_embedding == "alibi" and alibi.rope_theta is None
    assert alibi.num_kv_heads == 71


# --- defaults: applied where transformers applies a rule, refused for reference sizes ------


def test_llama_defaults() -> None:
    config = load("llama-3.1-8b")
    for key in ("num_key_value_heads", "rope_theta", "rms_norm_eps", "tie_word_embeddings"):
        del config[key]
    spec = import_spec(config)
    assert spec.num_kv_heads == spec.num_attention_heads == 32  # LlamaConfig: None -> heads
    assert (spec.rope_theta, spec.norm_epsilon, spec.tie_embeddings) == (10000.0, 1e-6, False)
    config["num_key_value_heads"] = None
    assert import_spec(config).num_kv_heads == 32


def test_rope_parameters_of_transformers_v5() -> None:
    config = load("qwen3-8b")
    del config["rope_theta"]
    config["rope_parameters"] = {"rope_theta": 1000000, "rope_type": "default"}
    assert import_spec(config).rope_theta == 1e6


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("llama-3.1-8b", "num_hidden_layers"),
        ("qwen2.5-7b", "num_key_value_heads"),
        ("qwen3-8b", "head_dim"),
        ("gemma-2-9b", "sliding_window"),
        ("mixtral-8x7b", "num_local_experts"),
        ("deepseek-v3", "q_lora_rank"),
        ("gpt2", "n_positions"),
    ],
)
def test_missing_required_field(name: str, key: str) -> None:
    config = load(name)
    del config[key]
    message = (
        f"config.json: missing field '{key}' (required for model_type '{config['model_type']}')"
    )
    with pytest.raises(HFImportError) as raised:
        hf_config_to_record(config, name=name)
    assert str(raised.value) == message


def test_first_missing_shape_field_is_the_layer_count() -> None:
    with pytest.raises(HFImportError, match="'num_hidden_layers'"):
        hf_config_to_record({"model_type": "llama", "hidden_size": 4096}, name="x")


def test_wrong_type_is_named() -> None:
    with pytest.raises(HFImportError, match="field 'hidden_size' must be an integer"):
        hf_config_to_record({**load("llama-3.1-8b"), "hidden_size": "4096"}, name="x")


# --- bad input and wrappers --------------------------------------------------------------


def test_unsupported_model_type() -> None:
    with pytest.raises(HFImportError) as raised:
        hf_config_to_record({"model_type": "bert", "hidden_size": 768}, name="bert")
    assert str(raised.value).startswith("unsupported model_type 'bert'; supported: deepseek_v2,")
    assert isinstance(raised.value, ValueError)


def test_unsupported_activation() -> None:
    with pytest.raises(HFImportError, match="'hidden_act' = 'tanh'"):
        hf_config_to_record({**load("llama-3.1-8b"), "hidden_act": "tanh"}, name="x")


def test_invalid_json_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama",')
    with pytest.raises(HFImportError, match="is not valid JSON") as raised:
        read_hf_config(path)
    assert str(path) in str(raised.value)


def test_unreadable_and_non_object_files(tmp_path: Path) -> None:
    missing = tmp_path / "absent.json"
    with pytest.raises(HFImportError, match="cannot read") as raised:
        read_hf_config(missing)
    assert str(missing) in str(raised.value)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(HFImportError, match="must hold a JSON object"):
        read_hf_config(listing)


def test_text_config_wrapper() -> None:
    inner = load("llama-3.1-8b")
    wrapper = {
        "_name_or_path": "llava-hf/Llava-Next-Llama3-8B",
        "model_type": "llava_next",
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024},
        "text_config": copy.deepcopy(inner),
    }
    record = hf_config_to_record(wrapper)
    assert record["name"] == "llava-next-llama3-8b"
    assert record["architecture"] == hf_config_to_record(inner, name="x")["architecture"]


def test_name_and_source_from_name_or_path() -> None:
    record = hf_config_to_record({**load("gpt2"), "_name_or_path": "openai-community/gpt2"})
    assert record["name"] == "gpt2"
    assert record["source"]["url"] == "https://huggingface.co/openai-community/gpt2"
    local = hf_config_to_record({**load("gpt2"), "_name_or_path": "/ckpt/My_GPT2/"})
    assert local["name"] == "my_gpt2" and local["source"]["url"] is None
    with pytest.raises(HFImportError, match="no name given"):
        hf_config_to_record(load("gpt2"))


def test_name_from_the_source_path() -> None:
    path = str(FIXTURES / "gpt2.json")
    assert hf_config_to_record(load("gpt2"), source=path)["name"] == "gpt2"
    folder = "/models/GPT2-Small/config.json"
    assert hf_config_to_record(load("gpt2"), source=folder)["name"] == "gpt2-small"
    with pytest.raises(HFImportError, match="no name given"):
        hf_config_to_record(load("gpt2"), source="https://example.com/config.json")


def test_import_through_the_catalog(tmp_path: Path) -> None:
    catalog = pytest.importorskip("planner.catalog")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**load("qwen3-8b"), "_name_or_path": "Qwen/Qwen3-8B"}))
    spec = catalog.import_hf_config(path)
    assert spec.name == "qwen3-8b" and count_params(spec).total == 8_190_735_360
