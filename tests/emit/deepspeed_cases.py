"""DeepSpeed: the plans it is tested on, what it refuses, and its config read back."""

from __future__ import annotations

import json
from typing import Any

from emitter_cases import (
    Build,
    Contract,
    Files,
    golden_folder,
    load_plan,
    with_model,
)

from planner.emit.base import EmitInput
from planner.emit.deepspeed import CONFIG_FILE, parse_deepspeed_config

DEEPSPEED_BASE = "llama-3.1-8b-8xh100-zero2"  # 32 layers, 32 heads, 8 KV heads; 8 GPUs, 64 seqs
DEEPSPEED_VARIANTS: dict[str, dict[str, Any]] = {
    "pp2-zero1-full": dict(pp=2, dp=4, mbs=2, zero_stage=1, recompute="full"),
    "pp2-zero0-uniform2-fp16": dict(
        pp=2, dp=4, zero_stage=0, recompute="full", recompute_method="uniform",
        recompute_num_layers=2, precision="fp16",
    ),
    "ulysses4-zero3-offload-half": dict(
        cp=4, dp=2, cp_comm_type="a2a", zero_stage=3, offload_optimizer_fraction=0.5
    ),
    "ulysses2-zero1-overlap": dict(
        cp=2, dp=4, cp_comm_type="a2a", zero_stage=1, overlap_grad_reduce=True
    ),
    "zero1-offload-fp32": dict(zero_stage=1, offload_optimizer_fraction=1.0, precision="fp32"),
    "zero0-selective": dict(zero_stage=0, recompute="selective"),
}  # fmt: skip


def _deepspeed(**fields: Any) -> Build:
    return lambda: load_plan(DEEPSPEED_BASE, **fields)


DEEPSPEED_CASES: dict[str, Build] = {
    "llama-3.1-8b-8xh100-zero2": lambda: load_plan("llama-3.1-8b-8xh100-zero2"),
    "llama-3.1-8b-8xh100-fsdp": lambda: load_plan("llama-3.1-8b-8xh100-fsdp"),
    **{name: _deepspeed(**fields) for name, fields in DEEPSPEED_VARIANTS.items()},
}
DEEPSPEED_REFUSALS: dict[str, tuple[Build, tuple[str, ...]]] = {
    "pipeline with ZeRO-2": (_deepspeed(pp=2, dp=4, zero_stage=2), ("ZeRO stage < 2",)),
    "pipeline with ZeRO-3": (_deepspeed(pp=2, dp=4, zero_stage=3), ("ZeRO stage < 2",)),
    "ring attention": (_deepspeed(cp=2, dp=4, cp_comm_type="p2p"), ("ring attention",)),
    "all-gather CP": (_deepspeed(cp=2, dp=4, cp_comm_type="all_gather"), ("ring attention",)),
    "fp8": (_deepspeed(precision="fp8"), ("no fp8 training switch",)),
    "partial offload below stage 3": (
        _deepspeed(zero_stage=2, offload_optimizer_fraction=0.5),
        ("only supported with ZeRO stage 3",),
    ),
    "offload without ZeRO": (
        _deepspeed(zero_stage=0, offload_optimizer_fraction=1.0), ("needs ZeRO stage 1, 2 or 3",)
    ),
    "distributed optimizer": (
        _deepspeed(zero_stage=0, distributed_optimizer=True), ("Megatron-only: use zero_stage 1",)
    ),
    "interleaved pipeline": (_deepspeed(pp=2, dp=4, zero_stage=1, vpp=2), ("interleaved",)),
    "uneven stages": (
        _deepspeed(pp=2, dp=4, zero_stage=1, first_stage_layers=15, last_stage_layers=17),
        ("per-stage layer count",),
    ),
    "Ulysses with pipeline": (
        _deepspeed(pp=2, cp=2, dp=2, zero_stage=1, cp_comm_type="a2a"),
        ("pipe and data axes only",),
    ),
    "block recompute in a pipeline": (
        _deepspeed(pp=2, dp=4, zero_stage=1, recompute="full", recompute_method="block",
                   recompute_num_layers=2),
        ("never only the first N",),
    ),
    "tensor-parallel fixture, every reason": (
        lambda: load_plan("llama-3.1-70b-64xh100"),
        ("tp = 8: DeepSpeed's config has no tensor parallelism", "Megatron-DeepSpeed",
         "emit megatron", "distributed_optimizer is Megatron-only", "zero_stage 1", "vpp = 2",
         "interleaved"),
    ),
    "expert-parallel fixture": (
        lambda: load_plan("mixtral-8x7b-16xh100"), ("ep = 8: expert parallelism", "tp = 2")
    ),
    "Ulysses KV heads that do not divide": (
        lambda: with_model(
            load_plan(DEEPSPEED_BASE, cp=4, dp=2, cp_comm_type="a2a"),
            num_attention_heads=24, num_kv_heads=6,
        ),
        ("KV heads (6) and cp (4)",),
    ),
}  # fmt: skip


def _deepspeed_read_back(files: Files, plan: EmitInput) -> tuple[Any, Any]:
    layout = plan.layout
    read = parse_deepspeed_config(json.loads(files[CONFIG_FILE]), world_size=plan.num_gpus)
    expected = {
        "dp": layout.dp,
        "cp": layout.cp,
        "pp": layout.pp,
        "mbs": layout.mbs,
        "grad_accumulation": plan.grad_accumulation,
        "global_batch": plan.global_batch,
        "zero_stage": layout.zero_stage,
        "offload_optimizer_fraction": layout.offload_optimizer_fraction,
        "recompute": "full" if layout.recompute == "full" else "none",
        "precision": plan.precision,
    }
    if layout.cp > 1:
        expected["cp_comm_type"] = "a2a"
    return read, expected


CONTRACT = Contract(
    emitter="deepspeed",
    golden_folder=golden_folder("deepspeed"),
    golden_cases=("llama-3.1-8b-8xh100-zero2", "llama-3.1-8b-8xh100-fsdp"),
    plans=DEEPSPEED_CASES,
    read_back=_deepspeed_read_back,
    refusal="deepspeed cannot express this plan: ",
    refusals=DEEPSPEED_REFUSALS,
)
