"""ResolvedConfig: the run an estimate or a plan describes, every knob resolved.

It is the ``config`` block of ``autopar estimate --json`` and of every plan: the run
(model, cluster, GPU count, sequence, batch, precision, framework and what it resolved to)
and, flat beside them, every ``ParallelConfig`` field with ``dp`` filled. Being a
``ParallelConfig`` itself, it is read by attribute wherever a layout is (``config.tp``),
and ``config.layout`` is the bare layout. The JSON is flat, as it always was; the OpenAPI
schema keeps listing it as an open object (``CONFIG_SCHEMA``) so the REST contract does not
change.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, SerializerFunctionWrapHandler, WithJsonSchema, model_serializer

from planner.cost.frameworks import DEFAULT_RUNTIME, LayerSpec, Runtime
from planner.specs.layout import ParallelConfig
from planner.specs.model import ModelSpec

CONFIG_SCHEMA = WithJsonSchema({"type": "object", "additionalProperties": True, "title": "Config"})
"""The JSON schema the REST API has always published for a ``config`` block."""

_RUN_FIELDS = (
    "model", "cluster", "gpu", "num_gpus", "nodes", "seq_len", "global_batch",
    "global_batch_tokens", "precision", "framework", "state_layout", "flash_attention",
    "layer_spec", "optimizer_impl", "runtime", "microbatches", "gpus_per_node", "model_spec",
)  # fmt: skip


class ResolvedConfig(ParallelConfig):
    """The run and its resolved layout (``dp`` filled), as one flat, frozen record."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model: str
    cluster: str
    gpu: str
    num_gpus: int
    nodes: int
    seq_len: int
    global_batch: int
    """Sequences per step."""
    global_batch_tokens: int
    precision: str
    framework: str = "megatron"
    state_layout: str
    flash_attention: bool
    layer_spec: LayerSpec = "transformer_engine"
    """Megatron's layer spec: Transformer Engine modules, or megatron-core's ``local`` ones
    (``cost.frameworks.LayerSpec``)."""
    optimizer_impl: str
    runtime: Runtime = DEFAULT_RUNTIME
    """What the training loop does beyond the framework's defaults (attention kernel, DDP
    buckets, FSDP2 resharding, what the pipeline runtime keeps: ``cost.frameworks.Runtime``)."""
    microbatches: int
    """Micro-batches per step on each pipeline (gradient accumulation)."""
    gpus_per_node: int
    model_spec: ModelSpec

    @property
    def layout(self) -> ParallelConfig:
        """The layout alone (every ``ParallelConfig`` field, ``dp`` resolved)."""
        return ParallelConfig(**{name: getattr(self, name) for name in ParallelConfig.model_fields})

    @model_serializer(mode="wrap")
    def _run_first(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The run's fields first, then the layout's (the order the JSON always had)."""
        data = handler(self)
        return {key: data[key] for key in (*_RUN_FIELDS, *ParallelConfig.model_fields)}
