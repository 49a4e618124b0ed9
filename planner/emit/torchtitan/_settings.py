"""A plan to torchtitan settings (section -> key -> value), or every reason it cannot be one."""

from __future__ import annotations

from planner.emit.base import (
    EmitError,
    EmitInput,
    checked_plan,
    profile_refusals,
)
from planner.emit.torchtitan._fields import (
    COMPILE_COMPONENTS,
    DATASET,
    DEFAULT_STEPS,
    TORCHTITAN_MODELS,
    Settings,
    TorchtitanModel,
)
from planner.frameworks import get_profile
from planner.frameworks.refusals import torchtitan_less_layers
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


PROFILE = get_profile("torchtitan")


def _refusals(plan: EmitInput) -> list[str]:
    """Every reason the plan cannot be written for any torchtitan version (empty: it can):
    a model torchtitan does not define, and the layout's refusals
    (``planner.frameworks.refusals``, which the search applies too)."""
    problems = [problem for problem in [_model_entry(plan.model)[1]] if problem]
    if plan.activation_memory is not None and plan.activation_memory.offload_layers:
        problems.append("activation offload: torchtitan has no activation offload setting")
    return problems + profile_refusals(PROFILE, plan)


def _activation_checkpoint(plan: EmitInput) -> dict[str, object]:
    """``[activation_checkpoint]``: the layout's recompute mode; every k-th block (layer-wise
    selective, ``selective_ac_option = "k"``) where ``autopar memplan --budget-gib`` chose it."""
    memory, recompute = plan.activation_memory, plan.layout.recompute
    if memory is not None and memory.every_nth_layer is not None:
        return {"mode": "selective", "selective_ac_option": str(memory.every_nth_layer)}
    return {"mode": recompute} | ({"selective_ac_option": "op"} if recompute == "selective" else {})


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
        less = torchtitan_less_layers(plan.model, layout)
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
