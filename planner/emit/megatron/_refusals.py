"""What Megatron-LM cannot express: every reason a plan is refused, named."""

from __future__ import annotations

from planner.emit.base import EmitError, EmitInput, checked_plan, profile_refusals
from planner.frameworks import get_profile
from planner.specs.model import ModelSpec

PROFILE = get_profile("megatron")


def plan_refusals(plan: EmitInput) -> list[str]:
    """Every reason a consistent plan (see ``checked_plan``) cannot be written for Megatron:
    the layout's (``planner.frameworks.refusals``, which the search applies too), then what
    no layout changes: the framework it was estimated for, the node count, the model."""
    layout = plan.layout
    reasons = profile_refusals(PROFILE, plan)
    if plan.framework != "megatron" and layout.zero_stage < 2:
        reasons.append(
            f"the plan was estimated for framework '{plan.framework}': re-estimate it with "
            "--framework megatron, or emit --format " + plan.framework
        )
    reasons.extend(_activation_refusals(plan))
    if plan.nproc_per_node * plan.nodes != plan.num_gpus:
        reasons.append(
            f"{plan.num_gpus} GPUs do not fill {plan.nodes} nodes of {plan.gpus_per_node}: "
            "torchrun starts the same number of processes on every node"
        )
    return reasons + _model_refusals(plan.model)


def _activation_refusals(plan: EmitInput) -> list[str]:
    """megatron-core 0.16.1's TransformerConfig.__post_init__ on activation offload."""
    memory, layout = plan.activation_memory, plan.layout
    if memory is None:
        return []
    reasons = []
    if memory.offload_layers:
        if layout.pp > 1:
            reasons.append(
                "activation offload with pp > 1: megatron-core has no CPU offloading with "
                "pipeline parallelism"
            )
        if layout.recompute != "none":
            reasons.append(
                "activation offload with recomputation: megatron-core runs one or the other"
            )
        if memory.offload_layers >= plan.model.num_layers:
            reasons.append(
                f"activation offload of {memory.offload_layers} layers: megatron-core offloads "
                f"fewer than num_layers ({plan.model.num_layers})"
            )
    if memory.every_nth_layer is not None:
        reasons.append("every k-th layer recomputed: Megatron recomputes the first N (block)")
    return reasons


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


def checked(plan: EmitInput) -> EmitInput:
    """The plan re-checked (``dp`` resolved), or ``EmitError`` with every reason it cannot
    be emitted."""
    plan = checked_plan(plan)
    reasons = plan_refusals(plan)
    if reasons:
        raise EmitError("cannot emit Megatron-LM arguments: " + "; ".join(reasons))
    return plan
