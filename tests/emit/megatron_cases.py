"""Megatron-LM: the plans it is tested on, what it refuses, and its arguments read back."""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from emitter_cases import (
    Build,
    Contract,
    Files,
    golden_folder,
    load_plan,
    make_plan,
    mixtral_variant,
)

from planner.catalog import catalog_model
from planner.emit.base import ActivationMemory, EmitInput
from planner.emit.megatron import ARGS_FILE, parse_megatron_arguments
from planner.specs.layout import ParallelConfig
from planner.specs.model import ModelSpec

MEGATRON_CASES: dict[str, Build] = {
    "llama-3.1-70b-64xh100": lambda: load_plan("llama-3.1-70b-64xh100"),
    "mixtral-8x7b-16xh100": lambda: load_plan("mixtral-8x7b-16xh100"),
    # the 8B ZeRO-2 fixture's layout, but as Megatron runs it: distributed optimizer
    # with both overlaps, full recompute with Megatron's defaults for method/layers
    "llama-3.1-8b-dist-opt-full": lambda: dataclasses.replace(
        load_plan(
            "llama-3.1-8b-8xh100-zero2", zero_stage=0, distributed_optimizer=True,
            overlap_grad_reduce=True, overlap_param_gather=True, recompute="full",
        ),
        framework="megatron",
    ),
    # Megatron's own uneven split: embedding and loss each counted as a layer (34 / 2)
    "llama-3.1-8b-pp2-account-for-splits": lambda: make_plan(
        LLAMA, num_gpus=8, pp=2, account_for_embedding_in_pipeline_split=True,
        account_for_loss_in_pipeline_split=True,
    ),
    "llama-3.1-8b-cp2-allgather-fp8": lambda: make_plan(
        "llama-3.1-8b", num_gpus=8, precision="fp8", tp=2, cp=2, dp=2,
        cp_comm_type="all_gather", sequence_parallel=True, tp_comm_overlap=True,
        recompute="full", recompute_method="block", recompute_num_layers=2,
    ),
    "deepseek-v3-256xh100": lambda: make_plan(
        "deepseek-v3", num_gpus=256, global_batch=512, precision="fp8", tp=2, pp=8,
        dp=16, ep=32, etp=1, first_stage_layers=7, last_stage_layers=6,
        distributed_optimizer=True, overlap_grad_reduce=True, overlap_param_gather=True,
        sequence_parallel=True, recompute="full", recompute_method="block",
        recompute_num_layers=2,
    ),
    "gpt-175b-fp16-offload": lambda: make_plan(
        "gpt-175b", num_gpus=64, seq_len=2048, global_batch=64, precision="fp16", tp=8,
        pp=4, vpp=3, dp=2, sequence_parallel=True, tp_comm_overlap=True,
        distributed_optimizer=True, offload_optimizer_fraction=0.5, recompute="selective",
    ),
    "qwen1.5-moe-ep4": lambda: make_plan(
        "qwen1.5-moe-a2.7b", num_gpus=8, ep=4, dp=8, distributed_optimizer=True
    ),
    "qwen3-32b-tp8": lambda: make_plan("qwen3-32b", num_gpus=8, tp=8, sequence_parallel=True),
    "nemotron-4-340b-pp12": lambda: make_plan(
        "nemotron-4-340b", num_gpus=96, global_batch=96, tp=8, pp=12,
        sequence_parallel=True, distributed_optimizer=True, recompute="selective",
    ),
    "moe-every-2nd-after-1-dense-top1": lambda: make_plan(
        mixtral_variant(first_dense_layers=1, layer_freq=2, top_k=1, capacity_factor=1.25),
        num_gpus=8, ep=8,
    ),
    "moe-every-2nd": lambda: make_plan(mixtral_variant(layer_freq=2), num_gpus=8, ep=2),
    # hierarchical CP over two nodes: all-to-all among the 8 CP ranks of a node, ring
    # across the 2 nodes (--hierarchical-context-parallel-sizes 8 2)
    "llama-3.1-8b-cp16-a2a-p2p": lambda: make_plan(
        "llama-3.1-8b", num_gpus=16, seq_len=32768, global_batch=16, cp=16,
        cp_comm_type="a2a+p2p", hierarchical_cp_sizes=(8, 2), distributed_optimizer=True,
    ),
    "fp32-cp2-a2a": lambda: make_plan(
        "llama-3.1-8b", num_gpus=8, precision="fp32", cp=2, cp_comm_type="a2a"
    ),
    # autopar memplan --budget-gib --emit: activation offload of the first 10 layers (pp 1,
    # no recomputation: megatron-core's conditions), and block recomputation of 13 layers
    "llama-3.1-8b-memplan-offload": lambda: dataclasses.replace(
        make_plan("llama-3.1-8b", num_gpus=8, tp=8, sequence_parallel=True),
        activation_memory=ActivationMemory(
            budget_gib=40, peak_gib=39.5, added_time_s=0.2, offload_layers=10
        ),
    ),
    # NVIDIA's DGX Cloud 8B recipe planned with the launch's run-time settings: the
    # allocator exported, the bf16 gradient buffer and both kernel switches written
    "llama-3.1-8b-cp2-runtime-settings": lambda: dataclasses.replace(
        make_plan("llama-3.1-8b", num_gpus=8, seq_len=8192, global_batch=128, cp=2, dp=4,
                  distributed_optimizer=True),
        expandable_segments=True, grad_reduce_in_bf16=True, cross_entropy_loss_fusion=True,
        gradient_accumulation_fusion=False,
    ),
    "llama-3.1-8b-memplan-block": lambda: dataclasses.replace(
        make_plan("llama-3.1-8b", num_gpus=8, tp=2, pp=2, sequence_parallel=True,
                  recompute="full", recompute_method="block", recompute_num_layers=13),
        activation_memory=ActivationMemory(
            budget_gib=40, peak_gib=39.5, added_time_s=1.6,
            mapped="chosen per layer (stage 0: recompute 0-4, offload 5-12); megatron sets one "
            "block count for every stage and chunk",
        ),
    ),
}  # fmt: skip
LLAMA = "llama-3.1-8b"


def _llama(**model: Any) -> ModelSpec:
    return catalog_model(LLAMA).spec.model_copy(update=model)


def _megatron_refusal(model: dict[str, Any], layout: dict[str, Any]) -> Build:
    return lambda: make_plan(_llama(**model), num_gpus=8, **layout)


MEGATRON_REFUSALS: dict[str, tuple[Build, tuple[str, ...]]] = {
    # case: (plan, what the message names)
    "geglu": (_megatron_refusal({"mlp_activation": "geglu"}, {}),
              ("--quick-geglu is a different activation",)),
    "relu": (_megatron_refusal({"mlp_activation": "relu"}, {}), ("mlp_activation relu",)),
    "alibi": (_megatron_refusal({"position_embedding": "alibi", "rope_theta": None}, {}),
              ("ALiBi",)),
    "zero 3": (_megatron_refusal({}, {"zero_stage": 3}), ("Megatron-LM has no ZeRO-2/3",)),
    "sliding window": (_megatron_refusal({"sliding_window": 4096}, {}), ("--window-size",)),
    "parallel residual": (_megatron_refusal({"parallel_residual": True}, {}),
                          ("parallel_residual",)),
    "sandwich norms": (_megatron_refusal({"norms_per_layer": 4}, {}), ("norms_per_layer",)),
    "learned offset": (
        _megatron_refusal({"position_embedding": "learned", "learned_position_offset": 2}, {}),
        ("learned_position_offset",),
    ),
    "mlp-only bias": (_megatron_refusal({"mlp_bias": True}, {}),
                      ("--add-qkv-bias the only exception",)),
    "fractional rope base": (_megatron_refusal({"rope_theta": 10000.5}, {}),
                             ("--rotary-base takes an integer",)),
    "gpipe": (_megatron_refusal({}, {"pp": 2, "pipeline_schedule": "gpipe"}),
              ("Megatron-LM runs only the 1F1B schedule",)),
    "offload without dist-opt": (_megatron_refusal({}, {"offload_optimizer_fraction": 0.5}),
                                 ("needs --use-distributed-optimizer",)),
    "zero-2 fixture": (lambda: load_plan("llama-3.1-8b-8xh100-zero2"),
                       ("Megatron-LM has no ZeRO-2/3: use --framework deepspeed",)),
    "fsdp fixture": (lambda: load_plan("llama-3.1-8b-8xh100-fsdp"),
                     ("Megatron-LM has no ZeRO-2/3: use --framework deepspeed",)),
    "activation offload with pp": (
        lambda: dataclasses.replace(
            make_plan(LLAMA, num_gpus=8, pp=2),
            activation_memory=ActivationMemory(40, 39.0, 0.1, offload_layers=4),
        ),
        ("activation offload with pp > 1",),
    ),
    "activation offload with recompute": (
        lambda: dataclasses.replace(
            make_plan(LLAMA, num_gpus=8, recompute="selective"),
            activation_memory=ActivationMemory(40, 39.0, 0.1, offload_layers=4),
        ),
        ("activation offload with recomputation",),
    ),
    "every k-th layer": (
        lambda: dataclasses.replace(
            make_plan(LLAMA, num_gpus=8, recompute="full"),
            activation_memory=ActivationMemory(40, 39.0, 0.1, every_nth_layer=3),
        ),
        ("Megatron recomputes the first N",),
    ),
    "plan for another framework": (
        lambda: load_plan("llama-3.1-8b-8xh100-zero2", zero_stage=1),
        ("estimated for framework 'deepspeed'",),
    ),
    "gpus that do not fill the nodes": (
        lambda: make_plan(LLAMA, num_gpus=12, global_batch=48),
        ("12 GPUs do not fill 2 nodes of 8",),
    ),
}  # fmt: skip


def canonical(model: ModelSpec) -> dict[str, Any]:
    """A model's architecture as Megatron's flags carry it.

    Megatron does not carry the catalogue's bookkeeping (family, source), spells MHA as "no
    GQA flag" and a natural head_dim as "no --kv-channels", and knows only the total width
    of the shared experts.
    """
    data = model.model_dump(exclude={"name", "family", "source"})
    data["num_kv_heads"] = None if model.mla else model.kv_heads
    data["head_dim"] = None if model.mla else model.kv_channels
    if model.moe is not None:
        total = model.moe.num_shared_experts * model.moe.shared_ffn_hidden_size
        data["moe"].update(shared_total=total)
        for key in ("num_shared_experts", "shared_expert_ffn_hidden_size"):
            data["moe"].pop(key)
    return data


def megatron_equivalent(layout: ParallelConfig) -> ParallelConfig:
    """The layout as Megatron runs it: defaults filled where the plan left them open."""
    update: dict[str, Any] = {}
    if layout.recompute == "full":
        update["recompute_method"] = layout.recompute_method or "uniform"
        update["recompute_num_layers"] = layout.recompute_num_layers or 1
    if layout.zero_stage == 1:
        update.update(zero_stage=0, distributed_optimizer=True)
    if layout.tp > 1 and layout.ep > 1:
        update["sequence_parallel"] = True
    return layout.model_copy(update=update)


def _megatron_read_back(files: Files, plan: EmitInput) -> tuple[Any, Any]:
    """The arguments file parsed back: the layout as Megatron runs it, and the model."""
    args = [token for line in files[ARGS_FILE].splitlines() for token in shlex.split(line)]
    fields, layout = parse_megatron_arguments(args, num_gpus=plan.num_gpus)
    positions = max(plan.model.max_position_embeddings, plan.seq_len)
    model = plan.model.model_copy(update={"max_position_embeddings": positions})
    read = (layout, canonical(ModelSpec(name=model.name, **fields)))
    return read, (megatron_equivalent(plan.layout), canonical(model))


CONTRACT = Contract(
    emitter="megatron",
    golden_folder=golden_folder("megatron"),
    golden_cases=(
        "llama-3.1-70b-64xh100",
        "mixtral-8x7b-16xh100",
        "llama-3.1-8b-dist-opt-full",
        "deepseek-v3-256xh100",
        "llama-3.1-8b-memplan-offload",
        "llama-3.1-8b-memplan-block",
    ),
    plans=MEGATRON_CASES,
    read_back=_megatron_read_back,
    refusal="cannot emit Megatron-LM arguments: ",
    refusals=MEGATRON_REFUSALS,
)
