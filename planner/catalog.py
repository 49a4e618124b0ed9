"""Names and files to specs: the bridge from the data packages to validated pydantic specs.

``models_db`` and ``hardware_db`` return plain records checked against their file schemas;
this module turns them into ``ModelSpec``, ``GPUSpec``, ``LinkSpec`` and ``ClusterSpec``, and
maps the data packages' errors onto autopar's own (``UnknownNameError``, ``SpecError``).
A model reference is a catalogue name, a path to our model file (TOML, YAML or JSON, either
the catalogue's layout with an ``[architecture]`` table or the spec's fields at the top
level), or a path to a HuggingFace ``config.json`` (recognised by its ``model_type``).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

import hardware_db
import models_db
from models_db import hf_import
from planner.errors import ImportFormatError, SpecError, UnknownNameError
from planner.specs._base import spec_error
from planner.specs.hardware import ClusterSpec, GPUSpec, LinkSpec
from planner.specs.model import ModelSpec


@dataclass(frozen=True)
class CatalogModel:
    """A catalogue model: its spec and the officially stated parameter count with its source."""

    spec: ModelSpec
    display_name: str
    stated_params_total: float
    stated_params_active: float | None
    stated_rounding: float
    stated_source: str


def model_from_record(record: dict[str, Any]) -> ModelSpec:
    """Validate a data-file record (``name``, ``family``, ``source``, ``architecture``)."""
    name = record.get("name", "?")
    source = record.get("source") or {}
    try:
        return ModelSpec(
            name=name,
            family=record.get("family", "custom"),
            source=source.get("url") if isinstance(source, dict) else str(source),
            **record["architecture"],
        )
    except ValidationError as error:
        raise spec_error(error, what=f"model {name}") from None


def catalog_model(name: str) -> CatalogModel:
    """The catalogue entry called ``name``."""
    try:
        record = models_db.read_model(name)
    except models_db.UnknownModelError as error:
        raise UnknownNameError(str(error)) from None
    stated = record["stated_params"]
    return CatalogModel(
        spec=model_from_record(record),
        display_name=record["display_name"],
        stated_params_total=float(stated["total"]),
        stated_params_active=float(stated["active"]) if "active" in stated else None,
        stated_rounding=float(stated["rounding"]),
        stated_source=stated["source"],
    )


def list_catalog_models() -> list[CatalogModel]:
    """Every catalogue model, sorted by name."""
    return [catalog_model(name) for name in models_db.list_models()]


def import_hf_config(config: str | Path | dict[str, Any], *, name: str | None = None) -> ModelSpec:
    """A ``ModelSpec`` from a HuggingFace ``config.json`` (a path or the parsed dict)."""
    try:
        if isinstance(config, dict):
            record = hf_import.hf_config_to_record(config, name=name)
        else:
            path = Path(config)
            record = hf_import.hf_config_to_record(
                hf_import.read_hf_config(path), name=name, source=str(path)
            )
    except hf_import.HFImportError as error:
        raise ImportFormatError(str(error)) from None
    return model_from_record(record)


def load_model(ref: str) -> ModelSpec:
    """A model by catalogue name or file path (see the module docstring)."""
    path = Path(ref)
    if not path.suffix or not path.exists():
        if path.suffix in (".json", ".toml", ".yaml", ".yml"):
            raise SpecError(f"model: file not found: {ref}")
        return catalog_model(ref).spec
    data = _read_mapping(path, what="model")
    if "model_type" in data or "text_config" in data:
        return import_hf_config(path)
    if "architecture" in data:
        return model_from_record({"name": data.get("name", path.stem), **data})
    try:
        return ModelSpec(**{"name": path.stem, **data})
    except ValidationError as error:
        raise spec_error(error, what=f"model file {path.name}") from None


def _read_mapping(path: Path, *, what: str) -> dict[str, Any]:
    """Parse a TOML, YAML or JSON file into a dict, with a one-line error on failure."""
    try:
        text = path.read_text()
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"{what}: cannot read {path}: {error}") from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as error:
        message = str(error).splitlines()[0]
        raise SpecError(f"{what}: {path} is not valid {path.suffix[1:]}: {message}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{what}: {path} must hold a mapping of fields, not {type(data).__name__}")
    return data


def _hardware_record(reader: Any, ident: str) -> dict[str, Any]:
    try:
        return dict(reader(ident))
    except hardware_db.UnknownHardwareError as error:
        raise UnknownNameError(str(error)) from None


def _with_source(record: dict[str, Any]) -> dict[str, Any]:
    """Flatten a data file's ``[source]`` table to the spec's ``source`` URL."""
    source = record.get("source")
    return {**record, "source": source["url"] if isinstance(source, dict) else source}


def load_gpu(gpu_id: str) -> GPUSpec:
    """A catalogue GPU by id (``h100-sxm``)."""
    record = _with_source(_hardware_record(hardware_db.read_gpu, gpu_id))
    try:
        return GPUSpec(**record)
    except ValidationError as error:
        raise spec_error(error, what=f"gpu {gpu_id}") from None


def load_link(link_id: str) -> LinkSpec:
    """A catalogue interconnect by id (``nvlink4``, ``ib-ndr``)."""
    record = _with_source(_hardware_record(hardware_db.read_interconnect, link_id))
    try:
        return LinkSpec(**record)
    except ValidationError as error:
        raise spec_error(error, what=f"interconnect {link_id}") from None


def list_gpus() -> list[GPUSpec]:
    return [load_gpu(gpu_id) for gpu_id in hardware_db.list_gpus()]


def list_links() -> list[LinkSpec]:
    return [load_link(link_id) for link_id in hardware_db.list_interconnects()]


def list_cluster_presets() -> list[str]:
    return hardware_db.list_clusters()


def load_cluster(ref: str, *, nodes: int | None = None, gpus: int | None = None) -> ClusterSpec:
    """A cluster from a preset id or a file, sized by ``nodes`` or ``gpus`` (one node if neither).

    A file has the preset's keys (``gpu``, ``gpus_per_node``, ``intra_node``, ``inter_node``,
    ``nics_per_node``); ``gpu`` and the links may be ids or inline tables.
    """
    if nodes is not None and gpus is not None:
        raise SpecError("cluster: give nodes or gpus, not both")
    path = Path(ref)
    if path.suffix in (".json", ".toml", ".yaml", ".yml"):
        if not path.exists():
            raise SpecError(f"cluster: file not found: {ref}")
        record = _read_mapping(path, what="cluster")
    else:
        record = _hardware_record(hardware_db.read_cluster, ref)
    gpus_per_node = record.get("gpus_per_node")
    if not isinstance(gpus_per_node, int) or gpus_per_node < 1:
        raise SpecError(f"cluster {ref}: gpus_per_node must be a positive integer")
    if nodes is not None and nodes < 1:
        raise SpecError(f"cluster: nodes must be at least 1 (got {nodes})")
    if gpus is not None and gpus < 1:
        raise SpecError(f"cluster: gpus must be at least 1 (got {gpus})")
    num_gpus = gpus if gpus is not None else (nodes or 1) * gpus_per_node
    try:
        return ClusterSpec(
            name=str(record.get("id", record.get("name", path.stem))),
            gpu=_resolve(record, "gpu", load_gpu),
            num_gpus=num_gpus,
            gpus_per_node=gpus_per_node,
            intra_node=_resolve(record, "intra_node", load_link),
            inter_node=_resolve(record, "inter_node", load_link),
            nics_per_node=record.get("nics_per_node", gpus_per_node),
        )
    except ValidationError as error:
        raise spec_error(error, what=f"cluster {ref}") from None


def _resolve(record: dict[str, Any], key: str, loader: Any) -> Any:
    """A catalogue id (loaded) or an inline table (validated by the spec) under ``key``."""
    value = record.get(key)
    if value is None:
        raise SpecError(f"cluster: missing field '{key}'")
    if isinstance(value, str):
        return loader(value)
    if isinstance(value, dict):
        return _with_source(value)
    raise SpecError(f"cluster: field '{key}' must be a catalogue id or a table")
