"""A plan to torchtitan settings (section -> key -> value), or every reason it cannot be one."""

from __future__ import annotations

from planner.emit.base import (
    EmitError,
    EmitInput,
    checked_plan,
)
from planner.emit.torchtitan._fields import (
    COMPILE_COMPONENTS,
    DATASET,
    DEFAULT_STEPS,
    TORCHTITAN_MODELS,
    Settings,
    TorchtitanModel,
)
from planner.specs.layout import stage_layer_counts_or_even
from planner.specs.model import ModelSpec


def _model_entry(model: ModelSpec) -> tuple[TorchtitanModel | None, str | None]:
    entry = TORCHTITAN_MODELS.get(model.name)
    if entry is None:
        supported = ", ".join(
            f"{name} ({e.module} {e.flavor})" for name, e in TORCHTITAN_MODELS.items()
        )
        return None, (
            f"torchtitan has no model definition for {model.family}/{model.name}; "
            f"supported: {supported}"
        )
    if (model.num_layers, model.hidden_size) != (entry.num_layers, entry.hidden_size):
        return None, (
            f"model {model.name} has {model.num_layers} layers of width {model.hidden_size} but "
            f"torchtitan's {entry.module} {entry.flavor} has {entry.num_layers} of width "
            f"{entry.hidden_size}"
        )
    return entry, None


def _refusals(plan: EmitInput) -> list[str]:
    """Every reason the plan cannot be written for any torchtitan version (empty: it can)."""
    layout, problems = plan.layout, []
    problems.extend(problem for problem in [_model_entry(plan.model)[1]] if problem)
    if layout.distributed_optimizer:
        problems.append(
            "distributed_optimizer is Megatron's; torchtitan shards optimizer states with "
            "FSDP: use FSDP (zero 3)"
        )
    elif layout.zero_stage in (1, 2):
        problems.append(
            f"ZeRO-{layout.zero_stage} has no torchtitan setting (it shards everything with "
            "FSDP or nothing): use FSDP (zero 3), or zero 0 for DDP"
        )
    if plan.precision == "fp16":
        problems.append("precision fp16: torchtitan trains in bf16 or fp32 (mixed_precision_param)")
    if layout.offload_optimizer_fraction > 0:
        problems.append(
            "optimizer offload: torchtitan offloads parameters, gradients and optimizer states "
            "together (training.enable_cpu_offload), never the optimizer alone or a fraction"
        )
    if layout.cp > 1 and layout.cp_comm_type not in ("p2p", "all_gather"):
        problems.append(
            f"cp_comm_type {layout.cp_comm_type}: torchtitan's context parallelism exchanges "
            "K/V (ring or all-gather); it has no Ulysses all-to-all: use p2p or all_gather"
        )
    if layout.cp > 1 and layout.zero_stage == 0:
        problems.append(
            "zero 0 with cp > 1: torchtitan always shards parameters over the CP ranks "
            "(FSDP over dp_shard x cp): use FSDP (zero 3)"
        )
    if plan.model.moe is not None and layout.ep == 1 and layout.expert_tp != layout.tp:
        problems.append(
            f"etp {layout.expert_tp} with ep 1: without expert parallelism torchtitan shards "
            f"the experts over the TP ranks (etp = tp = {layout.tp})"
        )
    if layout.recompute == "full" and layout.recompute_num_layers is not None:
        per_chunk = max(stage_layer_counts_or_even(plan.model, layout)) // (layout.vpp or 1)
        if layout.recompute_method == "uniform" and layout.recompute_num_layers > 1:
            problems.append(
                f"recompute uniform with {layout.recompute_num_layers} layers per checkpoint: "
                "torchtitan checkpoints each transformer block on its own"
            )
        if layout.recompute_method == "block" and layout.recompute_num_layers < per_chunk:
            problems.append(
                f"recompute block with {layout.recompute_num_layers} of {per_chunk} layers per "
                "stage: torchtitan recomputes every block or none (no first-N-layers setting)"
            )
    if plan.activation_memory is not None and plan.activation_memory.offload_layers:
        problems.append("activation offload: torchtitan has no activation offload setting")
    problems.extend(_stage_split_problems(plan))
    return problems


def _activation_checkpoint(plan: EmitInput) -> dict[str, object]:
    """``[activation_checkpoint]``: the layout's recompute mode; every k-th block (layer-wise
    selective, ``selective_ac_option = "k"``) where ``autopar memplan --budget-gib`` chose it."""
    memory, recompute = plan.activation_memory, plan.layout.recompute
    if memory is not None and memory.every_nth_layer is not None:
        return {"mode": "selective", "selective_ac_option": str(memory.every_nth_layer)}
    return {"mode": recompute} | ({"selective_ac_option": "op"} if recompute == "selective" else {})


def _stage_split_problems(plan: EmitInput) -> list[str]:
    layout = plan.layout
    if layout.first_stage_layers is None and layout.last_stage_layers is None:
        return []
    if layout.interleaved:
        return ["uneven first/last stage layers with vpp > 1: not emitted for torchtitan"]
    less = _less_layers(plan)
    if less is None:
        return [
            f"stage layers {stage_layer_counts_or_even(plan.model, layout)}: torchtitan's split "
            "(pipeline_parallel_first/last_stage_less_layers) gives the first and last stages "
            "at most as many layers as the others; write module_fqns_per_model_part by hand"
        ]
    return []


def _less_layers(plan: EmitInput) -> tuple[int, int, int] | None:
    """(layers_per_stage, first_less, last_less) reproducing the plan's split, or None."""
    counts = stage_layer_counts_or_even(plan.model, plan.layout)
    per_stage = max(counts[1:-1]) if len(counts) > 2 else max(counts)
    if any(count != per_stage for count in counts[1:-1]) or max(counts) > per_stage:
        return None
    return per_stage, per_stage - counts[0], per_stage - counts[-1]


def torchtitan_settings(plan: EmitInput) -> Settings:
    """Section -> key -> value for the plan, in torchtitan's ``--section.key`` names.

    Raises ``EmitError`` naming every reason the plan cannot be written for torchtitan.
    """
    plan = checked_plan(plan)
    problems = _refusals(plan)
    if problems:
        raise EmitError("torchtitan cannot express this plan: " + "; ".join(problems))
    entry, _ = _model_entry(plan.model)
    assert entry is not None
    layout, dp, fp8 = plan.layout, plan.dp, plan.precision == "fp8"
    moe = plan.model.moe is not None
    model: dict[str, object] = {
        "name": entry.module,
        "flavor": entry.flavor,
        "hf_assets_path": entry.hf_assets_path,
    }
    training: dict[str, object] = {
        "local_batch_size": plan.global_batch // dp if layout.pp > 1 else layout.mbs,
        "global_batch_size": plan.global_batch,
        "seq_len": plan.seq_len,
        "steps": DEFAULT_STEPS,
        "dataset": DATASET,
        "mixed_precision_param": "float32" if plan.precision == "fp32" else "bfloat16",
    }
    settings: Settings = {
        "model": model,
        "training": training,
        "parallelism": _parallelism(plan),
        "activation_checkpoint": _activation_checkpoint(plan),
        "compile": {"enable": fp8 or layout.tp_comm_overlap}
        | ({"components": list(COMPILE_COMPONENTS)} if fp8 or layout.tp_comm_overlap else {}),
    }
    if fp8:
        model["converters"] = ["quantize.linear.float8"] + (
            ["quantize.grouped_mm.float8"] if moe else []
        )
        settings["quantize.linear.float8"] = {
            "recipe_name": "rowwise",
            "filter_fqns": ["output", "router.gate"] if moe else ["output"],
        }
        if moe:
            settings["quantize.grouped_mm.float8"] = {"fqns": ["experts"]}
    return settings


def _parallelism(plan: EmitInput) -> dict[str, object]:
    layout, dp = plan.layout, plan.dp
    fsdp = layout.zero_stage == 3
    section: dict[str, object] = {
        "data_parallel_replicate_degree": 1 if fsdp else dp,
        "data_parallel_shard_degree": dp if fsdp else 1,
        "tensor_parallel_degree": layout.tp,
        "context_parallel_degree": layout.cp,
        "pipeline_parallel_degree": layout.pp,
        "expert_parallel_degree": layout.ep,
    }
    if layout.tp > 1 and not layout.sequence_parallel:
        section["enable_sequence_parallel"] = False
    if layout.tp_comm_overlap:
        section["enable_async_tensor_parallel"] = True
    if layout.cp > 1:
        section["context_parallel_rotate_method"] = (
            "alltoall" if layout.cp_comm_type == "p2p" else "allgather"
        )
    if layout.ep > 1:
        section["expert_tensor_parallel_degree"] = layout.expert_tp
    if layout.pp > 1:
        less = _less_layers(plan)
        assert less is not None
        per_stage, first_less, last_less = less
        section |= {
            "pipeline_parallel_schedule": "Interleaved1F1B" if layout.interleaved else "1F1B",
            "pipeline_parallel_microbatch_size": layout.mbs,
            "pipeline_parallel_layers_per_stage": per_stage // (layout.vpp or 1),
            "pipeline_parallel_first_stage_less_layers": first_less,
            "pipeline_parallel_last_stage_less_layers": last_less,
        }
    return section
