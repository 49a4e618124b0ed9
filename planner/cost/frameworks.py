"""What each training framework does that changes memory: state layout, kernels, defaults.

``state_layout`` names how parameters, gradients and optimizer states are stored (bytes
per parameter for Adam; Rajbhandari et al. 2020, section 3.1, and Megatron-LM's
``docs/.../dist_optimizer.md`` table; each framework's default is its profile's
``state_layout`` in ``planner.frameworks``):

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
  master    plain PyTorch with bf16 weights and gradients in the model and an fp32 master
            copy plus fp32 moments in the optimizer: 2 + 2 + 4 + 8 = 16 bytes, the
            gradients allocated in backward and freed after the step (set to None).

``Runtime`` names what a training loop does around the kernels that changes memory or
time but is not the state layout: which attention kernel runs, how grouped K/V reach it,
how the loss is computed under tensor parallelism, how DDP and FSDP2 hold their buffers,
and what the pipeline runtime keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from planner.errors import SpecError
from planner.frameworks import get_profile
from planner.graph.build import Implementation

Framework = str
"""A registered framework name (``planner.frameworks.framework_names()``)."""
BuiltinFramework = Literal["megatron", "deepspeed", "torchtitan", "pytorch"]
"""The built-in frameworks, as the REST schemas list them."""
StateLayoutName = Literal["megatron", "zero", "fsdp", "autocast", "bf16", "master"]


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
    "master": StateLayout("master", 2, 2, 4, 8, grads_persistent=False, gathered_weight_bytes=2),
}

AttentionBackend = Literal["flash", "cudnn", "efficient", "unfused"]
ATTENTION_BACKENDS: tuple[str, ...] = ("flash", "cudnn", "efficient", "unfused")
LossImpl = Literal["eager", "vocab_parallel", "loss_parallel"]


@dataclass(frozen=True)
class Runtime:
    """Training-loop behaviour beyond the state layout (defaults: what autopar assumed so far).

    ``attention_backend``: the fused kernel ``scaled_dot_product_attention`` dispatches to
    (``flash`` FlashAttention-2, ``cudnn`` cuDNN's fused attention, which PyTorch 2.11
    picks by default on Hopper for bf16 causal attention with head size 128, ``efficient``
    the memory-efficient kernel), or ``unfused`` (explicit softmax over s² scores). Each
    fused backend is timed by its own measured rates where the GPU's profile has them.

    ``repeat_kv``: grouped K/V are ``repeat_interleave``d to every query head before the
    attention call (the call then saves, and its backward writes, K and V at full head
    count, and the repeat is one more copy each way).

    ``sp_saves_gathered``: under sequence parallelism the column-parallel linears' input is
    all-gathered along the sequence; Megatron-LM's linear saves its sequence shard and
    all-gathers it again in the backward, while DTensor (torch.distributed.tensor.parallel,
    torchtitan) and hand-written all-gather autograd functions hand the gathered tensor to
    an ordinary linear, which saves it whole on every rank.

    ``loss``: ``eager`` ``F.cross_entropy(logits.float())``; ``vocab_parallel``: a
    Megatron-style vocab-parallel cross entropy working in place on its fp32 logits (as
    Megatron-LM's own, which every ``megatron`` run uses); ``loss_parallel``: DTensor's
    ``loss_parallel`` context (torch.distributed.tensor.parallel.loss), whose sharded
    log-softmax runs as separate ops (subtract the max, exponentiate, sum, subtract), each
    an fp32 tensor of the local logits' size alive at once.

    ``ddp_bucket_view``: DDP's ``gradient_as_bucket_view=True``: gradients are views into
    the reducer's persistent buckets (no second copy, and they outlive ``zero_grad``).

    ``reshard_after_forward``: FSDP2 frees each unit's gathered parameters after its
    forward (True, ZeRO-3-like) or keeps them until its backward (False, ZeRO-2-like).

    ``pipeline_keeps_outputs``: the pipeline runtime keeps the last stage's output of every
    micro-batch until the step returns (``torch.distributed.pipelining`` merges them into
    the step's return value).

    ``expandable_segments``: the launch sets ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``
    (PyTorch's caching allocator then grows one mapped segment per stream instead of
    opening fixed ones); it changes no allocated byte, only the fragmentation share of the
    reserve (``cost.reserve``), where it is measured.

    ``loop_keeps_logits``: the training loop holds the model's output (the logits, in the
    activation dtype) in a variable through the backward (``logits = model(x); loss =
    F.cross_entropy(logits.float(), y); loss.backward()``); torchtitan deletes it before
    the backward (``del pred``), Megatron's loss consumes it inside the forward step.

    ``cross_entropy_loss_fusion`` and ``gradient_accumulation_fusion``: Megatron-LM's
    switches of those names (``--cross-entropy-loss-fusion``,
    ``--no-gradient-accumulation-fusion``); None: the framework profile's default
    (``FrameworkProfile.kernel_switches``: off and on for Megatron-LM).
    """

    attention_backend: AttentionBackend | None = None
    """None: the framework's default (FlashAttention for every framework autopar models)."""
    repeat_kv: bool = False
    sp_saves_gathered: bool = False
    loss: LossImpl = "eager"
    ddp_bucket_view: bool = False
    reshard_after_forward: bool = True
    pipeline_keeps_outputs: bool = False
    loop_keeps_logits: bool = False
    expandable_segments: bool = False
    grad_reduce_in_bf16: bool = False
    """Megatron-LM's ``--grad-reduce-in-bf16`` (NeMo's ``grad_reduce_in_fp32=False``, which
    NeMo's FP8 recipes set): the contiguous gradient buffer, and so its reduce-scatter, is
    bf16 (2 bytes per parameter instead of the fp32 ``main_grad`` Megatron-LM keeps by
    default for bf16 training). Only frameworks with that buffer (``contiguous-grad-buffer``)."""
    cross_entropy_loss_fusion: bool | None = None
    gradient_accumulation_fusion: bool | None = None


DEFAULT_RUNTIME = Runtime()


def grad_reduce_in_bf16_refusal(framework: str, *, option: str = "--grad-reduce-in-bf16") -> str:
    """Why ``framework`` cannot keep a bf16 gradient buffer (empty: it can): only a
    framework with Megatron-LM's contiguous gradient buffer has ``--grad-reduce-in-bf16``.
    ``option`` names the flag or the REST field."""
    if get_profile(framework).allocator_pattern == "contiguous-grad-buffer":
        return ""
    return f"{option}: {framework} has no contiguous gradient buffer (Megatron-LM's option)"


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
LAYER_SPECS: tuple[str, ...] = ("transformer_engine", "local")


def layer_spec_choice(
    name: str | None,
    *,
    framework: Framework,
    flash_attention: bool,
    attention_backend: str | None,
    option: str = "--layer-spec",
) -> tuple[LayerSpec, bool]:
    """(layer spec, flash attention) for a user's layer-spec choice ``name`` (None: the
    default, Transformer Engine, with ``flash_attention`` as given).

    It is Megatron-LM's ``--transformer-impl`` (``TransformerConfig.transformer_impl``), so
    another framework refuses it. ``local`` attends with megatron-core's unfused
    ``DotProductAttention`` whatever the attention flags say, so it turns the fused
    attention off and refuses a fused ``attention_backend``. ``option`` names the flag
    (``--layer-spec``) or the REST field (``layer_spec``) in the one-line errors.
    """
    if name is None:
        return "transformer_engine", flash_attention
    if name not in LAYER_SPECS:
        raise SpecError(f"{option}: unknown '{name}'; known: {', '.join(LAYER_SPECS)}")
    if framework != "megatron":
        raise SpecError(
            f"{option}: Megatron-LM's layer spec (--transformer-impl); {framework} has none"
        )
    if name == "local":
        if attention_backend not in (None, "unfused"):
            raise SpecError(
                f"{option} local: Megatron-Core's local spec attends with its unfused "
                f"DotProductAttention; attention backend {attention_backend} does not apply"
            )
        return "local", False
    return "transformer_engine", flash_attention


def implementation(
    *,
    framework: Framework,
    layout: StateLayout,
    precision: str,
    flash_attention: bool = True,
    runtime: Runtime = DEFAULT_RUNTIME,
    layer_spec: LayerSpec = "transformer_engine",
) -> Implementation:
    """The kernels' saving behaviour for a framework and state layout.

    The profile's ``fused_kernels`` (``planner.frameworks``) says which case applies.
    Megatron-LM with Transformer Engine: fused attention (no s² scores), fused SwiGLU.
    torchtitan, DeepSpeed on HuggingFace models and plain PyTorch: PyTorch's
    ``scaled_dot_product_attention`` (flash) and an eager gated MLP. Autocast over fp32
    weights keeps an fp32 residual stream and casts inputs and weights per Linear.
    fp32 training keeps fp32 activations. ``flash_attention=False`` is an unfused softmax
    (Megatron-LM's ``--attention-backend unfused``, eager attention) that keeps s² scores;
    so is ``runtime.attention_backend == "unfused"``. Megatron's ``layer_spec="local"``
    attends with megatron-core's ``DotProductAttention`` only (no fused attention): an
    unfused softmax in eager fp32 on K and V it repeats to every query head itself (so
    ``runtime.repeat_kv`` does not apply to it).

    Megatron, either layer spec: its DDP adds each gradient the backward returns into the
    fp32 main-gradient buffer by a hook, except the linears' weight gradients when
    ``gradient_accumulation_fusion`` is on (their GEMMs accumulate into it); without
    ``cross_entropy_loss_fusion`` the loss is the vocab-parallel cross entropy's eager
    ops; and around the optimizer step it takes the gradient norm, clips and copies the
    fp32 main parameters into the bf16 ones, with Transformer Engine's multi-tensor
    kernels on its path and megatron-core's per-tensor fallbacks on the local spec.
    """
    activation_bytes = 4 if precision == "fp32" else 2
    profile = get_profile(framework)
    fused = profile.fused_kernels
    backend = runtime.attention_backend or "flash"
    if backend not in ATTENTION_BACKENDS:
        raise SpecError(
            f"attention_backend: unknown '{backend}'; known: {', '.join(ATTENTION_BACKENDS)}"
        )
    flash_attention = flash_attention and backend != "unfused"
    local = layer_spec == "local"
    if local and framework != "megatron":
        raise SpecError(f"layer_spec: 'local' is Megatron-Core's layer spec, not {framework}'s")
    if local and flash_attention:
        raise SpecError(
            "layer_spec: Megatron-Core's local spec has no fused attention; "
            "use it with flash_attention off"
        )
    # Megatron's DDP: fp32 main gradients in its contiguous buffer
    megatron_ddp = framework == "megatron" and layout.name == "megatron"
    extras = {
        "attention_backend": backend if flash_attention else "unfused",
        "repeat_kv": runtime.repeat_kv and not local,
        "loss_parallel": runtime.loss == "loss_parallel",
        "saves_gathered_inputs": runtime.sp_saves_gathered,
    }
    if layout.name == "autocast":
        return Implementation(
            name=f"{framework}-autocast",
            residual_bytes=4,
            activation_bytes=activation_bytes,
            flash_attention=flash_attention,
            casts_linear_inputs=True,
            casts_weights=True,
            eager=not fused,
            fused_cross_entropy=runtime.loss == "vocab_parallel",
            **extras,
        )
    return Implementation(
        name=framework,
        residual_bytes=activation_bytes,
        activation_bytes=activation_bytes,
        flash_attention=flash_attention,
        fused_gated_mlp=fused,
        fused_cross_entropy=fused or runtime.loss == "vocab_parallel",
        eager_fp32_softmax=local,
        main_grad_hooks=megatron_ddp,
        wgrad_accumulation_fusion=megatron_ddp
        and profile.switch("gradient_accumulation_fusion", runtime.gradient_accumulation_fusion),
        multi_tensor_optimizer_passes=not local,
        eager_vocab_cross_entropy=megatron_ddp
        and not profile.switch("cross_entropy_loss_fusion", runtime.cross_entropy_loss_fusion),
        eager=not fused,
        **extras,
    )
