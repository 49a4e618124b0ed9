"""Reading a Megatron-LM argument list back into ModelSpec fields and a ParallelConfig."""

from __future__ import annotations

import ast
from typing import Any

from planner.emit.base import EmitError
from planner.emit.megatron._flags import MEGATRON_FLAGS
from planner.emit.megatron._hybrid_cp import read_hybrid_cp
from planner.specs.layout import ParallelConfig, resolve_data_parallel


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
        many = spec.kind in ("list", "ints")
        wrong = not given if many else len(given) != (spec.kind != "switch")
        if wrong:
            raise EmitError(f"Megatron arguments: {flag} takes {spec.kind}, got {given}")
        for value in given:
            if value.startswith("$"):
                continue
            try:
                {"int": int, "ints": int, "float": float}.get(spec.kind, str)(value)
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


def _hierarchical_sizes(given: dict[str, tuple[str, ...]]) -> tuple[int, int] | None:
    """``--hierarchical-context-parallel-sizes A B`` (a2a+p2p's two levels), or None."""
    sizes = given.get("--hierarchical-context-parallel-sizes")
    if sizes is None:
        return None
    if len(sizes) != 2:
        raise EmitError(
            "Megatron arguments: --hierarchical-context-parallel-sizes takes the a2a and the "
            f"p2p group size, got {list(sizes)}"
        )
    return int(sizes[0]), int(sizes[1])


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
        hierarchical_cp_sizes=_hierarchical_sizes(given),
        overlap_grad_reduce="--overlap-grad-reduce" in given,
        overlap_param_gather="--overlap-param-gather" in given,
        tp_comm_overlap="--tp-comm-overlap" in given,
        first_stage_layers=value("--decoder-first-pipeline-num-layers"),
        last_stage_layers=value("--decoder-last-pipeline-num-layers"),
        account_for_embedding_in_pipeline_split=(
            "--account-for-embedding-in-pipeline-split" in given
        ),
        account_for_loss_in_pipeline_split="--account-for-loss-in-pipeline-split" in given,
        microbatch_group_size_per_vp_stage=value(
            "--microbatch-group-size-per-virtual-pipeline-stage"
        ),
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
    read_hybrid_cp(given)  # its flags are checked for one another
    layout = _layout(given)
    if num_gpus is not None:
        layout = resolve_data_parallel(layout, num_gpus=num_gpus)
    return _model_fields(given), layout


def megatron_hybrid_cp(args: list[str]) -> int | None:
    """``--max-seqlen-per-dp-cp-rank`` of an argument list that asks for Megatron-Core's
    hybrid context parallel (None when it does not); ``EmitError`` if a flag it needs is
    missing or the pipeline is split."""
    return read_hybrid_cp(megatron_flag_values(args))
