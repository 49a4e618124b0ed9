"""DeepSpeed emitter: a plan to ``ds_config.json``, ``launch_deepspeed.sh`` and a README.

What DeepSpeed's config JSON carries (read in the DeepSpeed 0.19.6 source, under
``deepspeed/runtime/``; checked against 0.19.8's ``DeepSpeedConfig`` in the tests):

  dp                  implicit: ``train_batch_size = micro x accumulation x dp``
                      (``DeepSpeedConfig._batch_assertion``, ``config.py``)
  mbs                 ``train_micro_batch_size_per_gpu``
  accumulation        ``gradient_accumulation_steps`` (= pipeline micro-batches when pp > 1)
  zero_stage          ``zero_optimization.stage`` with the bucket keys at the source
                      defaults (``zero/config.py``; where the documentation shows other
                      values, the source is what runs)
  offload fraction    ``zero_optimization.offload_optimizer.ratio`` (< 1 only with stage 3)
  recompute full      ``activation_checkpointing`` (``activation_checkpointing/config.py``);
                      with pp > 1 also ``pipeline.activation_checkpoint_interval``
  cp (a2a)            ``sequence_parallel_size``: Ulysses / ALST
                      (``sequence_parallel/ulysses_sp.py``)
  pp                  ``pipeline`` (the model must be a ``PipelineModule`` with pp stages)

What it cannot carry is refused with ``EmitError`` naming each reason; the layout's
refusals are DeepSpeed's profile and rules (``planner.frameworks.refusals``), the
declaration the search reads: tensor and expert parallelism (model-code libraries),
Megatron's distributed optimizer, interleaved pipeline stages, pipeline with ZeRO-2/3,
ring-attention context parallelism, fp8, and uneven pipeline stages. Megatron-only
performance switches (selective recompute, ``overlap_param_gather``) have no DeepSpeed
key; the README says so rather than refusing.

The module is past 400 lines: about a third is the text of the launch script and README,
kept beside the config keys they explain.
"""

from __future__ import annotations

import json
from typing import Any

from planner.cost.reserve import (
    DEEPSPEED_PREFETCH_BUCKET_ELEMENTS,
    DEEPSPEED_REDUCE_BUCKET_ELEMENTS,
)
from planner.emit._lengths_note import comment_lines, lengths_note
from planner.emit.base import (
    EmitError,
    EmitInput,
    EmittedFiles,
    activation_lines,
    allocator_lines,
    autopar_version,
    checked_plan,
    prediction_comment_lines,
    profile_refusals,
    register,
)
from planner.frameworks import get_profile

CONFIG_FILE = "ds_config.json"
LAUNCH_FILE = "launch_deepspeed.sh"
README_FILE = "README.md"

# deepspeed/runtime/zero/config.py (DeepSpeedZeroConfig field defaults)
ALLGATHER_BUCKET_ELEMENTS = 500_000_000
PARAM_PERSISTENCE_THRESHOLD = 100_000  # docs example shows 1e6; the source default is 1e5
MAX_LIVE_PARAMETERS = 1_000_000_000
# deepspeed/runtime/precision_config.py (fp16 block defaults)
FP16_BLOCK = {
    "enabled": True,
    "loss_scale": 0,  # 0 = dynamic loss scaling
    "initial_scale_power": 16,
    "loss_scale_window": 1000,
    "hysteresis": 2,
    "min_loss_scale": 1,
}
GRADIENT_CLIPPING = 1.0  # docs default
STEPS_PER_PRINT = 10  # our choice: a log line every 10 steps (0.19.8 defaults to none)
NO_HYBRID_CP = "DeepSpeed has no hybrid context parallel (one Ulysses degree for every sequence)"
DOCUMENT_MASKING = (
    "the training script must restart attention at every document boundary of a packed "
    "sample (e.g. flash-attention's varlen kernels with cu_seqlens, or per-document "
    "position_ids with a HuggingFace model on flash_attention_2)"
)

PROFILE = get_profile("deepspeed")


def _refusals(plan: EmitInput) -> list[str]:
    """Every reason the plan cannot be written as a DeepSpeed config (empty: it can): the
    layout's, said once for the search and the emitters (``planner.frameworks.refusals``),
    and the launcher's."""
    return profile_refusals(PROFILE, plan) + _activation_refusals(plan) + _size_refusals(plan)


def _activation_refusals(plan: EmitInput) -> list[str]:
    """What ``autopar memplan --budget-gib`` chose that DeepSpeed cannot write."""
    memory = plan.activation_memory
    if memory is not None and (memory.offload_layers or memory.every_nth_layer is not None):
        return [
            "activation offload or every k-th layer recomputed: DeepSpeed checkpoints every "
            "layer or none (its cpu_checkpointing moves only the checkpointed layer inputs)"
        ]
    return []


def _size_refusals(plan: EmitInput) -> list[str]:
    """World size and batch arithmetic are ``checked_plan``'s; what is left is the launcher's."""
    if plan.nodes > 1 and plan.num_gpus % plan.gpus_per_node != 0:
        return [
            f"{plan.num_gpus} GPUs over {plan.nodes} nodes of {plan.gpus_per_node}: the "
            "deepspeed launcher starts the same --num_gpus on every node"
        ]
    return []


def deepspeed_config(plan: EmitInput) -> dict[str, Any]:
    """The ``ds_config.json`` contents for ``plan``; ``EmitError`` if it cannot be expressed."""
    plan = checked_plan(plan)
    problems = _refusals(plan)
    if problems:
        raise EmitError("deepspeed cannot express this plan: " + "; ".join(problems))
    layout = plan.layout
    micro, accumulation, dp = layout.mbs, plan.grad_accumulation, plan.dp
    ds_json: dict[str, Any] = {
        "train_batch_size": micro * accumulation * dp,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": GRADIENT_CLIPPING,
        "steps_per_print": STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
        "zero_optimization": _zero_block(plan),
    }
    # DeepSpeedConfig._batch_assertion, with dp as its "world size"
    assert ds_json["train_batch_size"] == plan.global_batch, "batch identity"
    if plan.precision == "bf16":
        ds_json["bf16"] = {"enabled": True}
    elif plan.precision == "fp16":
        ds_json["fp16"] = dict(FP16_BLOCK)
    if layout.recompute == "full":
        ds_json["activation_checkpointing"] = {
            "partition_activations": False,
            "contiguous_memory_optimization": False,
            "cpu_checkpointing": False,
        }
    if layout.pp > 1:
        ds_json["pipeline"] = {
            "stages": layout.pp,
            "partition": "uniform",
            "activation_checkpoint_interval": (
                (layout.recompute_num_layers or 1) if layout.recompute == "full" else 0
            ),
        }
    if layout.cp > 1:
        ds_json["sequence_parallel_size"] = layout.cp
    return ds_json


def _zero_block(plan: EmitInput) -> dict[str, Any]:
    layout = plan.layout
    stage = layout.zero_stage
    block: dict[str, Any] = {
        "stage": stage,
        # the source's default is stage == 3; the plan's overlap_grad_reduce turns it on below
        "overlap_comm": stage == 3 or layout.overlap_grad_reduce,
        "contiguous_gradients": True,
        "reduce_bucket_size": DEEPSPEED_REDUCE_BUCKET_ELEMENTS,
        "allgather_bucket_size": ALLGATHER_BUCKET_ELEMENTS,
    }
    if stage == 3:
        block["stage3_prefetch_bucket_size"] = DEEPSPEED_PREFETCH_BUCKET_ELEMENTS
        block["stage3_param_persistence_threshold"] = PARAM_PERSISTENCE_THRESHOLD
        block["stage3_max_live_parameters"] = MAX_LIVE_PARAMETERS
    if layout.offload_optimizer_fraction > 0:
        block["offload_optimizer"] = {
            "device": "cpu",
            "pin_memory": True,
            "ratio": layout.offload_optimizer_fraction,
        }
    return block


def parse_deepspeed_config(ds_json: dict[str, Any], *, world_size: int) -> dict[str, Any]:
    """The layout knobs a ``ds_config.json`` carries, read back for ``world_size`` GPUs.

    Returns ``dp, cp, pp, mbs, zero_stage, offload_optimizer_fraction, recompute``
    (ParallelConfig's names; ``cp_comm_type`` too when cp > 1) plus ``grad_accumulation``,
    ``global_batch`` and ``precision``. Any two of the three batch keys suffice, as in
    DeepSpeed; the third is derived and the identity checked (``EmitError`` if it fails).
    """
    cp = int(ds_json.get("sequence_parallel_size", 1))
    stages = ds_json.get("pipeline", {}).get("stages", 1)
    pp = stages if isinstance(stages, int) else 1
    if world_size % (cp * pp) != 0:
        raise EmitError(
            f"ds_config: world size {world_size} is not divisible by sequence_parallel_size "
            f"x pipeline stages = {cp} x {pp}"
        )
    dp = world_size // (cp * pp)
    train, micro, accumulation = _batch_keys(ds_json, dp=dp)
    zero = ds_json.get("zero_optimization", {})
    offload = zero.get("offload_optimizer") or {}
    offloaded = offload.get("device", "none") not in ("none", None)
    recompute = "full" if "activation_checkpointing" in ds_json else "none"
    if ds_json.get("pipeline", {}).get("activation_checkpoint_interval", 0) > 0:
        recompute = "full"
    knobs: dict[str, Any] = {
        "dp": dp,
        "cp": cp,
        "pp": pp,
        "mbs": micro,
        "grad_accumulation": accumulation,
        "global_batch": train,
        "zero_stage": int(zero.get("stage", 0)),
        "offload_optimizer_fraction": float(offload.get("ratio", 1.0)) if offloaded else 0.0,
        "recompute": recompute,
        "precision": _precision_of(ds_json),
    }
    if cp > 1:
        knobs["cp_comm_type"] = "a2a"
    return knobs


def _batch_keys(ds_json: dict[str, Any], *, dp: int) -> tuple[int, int, int]:
    """train, micro, accumulation, the missing one derived as DeepSpeed does (floor division,
    ``DeepSpeedConfig._set_batch_related_parameters``), then the identity checked."""
    train = ds_json.get("train_batch_size")
    micro = ds_json.get("train_micro_batch_size_per_gpu")
    accumulation = ds_json.get("gradient_accumulation_steps")
    if micro is None and train is not None:
        micro = train // (dp * (accumulation or 1))
    if accumulation is None:
        accumulation = 1 if micro is None or train is None else train // (micro * dp)
    if train is None and micro is not None:
        train = micro * accumulation * dp
    if not (train and micro and accumulation) or train != micro * accumulation * dp:
        raise EmitError(
            f"ds_config: train_batch_size ({train}) must equal train_micro_batch_size_per_gpu "
            f"x gradient_accumulation_steps x dp = {micro} x {accumulation} x {dp}"
        )
    return train, micro, accumulation


def _precision_of(ds_json: dict[str, Any]) -> str:
    if ds_json.get("bf16", {}).get("enabled"):
        return "bf16"
    if ds_json.get("fp16", {}).get("enabled"):
        return "fp16"
    return "fp32"


def _summary(plan: EmitInput) -> str:
    layout = plan.layout
    parts = [f"dp {plan.dp}"]
    parts += [
        f"{axis} {degree}" for axis, degree in (("pp", layout.pp), ("cp", layout.cp)) if degree > 1
    ]
    parts += [
        f"ZeRO-{layout.zero_stage}",
        f"micro-batch {layout.mbs}",
        f"gradient accumulation {plan.grad_accumulation}",
        f"global batch {plan.global_batch} x {plan.seq_len} tokens",
        plan.precision,
    ]
    return ", ".join(parts)


def _nodes_text(nodes: int) -> str:
    return "1 node" if nodes == 1 else f"{nodes} nodes"


def _launcher(plan: EmitInput) -> str:
    nodes, gpus = plan.nodes, plan.nproc_per_node
    master_addr = (
        'MASTER_ADDR="${MASTER_ADDR:?set MASTER_ADDR to the address of the first node}"'
        if nodes > 1
        else 'MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"'
    )
    predictions = prediction_comment_lines(plan)
    lines = [
        "#!/usr/bin/env bash",
        f"# DeepSpeed launch for {plan.model.name} on {plan.num_gpus} GPUs "
        f"({_nodes_text(nodes)} x {gpus}), written by autopar {autopar_version()}.",
        f"# Layout: {_summary(plan)}.",
        "# Predicted by autopar (estimates, not measurements):",
        *predictions,
        *comment_lines(_lengths_note(plan)),
        "#",
        "# Environment:",
        "#   TRAIN_SCRIPT  your training script (required): it calls deepspeed.initialize() and",
        "#                 accepts --deepspeed --deepspeed_config PATH; the arguments given to",
        "#                 this script are passed on to it",
        f"#   HOSTFILE      DeepSpeed hostfile, one 'host slots={gpus}' line per node "
        "(default /job/hostfile)",
        "#   MASTER_ADDR   address of the first node"
        + (" (required)" if nodes > 1 else " (default 127.0.0.1)"),
        "#   MASTER_PORT   rendezvous port (default 29500)",
        "set -euo pipefail",
        'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        'TRAIN_SCRIPT="${TRAIN_SCRIPT:?set TRAIN_SCRIPT to your training script}"',
        'HOSTFILE="${HOSTFILE:-/job/hostfile}"',
        master_addr,
        'MASTER_PORT="${MASTER_PORT:-29500}"',
        "",
        *activation_lines(plan),
        *allocator_lines(
            plan,
            note=" (on other nodes the deepspeed launcher sets it only when listed in their "
            ".deepspeed_env)"
            if nodes > 1
            else "",
        ),
        "exec deepspeed \\",
        '  --hostfile "$HOSTFILE" \\',
        f"  --num_nodes {nodes} \\",
        f"  --num_gpus {gpus} \\",
        '  --master_addr "$MASTER_ADDR" \\',
        '  --master_port "$MASTER_PORT" \\',
        '  "$TRAIN_SCRIPT" "$@" \\',
        "  --deepspeed \\",
        '  --deepspeed_config "$HERE/ds_config.json"',
    ]
    return "\n".join(lines) + "\n"


def _lengths_note(plan: EmitInput) -> str | None:
    return lengths_note(plan, why=NO_HYBRID_CP, masking=DOCUMENT_MASKING)


def _notes(plan: EmitInput) -> list[str]:
    """What the user's model code must do, and what the config could not say."""
    layout, notes = plan.layout, []
    lengths = _lengths_note(plan)
    if lengths is not None:
        notes.append(lengths)
    if layout.recompute == "full":
        which = (
            f"{layout.recompute_num_layers} layer(s) per checkpoint ({layout.recompute_method})"
            if layout.recompute_num_layers
            else "every transformer layer"
        )
        notes.append(
            "Full recomputation: DeepSpeed's `activation_checkpointing` block only configures "
            "`deepspeed.checkpointing`; activation checkpointing is applied by the model "
            "code's checkpoint calls (`deepspeed.checkpointing.checkpoint(layer, ...)`, or "
            f"`model.gradient_checkpointing_enable()` for HF models). The plan checkpoints {which}."
        )
    if layout.recompute == "selective":
        notes.append(
            "Selective recomputation (attention core only) has no DeepSpeed key: a flash "
            "attention kernel already recomputes it in its backward."
        )
    if layout.pp > 1:
        notes.append(
            f"Pipeline: the model must be a `deepspeed.pipe.PipelineModule(layers=..., "
            f"num_stages={layout.pp}, partition_method='uniform')` trained with "
            "`engine.train_batch()`; `gradient_accumulation_steps` is the micro-batch count."
        )
    if layout.cp > 1:
        notes.append(
            f"Ulysses sequence parallelism over {layout.cp} GPUs: call "
            "`UlyssesSPAttentionHF.register_with_transformers(..., "
            f"sequence_parallel_size={layout.cp}, micro_batch_size={layout.mbs}, "
            f"seq_length={plan.seq_len})`, pass the returned mpu to `deepspeed.initialize`, "
            "and wrap the data loader in `UlyssesSPDataLoaderAdapter`."
        )
    if layout.overlap_param_gather and layout.zero_stage < 3:
        notes.append(
            "overlap_param_gather has no DeepSpeed key below ZeRO-3: the parameter all-gather "
            "after the optimizer step is not overlapped, so the step may be slower than predicted."
        )
    if plan.framework != "deepspeed":
        notes.append(
            f"The predictions were made for {plan.framework}, whose memory layout and buffers "
            "differ from DeepSpeed's: re-run `autopar estimate --framework deepspeed` for "
            "DeepSpeed's numbers."
        )
    return notes


def _readme(plan: EmitInput, ds_json: dict[str, Any]) -> str:
    zero = ds_json["zero_optimization"]
    lines = [
        f"# DeepSpeed run for {plan.model.name} on {plan.num_gpus} GPUs",
        "",
        f"Written by autopar {autopar_version()}. Layout: {_summary(plan)}.",
        "",
        "## Files",
        "",
        f"- `{CONFIG_FILE}`: the DeepSpeed config. `train_batch_size` "
        f"({ds_json['train_batch_size']}) = `train_micro_batch_size_per_gpu` "
        f"({ds_json['train_micro_batch_size_per_gpu']}) x `gradient_accumulation_steps` "
        f"({ds_json['gradient_accumulation_steps']}) x data-parallel size ({plan.dp}); "
        f"ZeRO stage {zero['stage']} with the bucket sizes at DeepSpeed's source defaults.",
        f"- `{LAUNCH_FILE}`: runs the `deepspeed` launcher on {_nodes_text(plan.nodes)} x "
        f"{plan.nproc_per_node} GPUs. Set `TRAIN_SCRIPT` (and `HOSTFILE`, `MASTER_ADDR`, "
        "`MASTER_PORT` as needed); extra arguments go to the training script.",
        f"- `{README_FILE}`: this file.",
        "",
        "The training script must call `deepspeed.initialize(args=..., model=..., "
        "model_parameters=...)` and accept `--deepspeed --deepspeed_config PATH` "
        "(`deepspeed.add_config_arguments(parser)` adds them).",
    ]
    notes = _notes(plan)
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


class DeepSpeedEmitter:
    """``ds_config.json``, ``launch_deepspeed.sh`` and ``README.md`` for a DeepSpeed run."""

    name = "deepspeed"

    def emit(self, plan: EmitInput) -> EmittedFiles:
        plan = checked_plan(plan)
        ds_json = deepspeed_config(plan)
        return EmittedFiles(
            files=(
                (CONFIG_FILE, json.dumps(ds_json, sort_keys=True, indent=2) + "\n"),
                (LAUNCH_FILE, _launcher(plan)),
                (README_FILE, _readme(plan, ds_json)),
            )
        )


register(DeepSpeedEmitter())
