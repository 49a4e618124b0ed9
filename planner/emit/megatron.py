"""Megatron-LM emitter: a plan to a ``pretrain_gpt.py`` launch script and its arguments.

Files (../shared/reference/frameworks.md section 1):

  launch_megatron.sh  bash: a header recording autopar's version, the model and the plan's
                      predictions, and every environment variable it reads; then torchrun
                      (1.2) calling ``"$MEGATRON_PATH"/pretrain_gpt.py`` with the arguments in
                      commented bash arrays (model, parallelism, batch, precision, optimizer,
                      recompute, data/logging), one flag and its value per line
  megatron_args.txt   the same arguments, one flag and its value per line, shell-quoted

``megatron_arguments(plan)`` is the argument list (argv tokens, stable order);
``parse_megatron_arguments(args)`` reads one back into ModelSpec fields and a
``ParallelConfig`` (the round trip the tests check). Placeholders the user sets (data,
tokenizer, checkpoints and their interval, iterations, learning rate) are ``$NAME`` tokens
that the script fills from its environment (``PLACEHOLDERS``).

Every flag written is in ``MEGATRON_FLAGS``: model, layout, batch and precision flags from
frameworks.md 1.3-1.7 (Megatron-LM main ``d98e8a64``), the data/logging ones and
``--rope-type``/``--no-rope-fusion`` from ``megatron/training/arguments.py``. The tests
check all of them against the argument parser and ``validate_args`` of Megatron-LM
``core_v0.16.1`` where a checkout is available. MLA models get ``--rope-type rope`` (the
spec has no RoPE scaling; Megatron's MLA would default to YaRN) and ``--no-rope-fusion``
(Megatron's fused MLA RoPE is YaRN-only).

What Megatron cannot express is refused with ``EmitError`` naming it, never changed
silently: ZeRO-2/3 and plans made for another framework, GeGLU (``--quick-geglu`` is a
different activation) and plain ReLU MLPs, ALiBi, learned-position offsets, sliding-window
attention, parallel residuals, shared or extra norms, bias patterns other than "all",
"none" or "QKV only", ``a2a+p2p`` context parallelism (needs group sizes the plan does not
choose) and optimizer offload without the distributed optimizer. Kept to one module (over
400 lines) so that the flag table, the writer and its inverse change together.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import shlex
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from planner.emit.base import EmitError, EmitInput, EmittedFiles, autopar_version, register
from planner.errors import SpecError
from planner.specs.layout import ParallelConfig, resolve_data_parallel, stage_layer_counts
from planner.specs.model import ModelSpec

LAUNCH_FILE = "launch_megatron.sh"
ARGS_FILE = "megatron_args.txt"
VOCAB_DIVISOR = 128  # --make-vocab-size-divisible-by default (frameworks.md 1.6)
DEFAULT_MASTER_PORT = 6000  # Megatron-LM's example scripts
PLACEHOLDERS = {  # environment variable -> (meaning, default or None when required)
    "DATA_PATH": ("Megatron-preprocessed dataset prefix (tools/preprocess_data.py)", None),
    "TOKENIZER_MODEL": ("HuggingFace tokenizer name or path", None),
    "CHECKPOINT_PATH": ("directory to save checkpoints to and resume from", None),
    "TRAIN_ITERS": ("optimizer steps to run", "1000"),
    "LR": ("peak learning rate", "3.0e-4"),
    "SAVE_INTERVAL": ("steps between checkpoints", "1000"),
}


FlagKind = Literal["switch", "int", "float", "str"]


@dataclass(frozen=True)
class MegatronFlag:
    """One Megatron-LM argument: how its value is read, and where autopar took it from."""

    kind: FlagKind
    source: str
    choices: tuple[str, ...] = ()


def _flags(
    kind: FlagKind, source: str, names: str, choices: tuple[str, ...] = ()
) -> dict[str, MegatronFlag]:
    return {f"--{name}": MegatronFlag(kind, source, choices) for name in names.split()}


_F = "frameworks.md "
_ARGS = "megatron/training/arguments.py "
MEGATRON_FLAGS: MappingProxyType[str, MegatronFlag] = MappingProxyType({
    **_flags("int", _F + "1.3", "tensor-model-parallel-size pipeline-model-parallel-size "
             "context-parallel-size expert-model-parallel-size expert-tensor-parallel-size "
             "num-virtual-stages-per-pipeline-rank decoder-first-pipeline-num-layers "
             "decoder-last-pipeline-num-layers"),
    **_flags("str", _F + "1.3 (pitfall 11)", "cp-comm-type", ("p2p", "all_gather", "a2a")),
    **_flags("switch", _F + "1.3", "sequence-parallel use-distributed-optimizer "
             "overlap-grad-reduce overlap-param-gather tp-comm-overlap"),
    **_flags("str", _F + "1.4", "recompute-granularity", ("full", "selective")),
    **_flags("str", _F + "1.4", "recompute-method", ("uniform", "block")),
    **_flags("int", _F + "1.4", "recompute-num-layers"),
    **_flags("switch", _F + "1.4", "optimizer-cpu-offload use-precision-aware-optimizer"),
    **_flags("float", _F + "1.4", "optimizer-offload-fraction"),
    **_flags("int", _F + "1.5", "micro-batch-size global-batch-size seq-length "
             "max-position-embeddings train-iters"),
    **_flags("int", _F + "1.6", "num-layers hidden-size ffn-hidden-size num-attention-heads "
             "num-query-groups kv-channels vocab-size rotary-base num-experts moe-router-topk "
             "moe-ffn-hidden-size moe-shared-expert-intermediate-size q-lora-rank kv-lora-rank "
             "qk-head-dim qk-pos-emb-head-dim v-head-dim mtp-num-layers"),
    **_flags("switch", _F + "1.6", "group-query-attention multi-latent-attention swiglu "
             "squared-relu qk-layernorm disable-bias-linear add-qkv-bias "
             "untie-embeddings-and-output-weights moe-router-enable-expert-bias "
             "moe-grouped-gemm"),
    **_flags("str", _F + "1.6", "normalization", ("LayerNorm", "RMSNorm")),
    **_flags("float", _F + "1.6", "norm-epsilon rotary-percent"),
    **_flags("str", _F + "1.6", "position-embedding-type", ("learned_absolute", "rope")),
    **_flags("str", _F + "1.6 (int or list pattern)", "moe-layer-freq"),
    **_flags("str", _F + "1.6", "moe-router-score-function", ("softmax", "sigmoid")),
    **_flags("str", _F + "1.6", "moe-token-dispatcher-type", ("alltoall",)),
    **_flags("switch", _F + "1.9 rule 40", "moe-router-pre-softmax"),
    # TransformerConfig fields (moe_shared_expert_gate, moe_expert_capacity_factor,
    # hidden_dropout, attention_dropout) turned into flags by ArgumentGroupFactory (1.1)
    **_flags("switch", _F + "1.1", "moe-shared-expert-gate"),
    **_flags("float", _F + "1.1", "moe-expert-capacity-factor hidden-dropout attention-dropout"),
    **_flags("switch", _F + "1.7", "bf16 fp16"),
    **_flags("str", _F + "1.7", "fp8-format", ("e4m3", "hybrid")),
    **_flags("str", _ARGS + "_add_data_args", "data-path"),
    **_flags("str", _ARGS + "_add_tokenizer_args", "tokenizer-model"),
    **_flags("str", _ARGS + "_add_tokenizer_args", "tokenizer-type", ("HuggingFaceTokenizer",)),
    **_flags("float", _ARGS + "_add_learning_rate_args", "lr"),
    **_flags("str", _ARGS + "_add_checkpointing_args", "save load"),
    **_flags("int", _ARGS + "_add_checkpointing_args", "save-interval"),
    **_flags("str", _ARGS + "_add_training_args", "rope-type", ("rope",)),
    **_flags("switch", _ARGS + "_add_training_args", "no-rope-fusion"),
    **_flags("int", _ARGS + "_add_logging_args", "log-interval"),
    **_flags("switch", _ARGS + "_add_logging_args", "log-throughput"),
})  # fmt: skip

_GROUPS = (  # bash array name, heading
    ("MODEL_ARGS", "model"),
    ("PARALLEL_ARGS", "parallelism"),
    ("BATCH_ARGS", "batch"),
    ("PRECISION_ARGS", "precision"),
    ("OPTIMIZER_ARGS", "optimizer"),
    ("RECOMPUTE_ARGS", "recompute"),
    ("DATA_ARGS", "data, tokenizer, schedule, checkpoints, logging: yours to set"),
)
_Item = tuple[str, tuple[str, ...], str]  # flag, values, comment ("" for none)


def _num(value: float) -> str:
    return repr(float(value))


# -- refusals -------------------------------------------------------------------------------


def _plan_refusals(plan: EmitInput) -> list[str]:
    layout = plan.layout
    reasons: list[str] = []
    if layout.zero_stage >= 2:
        reasons.append(
            f"zero_stage {layout.zero_stage}: Megatron-LM has no ZeRO-2/3: use --framework "
            "deepspeed or torchtitan"
        )
    elif plan.framework != "megatron":
        reasons.append(
            f"the plan was estimated for framework '{plan.framework}': re-estimate it with "
            "--framework megatron, or emit --format " + plan.framework
        )
    if plan.model.moe is None and (layout.ep > 1 or layout.expert_tp != layout.tp):
        reasons.append("ep/etp: expert parallelism needs an MoE model (rule 38)")
    if layout.cp > 1 and layout.cp_comm_type == "a2a+p2p":
        reasons.append(
            "cp_comm_type a2a+p2p needs --hierarchical-context-parallel-sizes, which the plan "
            "does not choose (rule 11)"
        )
    if layout.offload_optimizer_fraction > 0 and not layout.shards_optimizer:
        reasons.append(
            "offload_optimizer_fraction: --optimizer-cpu-offload needs "
            "--use-precision-aware-optimizer, which needs --use-distributed-optimizer"
        )
    if plan.nproc_per_node * plan.nodes != plan.num_gpus:
        reasons.append(
            f"{plan.num_gpus} GPUs do not fill {plan.nodes} nodes of {plan.gpus_per_node}: "
            "torchrun starts the same number of processes on every node"
        )
    try:
        stage_layer_counts(plan.model, layout)
    except SpecError as error:
        reasons.append(str(error).removeprefix("layout: "))
    return reasons + _model_refusals(plan.model)


def _model_refusals(model: ModelSpec) -> list[str]:
    reasons: list[str] = []
    activation = {
        "geglu": "mlp_activation geglu: Megatron-LM has no GeGLU flag, and --quick-geglu is a "
        "different activation (x * sigmoid(1.702 x)); autopar will not substitute it",
        "relu": "mlp_activation relu: pretrain_gpt.py has no flag for a plain ReLU MLP",
    }
    if model.mlp_activation in activation:
        reasons.append(activation[model.mlp_activation])
    if model.position_embedding == "alibi":
        reasons.append("position_embedding alibi: --position-embedding-type has no ALiBi")
    if model.learned_position_offset:
        reasons.append("learned_position_offset: Megatron's position table has no offset rows")
    if model.sliding_window is not None:
        reasons.append(
            "sliding_window: autopar does not emit --window-size (its (left, right) window "
            "convention is not verified here)"
        )
    for field, what in (
        ("parallel_residual", "parallel attention/MLP residual"),
        ("shared_layer_norm", "one input norm shared by attention and MLP"),
        ("embedding_norm", "a norm after the embedding"),
    ):
        if getattr(model, field):
            reasons.append(f"{field}: pretrain_gpt.py has no flag for {what}")
    if model.norms_per_layer != 2:
        reasons.append("norms_per_layer 4: pretrain_gpt.py has no flag for sandwich norms")
    biases = (model.qkv_bias, model.attention_output_bias, model.mlp_bias)
    if biases not in ((True, True, True), (False, False, False), (True, False, False)):
        reasons.append(
            "qkv_bias/attention_output_bias/mlp_bias = {}/{}/{}: Megatron switches all linear "
            "biases together (--disable-bias-linear), with --add-qkv-bias the only "
            "exception".format(*biases)
        )
    if model.position_embedding == "rope" and not float(model.rope_theta or 0).is_integer():
        reasons.append(f"rope_theta {model.rope_theta}: --rotary-base takes an integer")
    return reasons


# -- arguments, by group --------------------------------------------------------------------


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


def _model_items(plan: EmitInput) -> list[_Item]:
    model, tp = plan.model, plan.layout.tp
    items: list[_Item] = [
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
    if model.mtp_layers:
        items.append(("--mtp-num-layers", (str(model.mtp_layers),), ""))
    items += [
        ("--hidden-dropout", (_num(model.hidden_dropout),), "Megatron's default is 0.1"),
        ("--attention-dropout", (_num(model.attention_dropout),), ""),
    ]
    return items


def _moe_items(model: ModelSpec) -> list[_Item]:
    moe = model.moe
    if moe is None:
        return []
    items: list[_Item] = [
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
        items.append(("--moe-router-pre-softmax", (), "top-1 softmax routing (rule 40)"))
    if moe.capacity_factor is not None:
        items.append(("--moe-expert-capacity-factor", (_num(moe.capacity_factor),), ""))
    items.append(("--moe-token-dispatcher-type", ("alltoall",), ""))
    items.append(("--moe-grouped-gemm", (), ""))
    return items


def _parallel_items(plan: EmitInput) -> list[_Item]:
    layout, is_moe = plan.layout, plan.model.moe is not None
    note = (
        f"{plan.num_gpus} GPUs = tp {layout.tp} x cp {layout.cp} x pp {layout.pp} x dp "
        f"{plan.dp}" + (f"; ep {layout.ep} folds into dp x cp x tp" if is_moe else "")
    )
    items: list[_Item] = [
        ("--tensor-model-parallel-size", (str(layout.tp),), note),
        ("--pipeline-model-parallel-size", (str(layout.pp),), ""),
        ("--context-parallel-size", (str(layout.cp),), ""),
    ]
    if layout.cp > 1:
        items.append(("--cp-comm-type", (layout.cp_comm_type,), ""))
    if is_moe:
        items.append(("--expert-model-parallel-size", (str(layout.ep),), ""))
        items.append(("--expert-tensor-parallel-size", (str(layout.expert_tp),), ""))
    if layout.interleaved:
        items.append(("--num-virtual-stages-per-pipeline-rank", (str(layout.vpp),), ""))
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
    if layout.tp > 1 and (layout.sequence_parallel or layout.ep > 1):
        items.append(("--sequence-parallel", (), "only with tp > 1; required with ep (rule 15)"))
    if layout.tp_comm_overlap:
        items.append(("--tp-comm-overlap", (), ""))
    return items


def _batch_items(plan: EmitInput) -> list[_Item]:
    note = (
        f"{plan.global_batch} sequences per step = mbs {plan.layout.mbs} x dp {plan.dp} x "
        f"{plan.grad_accumulation} micro-batches"
    )
    return [
        ("--micro-batch-size", (str(plan.layout.mbs),), note),
        ("--global-batch-size", (str(plan.global_batch),), ""),
        ("--seq-length", (str(plan.seq_len),), ""),
    ]


def _precision_items(plan: EmitInput) -> list[_Item]:
    return {
        "bf16": [("--bf16", (), "")],
        "fp16": [("--fp16", (), "")],
        "fp8": [
            ("--bf16", (), "fp8 GEMMs through Transformer Engine (default --fp8-recipe)"),
            ("--fp8-format", ("hybrid",), ""),
        ],
        "fp32": [],
    }[plan.precision]


def _optimizer_items(plan: EmitInput) -> list[_Item]:
    layout = plan.layout
    items: list[_Item] = []
    if layout.shards_optimizer:
        items.append(("--use-distributed-optimizer", (), "ZeRO-1-like, over dp x cp"))
    if layout.overlap_grad_reduce:
        items.append(("--overlap-grad-reduce", (), ""))
    if layout.overlap_param_gather:
        items.append(("--overlap-param-gather", (), "with both of the above (rule 28)"))
    if layout.offload_optimizer_fraction > 0:
        items += [
            ("--optimizer-cpu-offload", (), ""),
            ("--use-precision-aware-optimizer", (), "required by the offload (rule 37)"),
            ("--optimizer-offload-fraction", (_num(layout.offload_optimizer_fraction),), ""),
        ]
    return items


def _recompute_items(plan: EmitInput) -> list[_Item]:
    layout = plan.layout
    if layout.recompute == "none":
        return []
    items: list[_Item] = [("--recompute-granularity", (layout.recompute,), "")]
    if layout.recompute == "full":
        method = layout.recompute_method or "uniform"
        note = (
            ""
            if layout.recompute_method and layout.recompute_num_layers
            else "Megatron needs both; where the plan left them open: uniform, 1 (every layer)"
        )
        items.append(("--recompute-method", (method,), note))
        items.append(("--recompute-num-layers", (str(layout.recompute_num_layers or 1),), ""))
    return items


def _data_items(plan: EmitInput) -> list[_Item]:
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


def _checked(plan: EmitInput) -> EmitInput:
    """The plan with ``dp`` resolved, or ``EmitError`` with every reason it cannot be emitted."""
    try:
        layout = resolve_data_parallel(plan.layout, num_gpus=plan.num_gpus)
    except SpecError as error:
        raise EmitError(str(error)) from None
    plan = dataclasses.replace(plan, layout=layout)
    reasons = _plan_refusals(plan)
    if reasons:
        raise EmitError("cannot emit Megatron-LM arguments: " + "; ".join(reasons))
    return plan


def _argument_groups(plan: EmitInput) -> list[tuple[str, str, list[_Item]]]:
    """(bash array, heading, items) for each non-empty group of a checked plan."""
    groups = [(*group, build(plan)) for group, build in zip(_GROUPS, _BUILDERS, strict=True)]
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
        for _, _, items in _argument_groups(_checked(plan))
        for flag, values, _ in items
        for token in (flag, *values)
    ]


# -- parsing back ---------------------------------------------------------------------------


def megatron_flag_values(args: list[str]) -> dict[str, tuple[str, ...]]:
    """Flag -> its values, checked against ``MEGATRON_FLAGS`` (kind, choices, no repeats)."""
    values: dict[str, list[str]] = {}
    current: list[str] | None = None
    for token in args:
        if token.startswith("--"):
            if token not in MEGATRON_FLAGS:
                raise EmitError(f"Megatron arguments: unknown flag {token}")
            if token in values:
                raise EmitError(f"Megatron arguments: {token} given twice")
            current = values[token] = []
        elif current is None:
            raise EmitError(f"Megatron arguments: value {token!r} before any flag")
        else:
            current.append(token)
    for flag, given in values.items():
        spec = MEGATRON_FLAGS[flag]
        if len(given) != (0 if spec.kind == "switch" else 1):
            raise EmitError(f"Megatron arguments: {flag} takes {spec.kind}, got {given}")
        for value in given:
            if value.startswith("$"):
                continue
            try:
                {"int": int, "float": float}.get(spec.kind, str)(value)
            except ValueError:
                raise EmitError(
                    f"Megatron arguments: {flag} {value!r} is not {spec.kind}"
                ) from None
            if spec.choices and value not in spec.choices:
                raise EmitError(f"Megatron arguments: {flag} {value!r} not in {spec.choices}")
    return {flag: tuple(given) for flag, given in values.items()}


def _eval_pattern(text: str) -> list[int]:
    """Megatron's list patterns, e.g. ``([0]*3+[1]*58)``: lists of ints, ``+`` and ``*``."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.List):
            return [value(element) for element in node.elts]
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
            left, right = value(node.left), value(node.right)
            result = left + right if isinstance(node.op, ast.Add) else left * right
            if isinstance(result, list) and len(result) > 100_000:
                raise EmitError(f"--moe-layer-freq: {text!r} is implausibly long")
            return result
        raise EmitError(f"--moe-layer-freq: cannot read {text!r}")

    try:
        result = value(ast.parse(text, mode="eval").body)
    except SyntaxError:
        raise EmitError(f"--moe-layer-freq: cannot read {text!r}") from None
    if not isinstance(result, list):
        raise EmitError(f"--moe-layer-freq: {text!r} is not a list pattern")
    return result


def _moe_layout(pattern: str | None, num_layers: int) -> tuple[int, int]:
    """(first_dense_layers, layer_freq) from ``--moe-layer-freq``."""
    if pattern is None or "[" not in pattern:
        return 0, int(pattern or 1)
    layers = _eval_pattern(pattern)
    if len(layers) != num_layers or 1 not in layers:
        raise EmitError(f"--moe-layer-freq {pattern}: needs {num_layers} entries and an MoE layer")
    first = layers.index(1)
    moe_at = [index for index, is_moe in enumerate(layers) if is_moe]
    freq = moe_at[1] - moe_at[0] if len(moe_at) > 1 else num_layers - first
    expected = [int(i >= first and (i - first) % freq == 0) for i in range(num_layers)]
    if layers != expected:
        raise EmitError(f"--moe-layer-freq {pattern}: not dense layers then every n-th layer")
    return first, freq


def _model_fields(given: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    def value(flag: str, default: Any = None, kind: type = int) -> Any:
        return kind(given[flag][0]) if flag in given else default

    num_layers = value("--num-layers")
    fields: dict[str, Any] = {
        "num_layers": num_layers,
        "hidden_size": value("--hidden-size"),
        "num_attention_heads": value("--num-attention-heads"),
        "num_kv_heads": value("--num-query-groups") if "--group-query-attention" in given else None,
        "head_dim": value("--kv-channels"),
        "ffn_hidden_size": value("--ffn-hidden-size"),
        "vocab_size": value("--vocab-size"),
        "max_position_embeddings": value("--max-position-embeddings"),
        "mlp_activation": "swiglu" if "--swiglu" in given
        else "squared_relu" if "--squared-relu" in given else "gelu",
        "normalization": value("--normalization", "LayerNorm", str).lower(),
        "norm_epsilon": value("--norm-epsilon", 1e-5, float),
        "qk_norm": "--qk-layernorm" in given,
        "tie_embeddings": "--untie-embeddings-and-output-weights" not in given,
        "qkv_bias": "--disable-bias-linear" not in given or "--add-qkv-bias" in given,
        "attention_output_bias": "--disable-bias-linear" not in given,
        "mlp_bias": "--disable-bias-linear" not in given,
        "hidden_dropout": value("--hidden-dropout", 0.1, float),
        "attention_dropout": value("--attention-dropout", 0.1, float),
        "mtp_layers": value("--mtp-num-layers", 0),
    }  # fmt: skip
    if "--multi-latent-attention" in given and value("--rope-type", "yarn", str) != "rope":
        raise EmitError("Megatron arguments: MLA without --rope-type rope means YaRN RoPE")
    if value("--position-embedding-type", "learned_absolute", str) == "rope":
        fields["position_embedding"] = "rope"
        fields["rope_theta"] = float(value("--rotary-base", 10000))
        fields["rotary_percent"] = value("--rotary-percent", 1.0, float)
    else:
        fields["position_embedding"] = "learned"
    if "--multi-latent-attention" in given:
        fields["mla"] = {
            "q_lora_rank": value("--q-lora-rank"),
            "kv_lora_rank": value("--kv-lora-rank", 32),
            "qk_nope_head_dim": value("--qk-head-dim", 128),
            "qk_rope_head_dim": value("--qk-pos-emb-head-dim", 64),
            "v_head_dim": value("--v-head-dim", 128),
        }
    if "--num-experts" in given:
        expert_ffn = value("--moe-ffn-hidden-size", fields["ffn_hidden_size"])
        shared = value("--moe-shared-expert-intermediate-size", 0)
        count, width = (shared // expert_ffn, None) if shared % expert_ffn == 0 else (1, shared)
        first, freq = _moe_layout(value("--moe-layer-freq", None, str), num_layers)
        fields["moe"] = {
            "num_experts": value("--num-experts"),
            "top_k": value("--moe-router-topk", 2),
            "expert_ffn_hidden_size": expert_ffn,
            "num_shared_experts": count,
            "shared_expert_ffn_hidden_size": width,
            "shared_expert_gate": "--moe-shared-expert-gate" in given,
            "first_dense_layers": first,
            "layer_freq": freq,
            "router_bias": "--moe-router-enable-expert-bias" in given,
            "capacity_factor": value("--moe-expert-capacity-factor", None, float),
        }
    return fields


def _layout(given: dict[str, tuple[str, ...]]) -> ParallelConfig:
    def value(flag: str, default: Any = None, kind: type = int) -> Any:
        return kind(given[flag][0]) if flag in given else default

    tp = value("--tensor-model-parallel-size", 1)
    etp = value("--expert-tensor-parallel-size")
    offload = "--optimizer-cpu-offload" in given
    return ParallelConfig(
        tp=tp,
        pp=value("--pipeline-model-parallel-size", 1),
        cp=value("--context-parallel-size", 1),
        ep=value("--expert-model-parallel-size", 1),
        etp=None if etp == tp else etp,
        vpp=value("--num-virtual-stages-per-pipeline-rank"),
        mbs=value("--micro-batch-size", 1),
        distributed_optimizer="--use-distributed-optimizer" in given,
        sequence_parallel="--sequence-parallel" in given and tp > 1,
        recompute=value("--recompute-granularity", "none", str),
        recompute_method=value("--recompute-method", None, str),
        recompute_num_layers=value("--recompute-num-layers"),
        offload_optimizer_fraction=value("--optimizer-offload-fraction", 1.0, float)
        if offload else 0.0,
        cp_comm_type=value("--cp-comm-type", "p2p", str),
        overlap_grad_reduce="--overlap-grad-reduce" in given,
        overlap_param_gather="--overlap-param-gather" in given,
        tp_comm_overlap="--tp-comm-overlap" in given,
        first_stage_layers=value("--decoder-first-pipeline-num-layers"),
        last_stage_layers=value("--decoder-last-pipeline-num-layers"),
    )  # fmt: skip


def parse_megatron_arguments(
    args: list[str], *, num_gpus: int | None = None
) -> tuple[dict[str, Any], ParallelConfig]:
    """ModelSpec fields and the layout that ``args`` describe (Megatron's defaults for
    absent flags). ``dp`` is filled from ``num_gpus`` when given, else left ``None``.

    Megatron carries only the total shared-expert width, so shared experts come back as
    as many experts of ``--moe-ffn-hidden-size`` as divide it (else one of that width).
    """
    given = megatron_flag_values(args)
    layout = _layout(given)
    if num_gpus is not None:
        layout = resolve_data_parallel(layout, num_gpus=num_gpus)
    return _model_fields(given), layout


# -- files ----------------------------------------------------------------------------------


def _shell_word(token: str) -> str:
    if re.fullmatch(r"\$[A-Z_][A-Z0-9_]*", token):
        return f'"{token}"'
    return shlex.quote(token)


def _one_line(text: str) -> str:
    """Text safe inside a one-line shell comment."""
    return " ".join(text.split())


def _line(flag: str, values: tuple[str, ...]) -> str:
    return " ".join([flag, *(_shell_word(value) for value in values)])


def _prediction(plan: EmitInput, key: str, scale: float, fmt: str, unit: str) -> str:
    value = plan.predictions.get(key)
    return "not predicted" if value is None else f"{value * scale:{fmt}} {unit}"


def _header(plan: EmitInput) -> list[str]:
    layout, model = plan.layout, plan.model
    vpp = f", vpp {layout.vpp}" if layout.interleaved else ""
    lines = [
        "#!/usr/bin/env bash",
        f"# Megatron-LM pretrain_gpt.py launch for {_one_line(model.name)}, written by autopar "
        f"{autopar_version()}.",
        "#",
        f"# Plan: {plan.num_gpus} GPUs ({plan.nodes} node(s) x {plan.nproc_per_node}); tp "
        f"{layout.tp}, pp {layout.pp}{vpp}, cp {layout.cp}, dp {plan.dp}, ep {layout.ep}; "
        f"{plan.precision}",
        "# Predicted by autopar (an estimate, not a measurement):",
        f"#   step time     {_prediction(plan, 'step_time_s', 1, '.3f', 's')}",
        f"#   throughput    {_prediction(plan, 'tokens_per_s', 1, '.1f', 'tokens/s')}",
        f"#   MFU           {_prediction(plan, 'mfu', 100, '.2f', '%')}",
        f"#   peak memory   {_prediction(plan, 'peak_gib', 1, '.2f', 'GiB per GPU')}",
        "#",
        "# Environment it reads (run it on every node, each with its own NODE_RANK):",
        "#   MASTER_ADDR      rendezvous host, the address of node 0 (default: localhost)",
        f"#   MASTER_PORT      rendezvous port (default: {DEFAULT_MASTER_PORT})",
        "#   NODE_RANK        this node's index, 0 .. NNODES-1 (default: 0)",
        f"#   NNODES           number of nodes (default: {plan.nodes}, the plan's)",
        "#   MEGATRON_PATH    a checkout of NVIDIA/Megatron-LM (required)",
    ]
    for name, (meaning, default) in PLACEHOLDERS.items():
        when = "required" if default is None else f"default: {default}"
        lines.append(f"#   {name:<16} {meaning} ({when}; yours to set)")
    return lines


def _script(plan: EmitInput, groups: list[tuple[str, str, list[_Item]]]) -> str:
    lines = [*_header(plan), "set -euo pipefail", ""]
    for name in ("MEGATRON_PATH", *PLACEHOLDERS):
        default = PLACEHOLDERS.get(name, ("", None))[1]
        if default is None:
            lines.append(f': "${{{name}:?set {name} (see the header of this script)}}"')
    for name, default in (
        ("MASTER_ADDR", "localhost"),
        ("MASTER_PORT", str(DEFAULT_MASTER_PORT)),
        ("NODE_RANK", "0"),
        ("NNODES", str(plan.nodes)),
        *((name, spec[1]) for name, spec in PLACEHOLDERS.items() if spec[1] is not None),
    ):
        lines.append(f'{name}="${{{name}:-{default}}}"')
    lines += [
        f'if [ "$NNODES" != {plan.nodes} ]; then',
        f'  echo "warning: the plan is for {plan.nodes} node(s) of {plan.nproc_per_node} GPUs;'
        ' Megatron will derive another data-parallel size" >&2',
        "fi",
        "",
    ]
    if plan.layout.tp > 1 or plan.layout.cp > 1:
        lines += [
            "# Megatron asserts this with tp > 1 or cp > 1 before Blackwell (pitfall 12).",
            "export CUDA_DEVICE_MAX_CONNECTIONS=1",
            "",
        ]
    for array, heading, items in groups:
        if array == "MODEL_ARGS":
            source = f" ({plan.model.source})" if plan.model.source else ""
            heading = _one_line(f"model: {plan.model.name}{source}")
        lines += [f"# {heading}", f"{array}=("]
        for flag, values, comment in items:
            lines += [f"  # {part}" for part in comment.splitlines()]
            lines.append(f"  {_line(flag, values)}")
        lines += [")", ""]
    lines += [
        "torchrun \\",
        f"  --nproc_per_node {plan.nproc_per_node} \\",
        '  --nnodes "$NNODES" \\',
        '  --node_rank "$NODE_RANK" \\',
        '  --master_addr "$MASTER_ADDR" \\',
        '  --master_port "$MASTER_PORT" \\',
        '  "$MEGATRON_PATH"/pretrain_gpt.py \\',
    ]
    arrays = [f'  "${{{array}[@]}}"' for array, _, _ in groups]
    lines += [line + " \\" for line in arrays[:-1]] + arrays[-1:]
    return "\n".join(lines) + "\n"


class MegatronEmitter:
    """Megatron-LM ``pretrain_gpt.py``: a torchrun launch script and its argument list."""

    name = "megatron"

    def emit(self, plan: EmitInput) -> EmittedFiles:
        plan = _checked(plan)
        groups = _argument_groups(plan)
        arguments = [_line(flag, values) for _, _, items in groups for flag, values, _ in items]
        return EmittedFiles(
            files=(
                (LAUNCH_FILE, _script(plan, groups)),
                (ARGS_FILE, "\n".join(arguments) + "\n"),
            )
        )


register(MegatronEmitter())
