"""The catalogue: models (with HuggingFace import), GPUs, interconnects, cluster presets.

Imported models are stored in the database and usable by name in every request, like
catalogue models; a name that the catalogue already has, or that an import with a
different spec took, is a 409. Importing the same config under the same name again is
harmless (200).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response
from pydantic import ValidationError

import hardware_db
from api.deps import ModelsDep
from api.openapi import errors
from api.problems import ApiProblem
from api.schemas import ClusterEntry, ModelEntry
from api.spec_inputs import ModelInput
from models_db import hf_import
from planner import catalog
from planner.cli.catalog import model_summary
from planner.errors import UnknownNameError
from planner.specs import limits as L
from planner.specs._base import spec_error
from planner.specs.hardware import GPUSpec, LinkSpec
from planner.specs.model import ModelSpec

router = APIRouter(tags=["catalogue"])

NamePath = Annotated[str, Path(pattern=L.NAME_PATTERN)]


def _entry(spec: ModelSpec, *, origin: str, display_name: str | None = None) -> ModelEntry:
    summary = model_summary(spec)
    return ModelEntry(name=spec.name, display_name=display_name, origin=origin, **summary)  # type: ignore[arg-type]


@router.get("/models", response_model=list[ModelEntry], responses=errors())
def list_models(models: ModelsDep) -> list[ModelEntry]:
    """Every catalogue model, then every imported one, with sizes and FLOPs per token."""
    entries = [
        _entry(item.spec, origin="catalogue", display_name=item.display_name)
        for item in catalog.list_catalog_models()
    ]
    entries += [_entry(ModelSpec.model_validate(spec), origin="imported") for spec in models.all()]
    return entries


@router.get("/models/{name}", response_model=ModelEntry, responses=errors(404, 422))
def get_model(name: NamePath, models: ModelsDep) -> ModelEntry:
    """One model (catalogue first, then imported)."""
    try:
        item = catalog.catalog_model(name)
    except UnknownNameError:
        stored = models.get(name)
        if stored is None:
            raise UnknownNameError(
                f"model: unknown '{name}'; GET /v1/models lists the catalogue and imported models"
            ) from None
        return _entry(ModelSpec.model_validate(stored), origin="imported")
    return _entry(item.spec, origin="catalogue", display_name=item.display_name)


@router.post(
    "/models/import",
    response_model=ModelEntry,
    status_code=201,
    responses={
        200: {"model": ModelEntry, "description": "the same model was imported before"},
        **errors(409, 413, 422),
    },
)
def import_model(
    models: ModelsDep,
    response: Response,
    config: Annotated[dict[str, Any], Body(description="a HuggingFace config.json")],
    name: Annotated[
        str | None,
        Query(pattern=L.NAME_PATTERN, description="name for the model [default: from the config]"),
    ] = None,
) -> ModelEntry:
    """Import a HuggingFace ``config.json`` (``autopar models import``) and store it."""
    spec = catalog.import_hf_config(config, name=name)
    try:
        ModelInput.model_validate(spec.model_dump())  # the service's bounds on a model
    except ValidationError as error:
        raise spec_error(error, what="model") from None
    if spec.name in _catalogue_names():
        raise ApiProblem(409, "conflict", f"model: '{spec.name}' is a catalogue model; give ?name=")
    stored = models.get(spec.name)
    if stored is not None:
        if ModelSpec.model_validate(stored) != spec:
            raise ApiProblem(
                409,
                "conflict",
                f"model: '{spec.name}' was imported before with a different spec; give ?name=",
            )
        response.status_code = 200
    else:
        models.add(spec.name, spec.model_dump(mode="json"), source=spec.source)
    response.headers["Location"] = f"/v1/models/{spec.name}"
    entry = _entry(spec, origin="imported")
    return entry.model_copy(update={"not_modelled": hf_import.unmodelled(config)})


def _catalogue_names() -> set[str]:
    return {item.spec.name for item in catalog.list_catalog_models()}


@router.get("/gpus", response_model=list[GPUSpec], responses=errors())
def list_gpus() -> list[GPUSpec]:
    """Every catalogue GPU: memory, bandwidth, dense peaks, datasheet source."""
    return catalog.list_gpus()


@router.get("/gpus/{gpu_id}", response_model=GPUSpec, responses=errors(404, 422))
def get_gpu(gpu_id: NamePath) -> GPUSpec:
    return catalog.load_gpu(gpu_id)


@router.get("/interconnects", response_model=list[LinkSpec], responses=errors())
def list_interconnects() -> list[LinkSpec]:
    """Every catalogue interconnect (inside and between nodes)."""
    return catalog.list_links()


@router.get("/clusters", response_model=list[ClusterEntry], responses=errors())
def list_clusters() -> list[ClusterEntry]:
    """Every cluster preset, one node each (size it with gpus or nodes in a request)."""
    return [_cluster(preset) for preset in hardware_db.list_clusters()]


@router.get("/clusters/{preset}", response_model=ClusterEntry, responses=errors(404, 422))
def get_cluster(preset: NamePath) -> ClusterEntry:
    if preset not in hardware_db.list_clusters():
        known = ", ".join(hardware_db.list_clusters())
        raise UnknownNameError(f"cluster: unknown preset '{preset}'; known: {known}")
    return _cluster(preset)


def _cluster(preset: str) -> ClusterEntry:
    spec = catalog.load_cluster(preset)
    return ClusterEntry(
        id=preset,
        gpu=spec.gpu,
        gpus_per_node=spec.gpus_per_node,
        intra_node=spec.intra_node,
        inter_node=spec.inter_node,
        nics_per_node=spec.nics_per_node,
        inter_node_bandwidth_per_gpu_gbps=spec.inter_node_bandwidth_per_gpu_gbps,
    )
