"""Inline specs in request bodies: the planner's specs, strictly typed, with name patterns.

A request may carry a whole model, GPU or interconnect instead of a catalogue name. The
planner's specs (``ModelSpec``, ``GPUSpec``, ``LinkSpec``) already bound every size and
rate (:mod:`planner.specs.limits`), so the command line and the service refuse the same
shapes. The service adds what only a request needs: strict JSON types (``true`` or
``"8"`` is not a number) and patterns on names and free text (no paths, no control
characters). Each ``*Input`` class is built from its spec by :func:`bounded`, which merges
the pattern into the spec's own field (type, default and description kept), so the two
cannot drift apart.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from planner.specs import limits as L
from planner.specs.hardware import GPUSpec, LinkSpec, PeakTflops
from planner.specs.model import MLASpec, ModelSpec, MoESpec

SpecT = TypeVar("SpecT", bound=BaseModel)


def bounded(
    spec: type[BaseModel],
    name: str,
    bounds: dict[str, dict[str, Any]],
    *,
    types: dict[str, Any] | None = None,
) -> Any:
    """A subclass of ``spec`` named ``name`` whose fields also obey ``bounds`` (Field kwargs).

    ``types`` replaces a field's type (a nested spec by its bounded input class).
    """
    types = types or {}
    strict = type(f"{name}Strict", (spec,), {"model_config": ConfigDict(strict=True)})
    fields: dict[str, Any] = {}
    for field, constraints in bounds.items():
        base = spec.model_fields[field]
        merged = FieldInfo.merge_field_infos(base, Field(**constraints))
        fields[field] = (types.get(field, base.annotation), merged)
    return create_model(name, __base__=strict, __module__=__name__, **fields)


_TEXT = {"pattern": L.TEXT_PATTERN}
_NAME = {"pattern": L.NAME_PATTERN}

MoEInput = bounded(MoESpec, "MoEInput", {})
MLAInput = bounded(MLASpec, "MLAInput", {})
ModelInput = bounded(
    ModelSpec,
    "ModelInput",
    {"name": _NAME, "family": _NAME, "source": _TEXT, "moe": {}, "mla": {}},
    types={"moe": MoEInput | None, "mla": MLAInput | None},
)

PeakTflopsInput = bounded(PeakTflops, "PeakTflopsInput", {})
GPUInput = bounded(
    GPUSpec,
    "GPUInput",
    {"id": _NAME, "name": _TEXT, "architecture": _TEXT, "source": _TEXT, "peak_tflops": {}},
    types={"peak_tflops": PeakTflopsInput},
)

LinkInput = bounded(LinkSpec, "LinkInput", {"id": _NAME, "name": _TEXT, "source": _TEXT})


def plain(spec: type[SpecT], value: BaseModel) -> SpecT:
    """The planner's own spec from a bounded input (same fields, no request-only class)."""
    return spec.model_validate(value.model_dump())
