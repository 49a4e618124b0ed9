"""build_graph(model, seq_len, implementation) -> ModelGraph: per-layer params and saved bytes.

Saved activations follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in
Large Transformer Models", section 4.1): for GPT (MHA, GELU, f = 4h, dropout, no flash
attention) a layer saves s·b·h·(34 + 5·a·s/h) bytes, which this module reproduces exactly
(``tests/graph/test_activations.py``). Departures, each from the same tensor-by-tensor
accounting:

* GQA/MQA: K and V have ``kv_heads·d`` features instead of h.
* Gated MLPs (SwiGLU/GeGLU): an eager implementation (torchtitan, HuggingFace, plain
  PyTorch) saves both first-linear outputs, the activation output and their product
  (4·f per token); Megatron's fused ``bias_swiglu`` saves the first linear's 2·f output and
  the second linear's f input (3·f).
* RMSNorm and LayerNorm kernels save their input and an fp32 statistic per token.
* Flash attention (Megatron with Transformer Engine, ``scaled_dot_product_attention``)
  keeps no s² scores, only an fp32 log-sum-exp per head and token.
* Megatron-Core's local layer spec (no Transformer Engine, no Apex; ``DotProductAttention``
  in megatron-core 0.16): the softmax runs in eager PyTorch in fp32
  (``attention_softmax_in_fp32``, the default): the bf16 scores are cast to fp32, masked
  in place, soft-maxed and cast back. The softmax keeps its fp32 output and the value
  matmul its bf16 cast: 4 + 2 bytes per score, not 2. Grouped-query K and V are repeated
  to every query head before the two matmuls, which keep the repeated copies (dropped, like
  the scores, under selective recomputation, whose checkpoint keeps the unrepeated
  inputs), and the in-place masking keeps the s x s boolean causal mask it builds per
  call. In the softmax's backward the fp32 gradients of its output and input live
  beside its saved fp32 output, and so does the temporary PyTorch's CUDA softmax backward
  allocates for ``grad * output`` (``structured_softmax_backward_cuda_out``), of the same
  size and dtype (12 - 2 bytes per score above the saved set: four fp32 score tensors at
  the peak, as the peak census of Megatron-Core steps on one H200 lists them,
  ``2026-12-03-h200-megatron-allocator-snapshots/peak_census.json``). The scores
  are written into megatron's global memory buffer, one bf16 b x heads x s x s tensor that
  persists for the life of the process (``parallel_state.get_global_memory_buffer``).
  Checked against megatron-core 0.16.1 steps on one H200
  (``hardware_db/profiles/h200-sxm/2026-12-03-h200-megatron-core``).
* No dropout (Llama-style models): no masks.
* ``torch.autocast`` over fp32 weights: the residual stream is fp32, each Linear casts its
  input separately (three copies for q, k, v; two for a gated MLP) and keeps a bf16 copy
  of its weight per micro-batch in flight. This is what ``benchmarks/measure/llama.py``
  does; its docstring lists every saved tensor.
* MoE layers: each token's k routed copies (times the capacity factor when tokens are
  dropped) save the expert MLP's activations; the router keeps fp32 logits and probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from planner.graph.ops import EdgeNode, LayerNode, ModelGraph, ParamSplit, SavedBytes
from planner.graph.params import layer_params, norm_params
from planner.specs.model import ModelSpec

NORM_STATISTIC_BYTES = 4
"""One fp32 value per token per norm (rstd, or mean and rstd counted as one for LayerNorm
kernels that save both as fp32 of b·s elements each: Apex/TE save ``mu`` and ``rsigma``)."""
MASK_BYTES = 1
"""Dropout masks are kept as one byte per element (Korthikanti et al. 2022, section 4.1)."""
TOKEN_ID_BYTES = 8
"""int64 token ids the embedding keeps for its backward."""
LOGSUMEXP_BYTES = 4
"""Flash attention's fp32 log-sum-exp, one per head and token."""
LOSS_PARALLEL_TEMPORARY_BYTES = 4
"""One more fp32 temporary per local vocabulary entry in DTensor's sharded log-softmax and
its backward than in the fused eager kernels (``_output_node``)."""
FP32_BYTES = 4
SOFTMAX_BACKWARD_FP32_TENSORS = 3
"""fp32 score-sized tensors the eager softmax's backward adds to its saved output: the
output gradient, the input gradient and the CUDA kernel's ``grad * output`` temporary
(peak census of Megatron-Core 0.16.1 steps, torch 2.11, one H200: the module docstring)."""


@dataclass(frozen=True)
class Implementation:
    """What a framework's kernels keep for backward (see the module docstring)."""

    name: str
    residual_bytes: int
    """Bytes per element of the residual stream (2 in bf16/fp16 training, 4 under autocast)."""
    activation_bytes: int
    """Bytes per element of activations computed by the matrix multiplications."""
    flash_attention: bool = True
    fused_gated_mlp: bool = False
    casts_linear_inputs: bool = False
    casts_weights: bool = False
    fused_cross_entropy: bool = False
    """Megatron's vocab-parallel cross entropy works in place on its fp32 logits."""
    eager_fp32_softmax: bool = False
    """Unfused attention whose softmax runs as eager fp32 PyTorch ops on repeated K and V
    (Megatron-Core's local ``DotProductAttention``; see the module docstring)."""
    eager: bool = False
    """Modules written as eager PyTorch ops (plain PyTorch, torchtitan, HuggingFace models
    under DeepSpeed): separate q/k/v and gate/up projections, RMSNorm and RoPE as chains
    of element-wise ops, each a kernel launch (``planner.cost.compute`` counts them)."""
    attention_backend: str = "flash"
    """The fused attention kernel timed (``flash``, ``cudnn``, ``efficient``); ``unfused``
    when ``flash_attention`` is off."""
    repeat_kv: bool = False
    """Grouped K/V repeated to every query head before the attention call."""
    loss_parallel: bool = False
    """DTensor ``loss_parallel``: the sharded log-softmax's fp32 temporaries coexist."""
    eager_vocab_cross_entropy: bool = False
    """Megatron's vocab-parallel cross entropy as its eager PyTorch ops (Megatron-LM's
    default, ``cross_entropy_loss_fusion`` off, on either layer spec), not one fused pass
    each way."""
    main_grad_hooks: bool = False
    """Megatron's DDP: a hook per parameter and micro-batch adds the gradient the backward
    returns into the fp32 main-gradient buffer, and the optimizer takes the gradient norm,
    clips and copies the fp32 main parameters into the model's (``planner.cost.time``)."""
    wgrad_accumulation_fusion: bool = False
    """Megatron's ``gradient_accumulation_fusion``: the linears' weight-gradient GEMMs
    accumulate into the fp32 main gradient themselves, so only the other parameters'
    gradients (embeddings, norms) go through the hooks."""
    multi_tensor_optimizer_passes: bool = False
    """The optimizer's norm and clip run as Transformer Engine's (or Apex's) multi-tensor
    kernels, the clip scaling in place; without them (the local spec as measured)
    megatron-core's per-tensor fallbacks write the scaled copy and copy it back."""
    saves_gathered_inputs: bool = False
    """DTensor tensor parallelism: under sequence parallelism the all-gathered inputs of the
    column-parallel linears are what autograd saves (``SavedBytes.whole``)."""


@lru_cache(maxsize=256)
def build_graph(model: ModelSpec, *, seq_len: int, implementation: Implementation) -> ModelGraph:
    """The per-layer graph of ``model`` for sequences of ``seq_len`` tokens.

    Cached: specs are frozen, so the planner, which costs thousands of layouts of one model,
    builds each graph once.
    """
    layers = tuple(
        _layer_node(model, index, seq_len=seq_len, impl=implementation)
        for index in range(model.num_layers)
    )
    return ModelGraph(
        layers=layers,
        embedding=_embedding_node(model),
        output=_output_node(model, impl=implementation),
        seq_len=seq_len,
        tied_embeddings=model.tie_embeddings,
        persistent_bytes_per_sequence=_score_buffer_per_sequence(
            model, seq_len=seq_len, impl=implementation
        ),
    )


def _score_buffer_per_sequence(model: ModelSpec, *, seq_len: int, impl: Implementation) -> float:
    """Megatron's persistent bf16 score buffer (heads x s x s per sequence) of the local
    ``DotProductAttention``, allocated on the first forward and never freed."""
    if not impl.eager_fp32_softmax:
        return 0.0
    return float(impl.activation_bytes * model.num_attention_heads * seq_len * seq_len)


def _layer_node(model: ModelSpec, index: int, *, seq_len: int, impl: Implementation) -> LayerNode:
    counts = layer_params(model, index)
    is_moe = model.is_moe_layer(index)
    replicated = (
        counts.norms
        + _replicated_attention_params(model)
        + _row_parallel_mlp_bias(model, is_moe=model.is_moe_layer(index))
    )
    expert = _routed_expert_params(model) if is_moe else 0
    params = ParamSplit(tp=counts.total - replicated - expert, replicated=replicated, expert=expert)
    attention_tp, scores = _attention_saved(model, seq_len=seq_len, impl=impl)
    mlp_tp, mlp_ep, mlp_sp, workspace = _mlp_saved(model, is_moe=is_moe, impl=impl)
    copies, checkpoint_extra = _local_attention_copies(model, impl=impl)
    sp, linear_inputs = _sp_saved(model, impl=impl)
    gathered = linear_inputs if impl.saves_gathered_inputs else 0.0
    saved = SavedBytes(
        tp=attention_tp + mlp_tp,
        sp=sp + linear_inputs - gathered + mlp_sp,
        ep_tp=mlp_ep,
        attention_scores=scores,
        core_copies=copies,
        checkpoint_extra=checkpoint_extra,
        whole=gathered,
    )
    matmul_weights = (
        counts.attention_matmul + (counts.mlp - counts.mlp_active) + (counts.mlp_active_matmul)
    )
    return LayerNode(
        index=index,
        is_moe=is_moe,
        params=params,
        matmul_params_active=counts.active_matmul,
        saved=saved,
        input_bytes_per_token=impl.residual_bytes * model.hidden_size,
        backward_workspace_per_token=workspace,
        attention_workspace_per_token=_attention_workspace(model, seq_len=seq_len, impl=impl),
        weight_cast_bytes=2.0 * matmul_weights if impl.casts_weights else 0.0,
        score_mask_bytes=float(seq_len * seq_len) if impl.eager_fp32_softmax else 0.0,
    )


def _replicated_attention_params(model: ModelSpec) -> int:
    """Attention parameters every TP rank holds: the output bias and the q/k/latent norms."""
    count = model.hidden_size if model.attention_output_bias else 0
    if model.qk_norm:
        count += 2 * norm_params(model, model.kv_channels)
    if model.mla is not None:
        count += norm_params(model, model.mla.kv_lora_rank)
        if model.mla.q_lora_rank is not None:
            count += norm_params(model, model.mla.q_lora_rank)
    return count


def _row_parallel_mlp_bias(model: ModelSpec, *, is_moe: bool) -> int:
    """The second MLP linear's bias: a row-parallel linear keeps it whole on every TP rank."""
    if not model.mlp_bias or is_moe:
        return 0
    return model.hidden_size


def _routed_expert_params(model: ModelSpec) -> int:
    """Routed-expert weights of one MoE layer (split over ep x etp)."""
    assert model.moe is not None
    h, f = model.hidden_size, model.moe.expert_ffn_hidden_size
    per_expert = (3 if model.gated_mlp else 2) * h * f
    if model.mlp_bias:
        per_expert += (2 * f + h) if model.gated_mlp else (f + h)
    return model.moe.num_experts * per_expert


def _norms_per_layer(model: ModelSpec) -> int:
    return 1 if model.shared_layer_norm else model.norms_per_layer


def _sp_saved(model: ModelSpec, *, impl: Implementation) -> tuple[float, float]:
    """Bytes per token outside the TP region: (norm inputs and masks, the inputs of the
    first attention and MLP linears)."""
    h, act = model.hidden_size, impl.activation_bytes
    norms = _norms_per_layer(model) * (impl.residual_bytes * h + NORM_STATISTIC_BYTES)
    q_k_v_linears = 1 if model.mla is not None else 3
    attention_input = act * h * (q_k_v_linears if impl.casts_linear_inputs else 1)
    mlp_linears = 2 if model.gated_mlp else 1
    mlp_input = act * h * (mlp_linears if impl.casts_linear_inputs else 1)
    if model.shared_layer_norm and not impl.casts_linear_inputs:
        mlp_input = 0.0  # attention and MLP read the same norm output
    masks = 2 * MASK_BYTES * h if model.hidden_dropout > 0 else 0.0
    return norms + masks, attention_input + mlp_input


def _attention_saved(
    model: ModelSpec, *, seq_len: int, impl: Implementation
) -> tuple[float, float]:
    """(tp-region bytes per token, attention-score bytes per token) of one attention block."""
    act, a = impl.activation_bytes, model.num_attention_heads
    if model.mla is not None:
        mla = model.mla
        qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        latents = mla.kv_lora_rank + mla.qk_rope_head_dim + (mla.q_lora_rank or 0)
        # latents, q, k (nope + rope per head), v, attention output (= projection input)
        tp_bytes = act * (latents + 2 * a * qk + 2 * a * mla.v_head_dim)
    else:
        d, kv = model.kv_channels, model.kv_heads
        # q, k, v and the attention output, which is also the output projection's input;
        # K and V repeated to every query head before the call are saved at that size
        kv_saved = a if impl.repeat_kv else kv
        tp_bytes = act * (2 * a * d + 2 * kv_saved * d)
    if impl.flash_attention:
        return tp_bytes, LOGSUMEXP_BYTES * a
    scores = act * a * seq_len  # softmax output
    if impl.eager_fp32_softmax:
        scores += FP32_BYTES * a * seq_len  # the fp32 softmax output beside its bf16 cast
    if model.attention_dropout > 0:
        scores += MASK_BYTES * a * seq_len + act * a * seq_len  # mask and dropped-out probs
    return tp_bytes, scores


def _local_attention_copies(model: ModelSpec, *, impl: Implementation) -> tuple[float, float]:
    """(core copies, checkpoint extra) per token of Megatron's local attention, tp region.

    Without recomputation the two matmuls keep K and V repeated to all ``a`` query heads
    instead of the projection's ``kv`` heads: 2(a - kv)·d more. Under selective
    recomputation the checkpoint keeps the rotated Q and K and V, a view of the fused QKV
    output, which keeps that whole (a + 2kv)·d output alive: (a + kv)·d more than Q, K, V.
    """
    if not impl.eager_fp32_softmax or model.mla is not None:
        return 0.0, 0.0
    a, kv, d = model.num_attention_heads, model.kv_heads, model.kv_channels
    act = impl.activation_bytes
    return float(act * 2 * (a - kv) * d), float(act * (a + kv) * d)


def _attention_workspace(model: ModelSpec, *, seq_len: int, impl: Implementation) -> float:
    """Bytes per token beyond the saved set alive in the attention core's backward (tp
    region): the eager fp32 softmax's output and input gradients and the CUDA softmax
    backward's ``grad * output`` temporary (module docstring), less the bf16
    probabilities already released by the value matmul's backward."""
    if not impl.eager_fp32_softmax:
        return 0.0
    per_score = SOFTMAX_BACKWARD_FP32_TENSORS * FP32_BYTES - impl.activation_bytes
    return float(per_score * model.num_attention_heads * seq_len)


def _mlp_saved(
    model: ModelSpec, *, is_moe: bool, impl: Implementation
) -> tuple[float, float, float, float]:
    """(tp bytes, ep_tp bytes, sp bytes, backward workspace) per token of one MLP block."""
    act = impl.activation_bytes
    dense_per_width = _mlp_intermediate_bytes(model, impl) * act
    workspace_per_width = (3 if model.gated_mlp and not impl.fused_gated_mlp else 2) * act
    if not is_moe:
        f = model.ffn_hidden_size
        return dense_per_width * f, 0.0, 0.0, workspace_per_width * f
    moe = model.moe
    assert moe is not None
    routed_copies = moe.top_k * (moe.capacity_factor or 1.0)
    routed = routed_copies * dense_per_width * moe.expert_ffn_hidden_size
    shared_width = moe.num_shared_experts * moe.shared_ffn_hidden_size
    shared = dense_per_width * shared_width
    # each routed copy of a token is an expert input; the router keeps fp32 logits and probs
    dispatch = routed_copies * act * model.hidden_size + 2 * 4 * moe.num_experts
    workspace = workspace_per_width * max(routed_copies * moe.expert_ffn_hidden_size, shared_width)
    return shared, routed, dispatch, workspace


def _mlp_intermediate_bytes(model: ModelSpec, impl: Implementation) -> int:
    """Saved intermediate tensors per unit of FFN width (elements; times activation bytes)."""
    if not model.gated_mlp:
        return 2  # first linear's output and the activation's output (Korthikanti: 8sbh at f=4h)
    return 3 if impl.fused_gated_mlp else 4


def _embedding_node(model: ModelSpec) -> EdgeNode:
    h = model.hidden_size
    replicated = 0
    if model.position_embedding == "learned":
        replicated += (model.max_position_embeddings + model.learned_position_offset) * h
    if model.embedding_norm:
        replicated += norm_params(model, h)
    mask = MASK_BYTES * h if model.hidden_dropout > 0 else 0.0
    return EdgeNode(
        name="embedding",
        params=ParamSplit(tp=model.vocab_size * h, replicated=replicated),
        saved=SavedBytes(sp=TOKEN_ID_BYTES + mask),
    )


def _output_node(model: ModelSpec, *, impl: Implementation) -> EdgeNode:
    """Final norm, output projection and cross-entropy over fp32 logits.

    Saved: the norm's input and statistic, the projection's input, and 4 bytes per
    vocabulary entry: the fp32 log-probabilities of ``F.cross_entropy`` (eager), or the
    fp32 ``exp_logits`` Megatron's vocab-parallel cross entropy keeps (fused).

    Transients, per vocabulary entry, next to what is saved:
    * eager forward: the bf16 logits (2) and their fp32 copy (4) while ``log_softmax``
      runs; eager backward: the dense fp32 gradient of the log-probabilities from
      ``nll_loss`` (4) and ``log_softmax``'s fp32 input gradient (4);
    * fused forward: the bf16 logits (2) while they are copied to fp32 in place of the
      saved buffer; fused backward: the gradient is formed in that buffer and cast to
      bf16 (2) for the projection's backward;
    * DTensor ``loss_parallel`` (torch/distributed/tensor/parallel/loss.py): its sharded
      log-softmax keeps the shifted logits (x - max) while it exponentiates them and forms
      the result (three fp32 tensors alive where the fused kernel has two), and its fused
      nll/log-softmax backward holds the scattered one-hot gradient, ``exp(log-probs)``
      and their sum at once (three where eager has two): 4 bytes more each way.
    """
    h, v = model.hidden_size, model.vocab_size
    output_weights = 0 if model.tie_embeddings else v * h
    act = impl.activation_bytes
    forward_transient = act if impl.fused_cross_entropy else act + 4
    backward_transient = act if impl.fused_cross_entropy else 4 + 4
    projection_input = impl.activation_bytes * h
    gathered = projection_input if impl.saves_gathered_inputs else 0.0
    if impl.loss_parallel:
        forward_transient += LOSS_PARALLEL_TEMPORARY_BYTES
        backward_transient += LOSS_PARALLEL_TEMPORARY_BYTES
    return EdgeNode(
        name="output",
        params=ParamSplit(tp=output_weights, replicated=norm_params(model, h)),
        saved=SavedBytes(
            tp=4 * v,
            sp=impl.residual_bytes * h + NORM_STATISTIC_BYTES + projection_input - gathered,
            whole=gathered,
        ),
        forward_transient_per_token=forward_transient * v,
        backward_transient_per_token=backward_transient * v,
        weight_cast_bytes=2.0 * v * h if impl.casts_weights else 0.0,
    )
