"""The catalogue routes, and importing a HuggingFace config.json into the service."""

from __future__ import annotations

import json
from pathlib import Path

from api_support import SMALL_ESTIMATE, assert_problem

from planner import catalog

HF = Path(__file__).resolve().parents[1] / "fixtures" / "hf"


def test_models_list_and_show(client, run_cli) -> None:
    listed = client.get("/v1/models").json()
    names = [entry["name"] for entry in listed]
    assert names == sorted(names) and "llama-3.1-8b" in names
    entry = client.get("/v1/models/llama-3.1-8b").json()
    assert entry["origin"] == "catalogue" and entry["display_name"]
    cli = json.loads(run_cli("models", "show", "llama-3.1-8b", "--json").stdout)
    assert {key: entry[key] for key in cli} == cli
    assert_problem(client.get("/v1/models/gpt-99"), 404, "unknown-name")
    assert_problem(client.get("/v1/models/-rf"), 422, "invalid-request")


def test_hardware_lists(client) -> None:
    gpus = {gpu["id"] for gpu in client.get("/v1/gpus").json()}
    assert "h100-sxm" in gpus
    assert client.get("/v1/gpus/h100-sxm").json() == catalog.load_gpu("h100-sxm").model_dump(
        mode="json"
    )
    clusters = {entry["id"]: entry for entry in client.get("/v1/clusters").json()}
    assert clusters["dgx-h100"]["gpus_per_node"] == 8
    assert clusters["dgx-h100"]["gpu"]["id"] == "h100-sxm"
    assert client.get("/v1/clusters/dgx-h100").json() == clusters["dgx-h100"]
    assert_problem(client.get("/v1/clusters/dgx-z9"), 404, "unknown-name")
    links = {link["id"] for link in client.get("/v1/interconnects").json()}
    assert {"nvlink4", "ib-ndr"} <= links


def test_import_a_config_then_use_it_by_name(client) -> None:
    config = json.loads((HF / "llama-3.1-8b.json").read_text())
    response = client.post("/v1/models/import?name=my-llama", json=config)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/v1/models/my-llama"
    imported = response.json()
    assert imported["origin"] == "imported"
    expected = catalog.import_hf_config(config, name="my-llama")
    assert imported["spec"] == expected.model_dump(mode="json")

    again = client.post("/v1/models/import?name=my-llama", json=config)
    assert again.status_code == 200 and again.json() == imported
    # the stored model is the spec; what the importer left out is said at import time only
    assert client.get("/v1/models/my-llama").json() == {**imported, "not_modelled": []}
    assert "my-llama" in [entry["name"] for entry in client.get("/v1/models").json()]

    by_name = client.post("/v1/estimate", json={**SMALL_ESTIMATE, "model": "my-llama"})
    inline = client.post(
        "/v1/estimate", json={**SMALL_ESTIMATE, "model": expected.model_dump(mode="json")}
    )
    assert by_name.status_code == 200 and by_name.json() == inline.json()


def test_import_conflicts_and_bad_configs(client) -> None:
    config = json.loads((HF / "llama-3.1-8b.json").read_text())
    assert_problem(client.post("/v1/models/import?name=llama-3.1-8b", json=config), 409, "conflict")
    client.post("/v1/models/import?name=mine", json=config)
    other = {**config, "num_hidden_layers": 16}
    assert_problem(client.post("/v1/models/import?name=mine", json=other), 409, "conflict")
    body = assert_problem(
        client.post("/v1/models/import?name=x", json={"model_type": "bert"}), 422, "import-failed"
    )
    assert "bert" in body["detail"]
    huge = {**config, "num_hidden_layers": 100_000}
    body = assert_problem(client.post("/v1/models/import?name=y", json=huge), 422, "invalid-spec")
    assert "num_layers" in body["detail"]
    assert_problem(client.post("/v1/models/import", json=[1, 2]), 422, "invalid-request")


def test_import_reports_the_keys_it_does_not_model(client) -> None:
    config = json.loads((HF / "llama-3.1-8b.json").read_text())
    assert config["rope_scaling"]["rope_type"] == "llama3"
    imported = client.post("/v1/models/import?name=scaled-rope", json=config)
    assert imported.status_code == 201, imported.text
    (note,) = imported.json()["not_modelled"]
    assert note.startswith("rope_scaling") and "llama3" in note
