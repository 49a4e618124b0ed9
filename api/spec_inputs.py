"""Inline specs in request bodies: the planner's specs with the bounds of :mod:`api.limits`.

A request may carry a whole model, GPU or interconnect instead of a catalogue name. The
planner's specs (``ModelSpec``, ``GPUSpec``, ``LinkSpec``) accept any positive size; the
service accepts the same fields, with the same validators and descriptions, plus an upper
bound on every size and a floor on every rate, so no inline spec can make an estimate run
for minutes or overflow a prediction. Each ``*Input`` class is built from its spec by
:func:`bounded`, which merges the bound into the spec's own field (type, default and
description kept), so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, Field, create_model
from pydantic.fields import FieldInfo

from api import limits as L
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
    fields: dict[str, Any] = {}
    for field, constraints in bounds.items():
        base = spec.model_fields[field]
        merged = FieldInfo.merge_field_infos(base, Field(**constraints))
        fields[field] = (types.get(field, base.annotation), merged)
    return create_model(name, __base__=spec, __module__=__name__, **fields)


_WIDTH = {"le": L.MAX_WIDTH}
_TEXT = {"pattern": L.TEXT_PATTERN}
_RATE = {"ge": L.MIN_HARDWARE_RATE}

MoEInput = bounded(
    MoESpec,
    "MoEInput",
    {
        "num_experts": {"le": L.MAX_EXPERTS},
        "top_k": {"le": L.MAX_EXPERTS},
        "expert_ffn_hidden_size": _WIDTH,
        "num_shared_experts": {"le": L.MAX_EXPERTS},
        "shared_expert_ffn_hidden_size": _WIDTH,
        "first_dense_layers": {"le": L.MAX_LAYERS},
        "layer_freq": {"le": L.MAX_LAYERS},
        "capacity_factor": {"le": 1e3},
    },
)

MLAInput = bounded(
    MLASpec,
    "MLAInput",
    {
        "q_lora_rank": _WIDTH,
        "kv_lora_rank": _WIDTH,
        "qk_nope_head_dim": _WIDTH,
        "qk_rope_head_dim": _WIDTH,
        "v_head_dim": _WIDTH,
    },
)

ModelInput = bounded(
    ModelSpec,
    "ModelInput",
    {
        "name": {"pattern": L.NAME_PATTERN},
        "family": {"pattern": L.NAME_PATTERN},
        "num_layers": {"le": L.MAX_LAYERS},
        "hidden_size": _WIDTH,
        "num_attention_heads": {"le": L.MAX_HEADS},
        "num_kv_heads": {"le": L.MAX_HEADS},
        "head_dim": _WIDTH,
        "ffn_hidden_size": _WIDTH,
        "vocab_size": {"le": L.MAX_VOCAB},
        "max_position_embeddings": {"le": L.MAX_POSITIONS},
        "norm_epsilon": {"le": 1.0},
        "rope_theta": {"le": 1e12},
        "learned_position_offset": {"le": L.MAX_POSITIONS},
        "sliding_window": {"le": L.MAX_POSITIONS},
        "global_attention_every": {"le": L.MAX_LAYERS},
        "moe": {},
        "mla": {},
        "mtp_layers": {"le": L.MAX_LAYERS},
        "source": _TEXT,
    },
    types={"moe": MoEInput | None, "mla": MLAInput | None},
)

PeakTflopsInput = bounded(
    PeakTflops,
    "PeakTflopsInput",
    {dtype: {**_RATE, "le": L.MAX_TFLOPS} for dtype in ("fp32", "tf32", "bf16", "fp16", "fp8")},
)

GPUInput = bounded(
    GPUSpec,
    "GPUInput",
    {
        "id": {"pattern": L.NAME_PATTERN},
        "name": _TEXT,
        "architecture": _TEXT,
        "memory_gib": {**_RATE, "le": L.MAX_MEMORY_GIB},
        "hbm_bandwidth_gbps": {**_RATE, "le": L.MAX_BANDWIDTH_GBPS},
        "tdp_w": {"le": 1e5},
        "peak_tflops": {},
        "source": _TEXT,
    },
    types={"peak_tflops": PeakTflopsInput},
)

LinkInput = bounded(
    LinkSpec,
    "LinkInput",
    {
        "id": {"pattern": L.NAME_PATTERN},
        "name": _TEXT,
        "bandwidth_gbps": {**_RATE, "le": L.MAX_BANDWIDTH_GBPS},
        "latency_us": {**_RATE, "le": L.MAX_LATENCY_US},
        "source": _TEXT,
    },
)


def plain(spec: type[SpecT], value: BaseModel) -> SpecT:
    """The planner's own spec from a bounded input (same fields, no request-only class)."""
    return spec.model_validate(value.model_dump())
