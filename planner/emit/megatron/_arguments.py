"""The ``pretrain_gpt.py`` argument list for a plan, built group by group."""

from __future__ import annotations

from planner.emit.base import EmitInput
from planner.emit.megatron._flags import GROUPS, VOCAB_DIVISOR, Item
from planner.emit.megatron._hybrid_cp import hybrid_cp_items, static_cp_note
from planner.emit.megatron._refusals import checked
from planner.specs.layout import stage_layer_counts
from planner.specs.model import ModelSpec


def _num(value: float) -> str:
    return repr(float(value))


def _moe_layer_freq(model: ModelSpec) -> str | None:
    """``--moe-layer-freq``: None for every layer, N when N-periodic, else a list pattern."""
    assert model.moe is not None
    k, freq, layers = model.moe.first_dense_layers, model.moe.layer_freq, model.num_layers
    if k == 0:
        return None if freq == 1 else str(freq)
    if freq == 1:
        return f"([0]*{k}+[1]*{layers - k})"
    whole, rest = divmod(layers - k, freq)
    tail = "" if rest == 0 else "+[1]" + (f"+[0]*{rest - 1}" if rest > 1 else "")
    return f"([0]*{k}+([1]+[0]*{freq - 1})*{whole}{tail})"


def _model_items(plan: EmitInput) -> list[Item]:
    model, tp = plan.model, plan.layout.tp
    items: list[Item] = [
        ("--num-layers", (str(model.num_layers),), ""),
        ("--hidden-size", (str(model.hidden_size),), ""),
        ("--ffn-hidden-size", (str(model.ffn_hidden_size),), ""),
        ("--num-attention-heads", (str(model.num_attention_heads),), ""),
    ]
    if model.mla is not None:
        mla = model.mla
        items.append(("--multi-latent-attention", (), "MLA (excludes --group-query-attention)"))
        if mla.q_lora_rank is not None:
            items.append(("--q-lora-rank", (str(mla.q_lora_rank),), ""))
        items += [
            ("--kv-lora-rank", (str(mla.kv_lora_rank),), ""),
            ("--qk-head-dim", (str(mla.qk_nope_head_dim),), ""),
            ("--qk-pos-emb-head-dim", (str(mla.qk_rope_head_dim),), ""),
            ("--v-head-dim", (str(mla.v_head_dim),), ""),
        ]
    else:
        if model.kv_heads < model.num_attention_heads:
            items.append(("--group-query-attention", (), ""))
            items.append(("--num-query-groups", (str(model.kv_heads),), ""))
        if model.head_dim is not None and (
            model.head_dim * model.num_attention_heads != model.hidden_size
        ):
            items.append(("--kv-channels", (str(model.head_dim),), "head_dim x heads != hidden"))
    activation = {"swiglu": "--swiglu", "squared_relu": "--squared-relu"}
    if model.mlp_activation in activation:
        items.append((activation[model.mlp_activation], (), ""))
    norm = "RMSNorm" if model.normalization == "rmsnorm" else "LayerNorm"
    items += [
        ("--normalization", (norm,), ""),
        ("--norm-epsilon", (_num(model.norm_epsilon),), ""),
    ]
    if model.qk_norm:
        items.append(("--qk-layernorm", (), ""))
    if not model.qkv_bias:
        items.append(("--disable-bias-linear", (), "Megatron's default is a bias on every linear"))
    elif not model.mlp_bias:
        items.append(("--disable-bias-linear", (), "Megatron's default is a bias on every linear"))
        items.append(("--add-qkv-bias", (), ""))
    if not model.tie_embeddings:
        items.append(("--untie-embeddings-and-output-weights", (), "Megatron ties by default"))
    if model.position_embedding == "rope":
        items.append(("--position-embedding-type", ("rope",), ""))
        items.append(("--rotary-base", (str(int(model.rope_theta or 0)),), ""))
        if model.mla is not None:
            items.append(("--rope-type", ("rope",), "MLA would default to YaRN (factor 40)"))
            items.append(("--no-rope-fusion", (), "the fused MLA RoPE kernel is YaRN-only"))
        if model.rotary_percent < 1:
            items.append(("--rotary-percent", (_num(model.rotary_percent),), ""))
    else:
        items.append(("--position-embedding-type", ("learned_absolute",), ""))
    positions = max(model.max_position_embeddings, plan.seq_len)
    items.append(("--max-position-embeddings", (str(positions),), ""))
    multiple = VOCAB_DIVISOR * tp
    padded = -(-model.vocab_size // multiple) * multiple
    items.append((
        "--vocab-size", (str(model.vocab_size),),
        f"Megatron pads the vocabulary to a multiple of {VOCAB_DIVISOR} x tp = {multiple}: "
        f"{model.vocab_size} -> {padded}\n(with HuggingFaceTokenizer it pads the tokenizer's "
        "own size)",
    ))  # fmt: skip
    items += _moe_items(model)
    if plan.layer_spec == "local":
        items.append((
            "--transformer-impl", ("local",),
            "megatron-core's local layer spec, as predicted (unfused attention, torch norms)",
        ))  # fmt: skip
    if model.mtp_layers:
        items.append(("--mtp-num-layers", (str(model.mtp_layers),), ""))
    items += [
        ("--hidden-dropout", (_num(model.hidden_dropout),), "Megatron's default is 0.1"),
        ("--attention-dropout", (_num(model.attention_dropout),), ""),
    ]
    return items


def _moe_items(model: ModelSpec) -> list[Item]:
    moe = model.moe
    if moe is None:
        return []
    items: list[Item] = [
        ("--num-experts", (str(moe.num_experts),), "MoE"),
        ("--moe-router-topk", (str(moe.top_k),), ""),
        ("--moe-ffn-hidden-size", (str(moe.expert_ffn_hidden_size),), ""),
    ]
    if moe.num_shared_experts:
        total = moe.num_shared_experts * moe.shared_ffn_hidden_size
        note = f"{moe.num_shared_experts} shared expert(s) x {moe.shared_ffn_hidden_size}"
        items.append(("--moe-shared-expert-intermediate-size", (str(total),), note))
        if moe.shared_expert_gate:
            items.append(("--moe-shared-expert-gate", (), ""))
    pattern = _moe_layer_freq(model)
    if pattern is not None:
        items.append(("--moe-layer-freq", (pattern,), "1 = MoE layer, 0 = dense layer"))
    if moe.router_bias:
        items.append(("--moe-router-score-function", ("sigmoid",), ""))
        items.append(("--moe-router-enable-expert-bias", (), ""))
    elif moe.top_k == 1:
        items.append(
            ("--moe-router-pre-softmax", (), "Megatron-LM requires it for top-1 softmax routing")
        )
    if moe.capacity_factor is not None:
        items.append(("--moe-expert-capacity-factor", (_num(moe.capacity_factor),), ""))
    items.append(("--moe-token-dispatcher-type", ("alltoall",), ""))
    items.append(("--moe-grouped-gemm", (), ""))
    return items


def _parallel_items(plan: EmitInput) -> list[Item]:
    layout, is_moe = plan.layout, plan.model.moe is not None
    note = (
        f"{plan.num_gpus} GPUs = tp {layout.tp} x cp {layout.cp} x pp {layout.pp} x dp "
        f"{plan.dp}" + (f"; ep {layout.ep} folds into dp x cp x tp" if is_moe else "")
    )
    items: list[Item] = [
        ("--tensor-model-parallel-size", (str(layout.tp),), note),
        ("--pipeline-model-parallel-size", (str(layout.pp),), ""),
        ("--context-parallel-size", (str(layout.cp),), static_cp_note(plan)),
    ]
    if layout.cp > 1:
        items.append(("--cp-comm-type", (layout.cp_comm_type,), ""))
    if layout.cp > 1 and layout.hierarchical_cp_sizes is not None:
        a2a, ring = layout.hierarchical_cp_sizes
        note = f"all-to-all over {a2a} adjacent CP ranks, ring across {ring} such groups"
        items.append(("--hierarchical-context-parallel-sizes", (str(a2a), str(ring)), note))
    items += hybrid_cp_items(plan)
    if is_moe:
        items.append(("--expert-model-parallel-size", (str(layout.ep),), ""))
        items.append(("--expert-tensor-parallel-size", (str(layout.expert_tp),), ""))
    if layout.interleaved:
        items.append(("--num-virtual-stages-per-pipeline-rank", (str(layout.vpp),), ""))
    group = layout.microbatch_group_size_per_vp_stage
    if layout.interleaved and group is not None:
        items.append((
            "--microbatch-group-size-per-virtual-pipeline-stage", (str(group),),
            f"micro-batches per model chunk in turn (Megatron's default: pp = {layout.pp})",
        ))  # fmt: skip
    if layout.first_stage_layers is not None or layout.last_stage_layers is not None:
        counts = stage_layer_counts(plan.model, layout)
        note = "uneven split, layers per stage: " + " ".join(map(str, counts))
        if layout.first_stage_layers is not None:
            first = str(layout.first_stage_layers)
            items.append(("--decoder-first-pipeline-num-layers", (first,), note))
            note = ""
        if layout.last_stage_layers is not None:
            last = str(layout.last_stage_layers)
            items.append(("--decoder-last-pipeline-num-layers", (last,), note))
    if layout.account_for_embedding_in_pipeline_split:
        items.append(("--account-for-embedding-in-pipeline-split", (), ""))
    if layout.account_for_loss_in_pipeline_split:
        items.append(("--account-for-loss-in-pipeline-split", (), ""))
    if layout.tp > 1 and (layout.sequence_parallel or layout.ep > 1):
        items.append(
            (
                "--sequence-parallel",
                (),
                "only with tp > 1; Megatron-LM requires it with tp > 1 and ep > 1",
            )
        )
    if layout.tp_comm_overlap:
        items.append(("--tp-comm-overlap", (), ""))
    return items


def _batch_items(plan: EmitInput) -> list[Item]:
    note = (
        f"{plan.global_batch} sequences per step = mbs {plan.layout.mbs} x dp {plan.dp} x "
        f"{plan.grad_accumulation} micro-batches"
    )
    return [
        ("--micro-batch-size", (str(plan.layout.mbs),), note),
        ("--global-batch-size", (str(plan.global_batch),), ""),
        ("--seq-length", (str(plan.seq_len),), ""),
    ]


def _precision_items(plan: EmitInput) -> list[Item]:
    return {
        "bf16": [("--bf16", (), "")],
        "fp16": [("--fp16", (), "")],
        "fp8": [
            ("--bf16", (), "fp8 GEMMs through Transformer Engine (default --fp8-recipe)"),
            ("--fp8-format", ("hybrid",), ""),
        ],
        "fp32": [],
    }[plan.precision]


def _optimizer_items(plan: EmitInput) -> list[Item]:
    layout = plan.layout
    items: list[Item] = []
    if layout.shards_optimizer:
        items.append(("--use-distributed-optimizer", (), "ZeRO-1-like, over dp x cp"))
    if layout.overlap_grad_reduce:
        items.append(("--overlap-grad-reduce", (), ""))
    if layout.overlap_param_gather:
        items.append(
            ("--overlap-param-gather", (), "Megatron-LM requires both of the above with it")
        )
    if plan.grad_reduce_in_bf16:
        items.append(("--grad-reduce-in-bf16", (), "the gradient buffer in bf16, as planned"))
    if plan.gradient_accumulation_fusion is False:
        items.append((
            "--no-gradient-accumulation-fusion", (),
            "as planned: a hook adds each weight gradient into the fp32 main gradient",
        ))  # fmt: skip
    if plan.cross_entropy_loss_fusion:
        items.append(("--cross-entropy-loss-fusion", (), "the fused cross entropy, as planned"))
    if layout.offload_optimizer_fraction > 0:
        items += [
            ("--optimizer-cpu-offload", (), ""),
            (
                "--use-precision-aware-optimizer",
                (),
                "Megatron-LM requires it with --optimizer-cpu-offload",
            ),
            ("--optimizer-offload-fraction", (_num(layout.offload_optimizer_fraction),), ""),
        ]
    return items


def _recompute_items(plan: EmitInput) -> list[Item]:
    layout, memory = plan.layout, plan.activation_memory
    items: list[Item] = []
    if layout.recompute != "none":
        items.append(("--recompute-granularity", (layout.recompute,), ""))
    if layout.recompute == "selective":
        items.append(
            (
                "--recompute-modules",
                ("core_attn",),
                "the attention core: autopar's selective recomputation (megatron-core's default)",
            )
        )
    if layout.recompute == "full":
        method = layout.recompute_method or "uniform"
        note = (
            ""
            if layout.recompute_method and layout.recompute_num_layers
            else "Megatron needs both; where the plan left them open: uniform, 1 (every layer)"
        )
        if layout.recompute_method == "block" and memory is not None:
            note = "the first N layers of each model chunk of every stage (autopar memplan)"
        items.append(("--recompute-method", (method,), note))
        items.append(("--recompute-num-layers", (str(layout.recompute_num_layers or 1),), ""))
    if memory is not None and memory.offload_layers:
        items.append(
            (
                "--cpu-offloading-num-layers",
                (str(memory.offload_layers),),
                "activations of the first N layers to the host (Transformer Engine's CPU "
                "offload; autopar memplan)",
            )
        )
    return items


def _data_items(plan: EmitInput) -> list[Item]:
    return [
        ("--data-path", ("$DATA_PATH",), ""),
        ("--tokenizer-type", ("HuggingFaceTokenizer",), ""),
        ("--tokenizer-model", ("$TOKENIZER_MODEL",), ""),
        ("--train-iters", ("$TRAIN_ITERS",), ""),
        ("--lr", ("$LR",), ""),
        ("--save", ("$CHECKPOINT_PATH",), ""),
        ("--load", ("$CHECKPOINT_PATH",), ""),
        ("--save-interval", ("$SAVE_INTERVAL",), "Megatron requires it with --save"),
        ("--log-interval", ("1",), ""),
        ("--log-throughput", (), "TFLOP/s per GPU, to compare with the prediction above"),
    ]


_BUILDERS = (
    _model_items,
    _parallel_items,
    _batch_items,
    _precision_items,
    _optimizer_items,
    _recompute_items,
    _data_items,
)


def argument_groups(plan: EmitInput) -> list[tuple[str, str, list[Item]]]:
    """(bash array, heading, items) for each non-empty group of a checked plan."""
    groups = [(*group, build(plan)) for group, build in zip(GROUPS, _BUILDERS, strict=True)]
    return [group for group in groups if group[2]]


def megatron_arguments(plan: EmitInput) -> list[str]:
    """The ``pretrain_gpt.py`` argument list (argv tokens) for ``plan``, in a stable order.

    Run from the repository root:

    >>> import json, pathlib
    >>> from planner.emit.base import emit_input_from_estimate
    >>> path = pathlib.Path("tests/fixtures/plans/mixtral-8x7b-16xh100.json")
    >>> args = megatron_arguments(emit_input_from_estimate(json.loads(path.read_text())))
    >>> args[:4]
    ['--num-layers', '32', '--hidden-size', '4096']
    """
    return [
        token
        for _, _, items in argument_groups(checked(plan))
        for flag, values, _ in items
        for token in (flag, *values)
    ]
