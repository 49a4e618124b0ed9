"""What each training framework does that changes memory: state layout, kernels, defaults.

``state_layout`` names how parameters, gradients and optimizer states are stored (bytes
per parameter for Adam; Rajbhandari et al. 2020, section 3.1, and Megatron-LM's
``docs/.../dist_optimizer.md`` table, ../shared/reference/frameworks.md 6.5):

  megatron  bf16/fp16 weights 2, fp32 main gradients 4 (a persistent buffer), fp32 master
            weights 4, two fp32 Adam moments 8: 18 bytes; the distributed optimizer shards
            the 12 bytes of master weights and moments over the DP x CP ranks.
  zero      DeepSpeed ZeRO: bf16 weights 2, bf16 gradients 2, fp32 master 4 and moments 8:
            16 bytes; stage 1 shards the 12, stage 2 also the gradients, stage 3 everything.
  fsdp      FSDP2 with a bf16 MixedPrecisionPolicy (torchtitan): fp32 sharded weights 4
            (they are the master copy), fp32 gradients 4, moments 8: 16 bytes, all sharded
            over the data-parallel ranks; bf16 copies of the gathered layers are transient.
  autocast  plain PyTorch AMP: fp32 weights 4, fp32 gradients 4, moments 8: 16 bytes.
  bf16      plain bf16 training: bf16 weights, gradients and moments: 2 + 2 + 4 = 8 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from planner.errors import SpecError
from planner.graph.build import Implementation

Framework = Literal["megatron", "deepspeed", "torchtitan", "pytorch"]
StateLayoutName = Literal["megatron", "zero", "fsdp", "autocast", "bf16"]


@dataclass(frozen=True)
class StateLayout:
    """Bytes per parameter of each model state, and which of them persist across steps."""

    name: StateLayoutName
    weight_bytes: int
    grad_bytes: int
    master_bytes: int
    moment_bytes: int
    grads_persistent: bool
    """A gradient buffer that lives across steps (Megatron, DeepSpeed, FSDP2) rather than
    gradients allocated in backward and freed by ``zero_grad(set_to_none=True)``."""
    gathered_weight_bytes: int = 0
    """Bytes per element of the transient unsharded copy of a layer under full sharding."""


STATE_LAYOUTS: dict[str, StateLayout] = {
    "megatron": StateLayout("megatron", 2, 4, 4, 8, grads_persistent=True),
    "zero": StateLayout("zero", 2, 2, 4, 8, grads_persistent=True, gathered_weight_bytes=2),
    "fsdp": StateLayout("fsdp", 4, 4, 0, 8, grads_persistent=True, gathered_weight_bytes=2),
    "autocast": StateLayout("autocast", 4, 4, 0, 8, grads_persistent=False),
    "bf16": StateLayout("bf16", 2, 2, 0, 4, grads_persistent=False),
}

DEFAULT_STATE_LAYOUT: dict[str, StateLayoutName] = {
    "megatron": "megatron",
    "deepspeed": "zero",
    "torchtitan": "fsdp",
    "pytorch": "autocast",
}


def state_layout(name: str) -> StateLayout:
    """The state layout called ``name``; an unknown name lists the known ones."""
    try:
        return STATE_LAYOUTS[name]
    except KeyError:
        known = ", ".join(STATE_LAYOUTS)
        raise SpecError(f"state_layout: unknown '{name}'; known: {known}") from None


LayerSpec = Literal["transformer_engine", "local"]
"""Megatron's layer spec: Transformer Engine modules, or megatron-core's local modules
(``get_gpt_layer_local_spec``), which it falls back to without Transformer Engine."""


def implementation(
    *,
    framework: Framework,
    layout: StateLayout,
    precision: str,
    flash_attention: bool = True,
    layer_spec: LayerSpec = "transformer_engine",
) -> Implementation:
    """The kernels' saving behaviour for a framework and state layout.

    Megatron-LM with Transformer Engine: fused attention (no s² scores), fused SwiGLU.
    torchtitan, DeepSpeed on HuggingFace models and plain PyTorch: PyTorch's
    ``scaled_dot_product_attention`` (flash) and an eager gated MLP. Autocast over fp32
    weights keeps an fp32 residual stream and casts inputs and weights per Linear.
    fp32 training keeps fp32 activations. ``flash_attention=False`` is an unfused softmax
    (Megatron-LM's ``--attention-backend unfused``, eager attention) that keeps s² scores.
    Megatron's ``layer_spec="local"`` attends with megatron-core's ``DotProductAttention``
    only (no fused attention): an unfused softmax in eager fp32 on repeated K and V.
    """
    local = layer_spec == "local"
    if local and framework != "megatron":
        raise SpecError(f"layer_spec: 'local' is Megatron-Core's layer spec, not {framework}'s")
    if local and flash_attention:
        raise SpecError(
            "layer_spec: Megatron-Core's local spec has no fused attention; "
            "use it with flash_attention off"
        )
    activation_bytes = 4 if precision == "fp32" else 2
    if layout.name == "autocast":
        return Implementation(
            name=f"{framework}-autocast",
            residual_bytes=4,
            activation_bytes=activation_bytes,
            flash_attention=flash_attention,
            casts_linear_inputs=True,
            casts_weights=True,
            eager=framework != "megatron",
        )
    return Implementation(
        name=framework,
        residual_bytes=activation_bytes,
        activation_bytes=activation_bytes,
        flash_attention=flash_attention,
        fused_gated_mlp=framework == "megatron",
        fused_cross_entropy=framework == "megatron",
        eager_fp32_softmax=local,
        eager=framework != "megatron",
    )
