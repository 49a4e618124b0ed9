"""``run_torchtitan.sh`` and the two emitters (0.3.0 recipe, v0.2.x TOML job file)."""

from __future__ import annotations

from planner.emit._lengths_note import comment_lines, lengths_note
from planner.emit.base import (
    EmitInput,
    EmittedFiles,
    activation_lines,
    autopar_version,
    checked_plan,
    prediction_comment_lines,
)
from planner.emit.torchtitan._fields import (
    CURRENT_VERSION,
    DATASET,
    DEFAULT_STEPS,
    LAUNCH_FILE,
    RECIPE_FILE,
    RECIPE_MODULE,
    TOML_FILE,
    TOML_VERSION,
    TORCHTITAN_MODELS,
    Version,
)
from planner.emit.torchtitan._recipe import recipe_function_name, render_recipe, summary
from planner.emit.torchtitan._rules import check
from planner.emit.torchtitan._settings import torchtitan_settings
from planner.emit.torchtitan._toml import render_toml

NO_PER_SEQUENCE_CP = (
    "torchtitan has no per-sequence context-parallel size (one CP degree for every sequence)"
)
DOCUMENT_MASKING = (
    "use a model flavor with attn_mask_type 'block_causal' (torchtitan v0.2.2 ships them for "
    "Llama 3 8B as '8B_flex', FlexAttention, which runs with context parallel, and "
    "'8B_varlen', varlen attention, which torchtitan refuses with context parallel)"
)


def _lengths_comment(plan: EmitInput) -> list[str]:
    return comment_lines(lengths_note(plan, why=NO_PER_SEQUENCE_CP, masking=DOCUMENT_MASKING))


def _launcher(plan: EmitInput, *, version: Version) -> str:
    nodes, gpus = plan.nodes, plan.nproc_per_node
    assets = TORCHTITAN_MODELS[plan.model.name].hf_assets_path
    if version == "current":
        target = f"torchtitan {CURRENT_VERSION}: recipe {RECIPE_FILE}"
        train_args = f"--module {RECIPE_MODULE} --config {recipe_function_name(plan)}"
        path_line = 'export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"'
        dry_run = f"PYTHONPATH=<this folder> python -m torchtitan.train {train_args}"
    else:
        target = f"torchtitan {TOML_VERSION} (TOML job files, v0.1.0-v0.2.2): {TOML_FILE}"
        train_args = f'--job.config_file "$HERE/{TOML_FILE}"'
        path_line = ""
        dry_run = f"python -m torchtitan.train --job.config_file <this folder>/{TOML_FILE}"
    predictions = prediction_comment_lines(plan)
    lines = [
        "#!/usr/bin/env bash",
        f"# torchtitan launch for {plan.model.name} on {plan.num_gpus} GPUs "
        f"({nodes} node{'s' if nodes > 1 else ''} x {gpus}), written by autopar "
        f"{autopar_version()}.",
        f"# Targets {target}.",
        f"# Layout: {summary(plan)}.",
        "# Predicted by autopar (estimates, not measurements):",
        *predictions,
        *(
            [
                f"# (predicted for {plan.framework}; `autopar estimate --framework torchtitan` "
                "gives torchtitan's numbers)"
            ]
            if plan.framework != "torchtitan"
            else []
        ),
        *_lengths_comment(plan),
        *(line for line in activation_lines(plan) if line),
        "#",
        "# Environment:",
        "#   TORCHTITAN_PATH  torchtitan checkout to run in (default: the current directory);",
        f"#                    the tokenizer is read from {assets} there",
        f"#   NNODES           number of nodes (default {nodes}); NNODES x {gpus} must be "
        f"{plan.num_gpus}",
        "#   NODE_RANK        this node's rank, 0 .. NNODES-1 (default 0)",
        "#   MASTER_ADDR      address of node 0"
        + (" (required)" if nodes > 1 else " (default 127.0.0.1)"),
        "#   MASTER_PORT      rendezvous port on node 0 (default 29500)",
        "#   LOG_RANK         local ranks whose output is shown (default 0)",
        "# Arguments are passed to torchtitan.train, e.g. --training.steps 5000 (written here:",
        f"# {DEFAULT_STEPS} steps on the {DATASET} dataset, as torchtitan's recipes; set yours).",
        "# A config check without training:",
        f"#   NGPU={plan.num_gpus} LOCAL_RANK=0 {dry_run} \\",
        "#     --comm.mode fake_backend --training.steps 1  (in TORCHTITAN_PATH, on one GPU)",
        "set -euo pipefail",
        'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        'TORCHTITAN_PATH="${TORCHTITAN_PATH:-$PWD}"',
        f'NNODES="${{NNODES:-{nodes}}}"',
        'NODE_RANK="${NODE_RANK:-0}"',
        'MASTER_ADDR="${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"'
        if nodes > 1
        else 'MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"',
        'MASTER_PORT="${MASTER_PORT:-29500}"',
        'LOG_RANK="${LOG_RANK:-0}"',
        f'if [ "$((NNODES * {gpus}))" -ne {plan.num_gpus} ]; then',
        f'  echo "this plan is for {plan.num_gpus} GPUs: NNODES x {gpus} must equal it" >&2',
        "  exit 1",
        "fi",
        'cd "$TORCHTITAN_PATH"',
        *([path_line] if path_line else []),
        "",
        *(
            [
                "# autopar memplan: with expandable segments the simulated caching allocator "
                f"reserves {plan.expandable_saving_gib:.2f} GiB less per GPU at the peak stage "
                "(set below, as torchtitan's own run_train.sh does for every run)."
            ]
            if plan.expandable_saving_gib is not None
            else []
        ),
        'PYTORCH_ALLOC_CONF="expandable_segments:True" exec torchrun \\',
        f'  --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node {gpus} \\',
        '  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \\',
        '  --local-ranks-filter "$LOG_RANK" --role rank --tee 3 \\',
        f'  -m torchtitan.train {train_args} "$@"',
    ]
    return "\n".join(lines) + "\n"


def _toml_header(plan: EmitInput) -> str:
    return (
        f"# torchtitan {TOML_VERSION} job file for {plan.model.name} on {plan.num_gpus} GPUs, "
        f"written by autopar {autopar_version()}.\n"
        f"# Layout: {summary(plan)}.\n"
        "# Optimizer and learning-rate schedule are torchtitan's defaults: copy them from the\n"
        "# model's train_configs/*.toml. Launch with run_torchtitan.sh.\n"
        + "".join(line + "\n" for line in _lengths_comment(plan))
        + "\n"
    )


class TorchtitanEmitter:
    """``autopar_torchtitan.py`` (a torchtitan 0.3.0 recipe) and ``run_torchtitan.sh``."""

    name = "torchtitan"

    def emit(self, plan: EmitInput) -> EmittedFiles:
        plan = checked_plan(plan)
        settings = torchtitan_settings(plan)
        check(plan, settings, version="current")
        return EmittedFiles(
            files=(
                (RECIPE_FILE, render_recipe(settings, plan)),
                (LAUNCH_FILE, _launcher(plan, version="current")),
            )
        )


class TorchtitanTomlEmitter:
    """``torchtitan.toml`` (a v0.2.x job file) and ``run_torchtitan.sh``."""

    name = "torchtitan-toml"

    def emit(self, plan: EmitInput) -> EmittedFiles:
        plan = checked_plan(plan)
        settings = torchtitan_settings(plan)
        check(plan, settings, version="0.2")
        return EmittedFiles(
            files=(
                (TOML_FILE, _toml_header(plan) + render_toml(settings)),
                (LAUNCH_FILE, _launcher(plan, version="0.2")),
            )
        )
