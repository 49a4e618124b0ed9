"""Measured training steps as autopar inputs: the spec, layout and work of each record.

The records are written by ``benchmarks/measure`` (plain PyTorch Llama-style steps) and
stored under ``hardware_db/profiles/<gpu>/<profile>/train_steps.jsonl``. The memory
benchmark, the time benchmark and the rate fit all read them through this module, so
they agree on what a record means. The prediction of a record's run
(``planner.measured_runs.estimate_record``) sits above ``planner.predict``, whose rates
are calibrated on these records.

Records of ``benchmarks/measure/megatron_step.py`` (``megatron_steps.jsonl``) carry
``"framework": "megatron"``: megatron-core's ``GPTModel`` with its local layer spec,
whose attention is the unfused ``DotProductAttention`` (no Transformer Engine), its
fp32 gradient buffer and the distributed optimizer (the ``megatron`` state layout)
around ``torch.optim.AdamW`` in its default foreach implementation.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from planner.cost.compute import embedding_work, head_work, layer_work
from planner.cost.fit import Phase
from planner.cost.frameworks import Framework, implementation, state_layout
from planner.cost.stage_work import (
    layer_shape,
    optimizer_step_work,
    recomputed_positions,
    selective_recompute,
)
from planner.cost.time import OPTIMIZER_AFTER_LEAD
from planner.specs.layout import ParallelConfig
from planner.specs.model import ModelSpec

MEASURED_FRAMEWORK = "pytorch"
MEGATRON_FILE = "megatron_steps.jsonl"
"""Megatron-Core steps (``benchmarks/measure/megatron_step.py``); nothing is fitted to them."""
MEGATRON_HELDOUT_FILE = "megatron_steps_heldout.jsonl"
"""Megatron-Core steps of shapes the first sweep did not run (``megatron_step.py --sweep
megatron-heldout``), measured after the time model of the local spec was written: an
accuracy check only (the memory reserves read ``MEGATRON_FILE`` alone)."""
MEASURED_CLUSTERS = {"h100-sxm": "dgx-h100", "h200-sxm": "hgx-h200"}
"""The cluster preset of each GPU we measured on (one of its GPUs is what a record ran on)."""


class RecordShape(BaseModel):
    """The model shape a measured record trained (its ``config.model`` block)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    ffn_hidden_size: int
    vocab_size: int
    seq_len: int
    rope_theta: float
    norm_eps: float
    tie_embeddings: bool


class RecordConfig(BaseModel):
    """What a measured record's ``config`` block says about its run (read by attribute)."""

    model_config = ConfigDict(frozen=True, extra="ignore", protected_namespaces=())

    model: RecordShape
    preset: str | None = None
    mbs: int
    grad_accum: int = 1
    recompute: str = "none"
    autocast: bool = False
    foreach: bool = False
    framework: str | None = None
    param_count: float = 0.0
    ddp: dict[str, Any] = {}

    @classmethod
    def of(cls, config: RecordConfig | dict[str, Any]) -> RecordConfig:
        return config if isinstance(config, RecordConfig) else cls.model_validate(config)


def model_from_record(config: RecordConfig | dict[str, Any]) -> ModelSpec:
    """The ``ModelSpec`` of the Llama-style model a record trained."""
    run = RecordConfig.of(config)
    shape = run.model
    return ModelSpec(
        name=run.preset or "measured",
        family="llama",
        num_layers=shape.num_layers,
        hidden_size=shape.hidden_size,
        num_attention_heads=shape.num_attention_heads,
        num_kv_heads=shape.num_kv_heads,
        ffn_hidden_size=shape.ffn_hidden_size,
        vocab_size=shape.vocab_size,
        max_position_embeddings=max(shape.seq_len, 8192),
        rope_theta=shape.rope_theta,
        norm_epsilon=shape.norm_eps,
        tie_embeddings=shape.tie_embeddings,
    )


def layout_from_record(config: RecordConfig | dict[str, Any]) -> ParallelConfig:
    run = RecordConfig.of(config)
    full = run.recompute == "full"
    return ParallelConfig(
        mbs=run.mbs,
        recompute=run.recompute,
        recompute_method="uniform" if full else None,
        recompute_num_layers=1 if full else None,
        distributed_optimizer=bool(run.ddp.get("use_distributed_optimizer", False)),
    )


def record_framework(config: RecordConfig | dict[str, Any]) -> Framework:
    """The framework a record ran: ``megatron`` for Megatron-Core steps, else plain PyTorch."""
    return "megatron" if RecordConfig.of(config).framework == "megatron" else MEASURED_FRAMEWORK


def state_layout_name(config: RecordConfig | dict[str, Any]) -> str:
    run = RecordConfig.of(config)
    if record_framework(run) == "megatron":
        return "megatron"  # bf16 weights, fp32 gradient buffer, fp32 main params and moments
    return "autocast" if run.autocast else "bf16"


def optimizer_kind(config: RecordConfig | dict[str, Any]) -> str:
    run = RecordConfig.of(config)
    if record_framework(run) == "megatron":
        return "foreach"  # megatron-core's fallback without TE/Apex: torch.optim.AdamW
    return "foreach" if run.foreach else "per_tensor"


def flash_attention(config: RecordConfig | dict[str, Any]) -> bool:
    """Megatron's local layer spec attends with the unfused ``DotProductAttention``; the
    plain PyTorch harness with ``scaled_dot_product_attention`` (flash)."""
    return record_framework(config) != "megatron"


def single_gpu_step_phases(config: RecordConfig | dict[str, Any]) -> tuple[Phase, ...]:
    """One measured single-GPU step as the streams the time model times one by one.

    As ``stage_work.stage_times`` composes a micro-batch: per layer its forward, its
    backward and (recomputed layers) its forward again, or its attention (selective);
    the embedding's and the output layer's forward and backward; all of it once per
    accumulated micro-batch; then the optimizer step, which eager PyTorch issues with no
    host synchronisation after the backward pass (``time.OPTIMIZER_AFTER_LEAD``).
    """
    run = RecordConfig.of(config)
    model = model_from_record(run)
    layout = layout_from_record(run)
    states = state_layout(state_layout_name(run))
    impl = implementation(framework=MEASURED_FRAMEWORK, layout=states, precision="bf16")
    shape = layer_shape(layout, run.model.seq_len)
    accumulation = float(run.grad_accum)
    recomputed = recomputed_positions(layout, model.num_layers)
    phases: list[Phase] = []
    for position in range(model.num_layers):
        work = layer_work(model, position, shape=shape, impl=impl)
        phases += [Phase(work.forward, accumulation), Phase(work.backward, accumulation)]
        if position in recomputed:
            phases.append(Phase(work.forward, accumulation))
        elif layout.recompute == "selective":
            phases.append(Phase(selective_recompute(work), accumulation))
    for edge in (
        embedding_work(model, tokens=shape.tokens, impl=impl, tp=layout.tp),
        head_work(model, tokens=shape.tokens, tp=layout.tp, impl=impl),
    ):
        phases += [Phase(edge.forward, accumulation), Phase(edge.backward, accumulation)]
    optimizer = optimizer_step_work(
        local_params=run.param_count,
        param_tensors=9 * model.num_layers + 3,
        states=states,
        optimizer_kind=optimizer_kind(run),
    )
    phases.append(Phase((optimizer,), after_lead=OPTIMIZER_AFTER_LEAD[MEASURED_FRAMEWORK]))
    return tuple(phases)
