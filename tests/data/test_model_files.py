"""Every models_db data file loads, cites its sources and matches the file schema."""

from __future__ import annotations

from pathlib import Path

import pytest

import models_db
from models_db import ModelDataError, UnknownModelError
from models_db._files import data_files, read_record_file

REQUIRED_MODELS = {
    # Narayanan et al. 2021, Table 1, Korthikanti et al. 2022 and Brown et al. 2020
    "gpt-1.7b",
    "gpt-3.6b",
    "gpt-7.5b",
    "gpt-18.4b",
    "gpt-39.1b",
    "gpt-76.1b",
    "gpt-145.6b",
    "gpt-310.1b",
    "gpt-529.6b",
    "gpt-1t",
    "gpt-22b",
    "gpt3-175b",
    # HuggingFace-config models
    "llama-2-7b",
    "llama-2-13b",
    "llama-2-70b",
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.1-405b",
    "mistral-7b",
    "mixtral-8x7b",
    "mixtral-8x22b",
    "qwen2.5-7b",
    "qwen2.5-72b",
    "qwen3-8b",
    "qwen3-32b",
    "qwen3-30b-a3b",
    "qwen3-235b-a22b",
    "deepseek-v2",
    "deepseek-v3",
    "gemma-2-9b",
    "gemma-2-27b",
    "nemotron-4-340b",
    "gpt-neox-20b",
    "bloom-176b",
    "opt-175b",
    "falcon-180b",
    "gpt2",
}

MODEL_NAMES = models_db.list_models()

VALID_MODEL = """\
name = "test-model"
display_name = "Test Model"
family = "llama"

[source]
url = "https://example.com/config.json"
note = "test record"

[stated_params]
total = 1.0e9
rounding = 1e8
source = "https://example.com/model-card"
note = "test record"

[architecture]
num_layers = 2
hidden_size = 64
num_attention_heads = 4
num_kv_heads = 4
ffn_hidden_size = 128
vocab_size = 1000
max_position_embeddings = 256
rope_theta = 10000.0
"""


def write_model(tmp_path: Path, text: str, stem: str = "test-model") -> Path:
    path = tmp_path / f"{stem}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def check_fails(tmp_path: Path, text: str, *fragments: str, family: str | None = None) -> None:
    """The file written from ``text`` is rejected with a message containing ``fragments``."""
    path = write_model(tmp_path, text)
    with pytest.raises(ModelDataError) as caught:
        read_record_file(path, family=family)
    message = str(caught.value)
    assert message.startswith(f"{family}/test-model.toml: " if family else "test-model.toml: ")
    for fragment in fragments:
        assert fragment in message, message


# --- the shipped files ------------------------------------------------------------------


def test_catalogue_has_the_required_models() -> None:
    assert len(MODEL_NAMES) >= 25
    assert set(MODEL_NAMES) >= REQUIRED_MODELS, sorted(REQUIRED_MODELS - set(MODEL_NAMES))


def test_list_is_sorted_and_unique() -> None:
    assert sorted(set(MODEL_NAMES)) == MODEL_NAMES


@pytest.mark.parametrize(
    ("family", "entry"), data_files(), ids=[f"{f}/{e.name}" for f, e in data_files()]
)
def test_every_file_passes_the_schema(family: str, entry: object) -> None:
    record = read_record_file(entry, family=family)  # type: ignore[arg-type]
    assert record["name"] == entry.name.removesuffix(".toml")  # type: ignore[attr-defined]
    assert record["family"] == family


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_cites_its_sources(name: str) -> None:
    record = models_db.read_model(name)
    assert record["name"] == name
    assert record["source"]["url"].startswith("https://")
    assert record["source"]["note"].strip()
    stated = record["stated_params"]
    assert stated["source"].startswith("https://")
    assert stated["note"].strip()
    assert 0 < stated["rounding"] <= stated["total"]
    assert set(record["architecture"]).isdisjoint({"name", "family", "source"})


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_moe_models_state_active_params_and_dense_models_do_not(name: str) -> None:
    record = models_db.read_model(name)
    is_moe = "moe" in record["architecture"]
    assert ("active" in record["stated_params"]) == is_moe


def test_records_are_copies() -> None:
    models_db.read_model("gpt2")["architecture"]["hidden_size"] = 1
    assert models_db.read_model("gpt2")["architecture"]["hidden_size"] == 768


# --- the checker on malformed files -----------------------------------------------------


def test_valid_file_passes(tmp_path: Path) -> None:
    record = read_record_file(write_model(tmp_path, VALID_MODEL), family="llama")
    assert record["stated_params"]["total"] == 1.0e9


@pytest.mark.parametrize(
    ("old", "new", "fragments"),
    [
        ('display_name = "Test Model"\n', "", ["missing required key 'display_name'"]),
        ("[source]\nurl", "[origin]\nurl", ["unknown key 'origin'"]),
        ('url = "https://example.com/config.json"\n', "", ["missing required key 'source.url'"]),
        (
            'url = "https://example.com/config.json"',
            'url = ""',
            ["key 'source.url' must be a non-empty http(s) URL"],
        ),
        ("total = 1.0e9", "total = -1.0e9", ["key 'stated_params.total' must be a positive"]),
        ("total = 1.0e9", 'total = "1B"', ["key 'stated_params.total' must be a positive"]),
        ("rounding = 1e8", "rounding = 0", ["key 'stated_params.rounding' must be a positive"]),
        ("rounding = 1e8\n", "", ["missing required key 'stated_params.rounding'"]),
        ("rounding = 1e8", "rounding = 1e8\nactive = 2e9", ["'stated_params.active'", "exceed"]),
        ("rounding = 1e8", "rounding = 1e8\ntypo = 1", ["unknown key 'stated_params.typo'"]),
        ('family = "llama"', "family = 3", ["key 'family' must be"]),
        ('name = "test-model"', 'name = "Test-Model"', ["key 'name' must be a lowercase"]),
        ('name = "test-model"', 'name = "other-model"', ["key 'name'", "file stem"]),
        ("num_layers = 2", 'name = "x"\nnum_layers = 2', ["'architecture.name' is not allowed"]),
    ],
)
def test_malformed_file_names_the_key(
    tmp_path: Path, old: str, new: str, fragments: list[str]
) -> None:
    assert old in VALID_MODEL
    check_fails(tmp_path, VALID_MODEL.replace(old, new, 1), *fragments)


def test_architecture_must_be_a_table(tmp_path: Path) -> None:
    head, _ = VALID_MODEL.split("[architecture]")
    # a top-level key must come before the first table header
    check_fails(tmp_path, "architecture = 3\n" + head, "key 'architecture' must be a non-empty")


def test_missing_architecture_is_named(tmp_path: Path) -> None:
    head, _ = VALID_MODEL.split("[architecture]")
    check_fails(tmp_path, head, "missing required key 'architecture'")


def test_family_must_match_its_folder(tmp_path: Path) -> None:
    check_fails(tmp_path, VALID_MODEL, "key 'family' is 'llama'", "folder 'qwen2'", family="qwen2")


def test_invalid_toml_is_reported_with_the_file(tmp_path: Path) -> None:
    check_fails(tmp_path, "name = \n", "invalid TOML")


def test_non_toml_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(ModelDataError, match=r"model\.json: data files must end in \.toml"):
        read_record_file(path)


# --- unknown names ----------------------------------------------------------------------


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownModelError) as caught:
        models_db.read_model("llama-3-8b")
    assert isinstance(caught.value, KeyError)
    message = str(caught.value)  # no KeyError quotes around it
    assert message.startswith("unknown model 'llama-3-8b'; did you mean llama-3.1-8b")
    assert message.endswith("? (autopar models list shows all)")


def test_unknown_name_without_close_match_says_how_to_list() -> None:
    with pytest.raises(UnknownModelError) as caught:
        models_db.read_model("zzz")
    assert str(caught.value) == "unknown model 'zzz' (autopar models list shows all)"
