"""Emitters: launch files for Megatron-LM, DeepSpeed and torchtitan from a plan.

``load_emitters()`` imports the emitter modules, which register themselves
(``planner.emit.base.register``); ``emit_files`` calls it. Every emitter re-checks the
plan it is given (``checked_plan``) before writing anything.
"""

import dataclasses
import importlib
from typing import Any

from planner.emit.base import (
    ActivationMemory,
    EmitError,
    EmitInput,
    EmittedFiles,
    checked_plan,
    emit,
    emit_input_from_estimate,
    emitter_names,
    get_emitter,
)

EMITTER_MODULES = ("megatron", "deepspeed", "torchtitan")


def load_emitters() -> None:
    """Import the emitter modules once, which registers them."""
    for module in EMITTER_MODULES:
        importlib.import_module(f"planner.emit.{module}")


def emit_files(
    plan_json: dict[str, Any],
    *,
    format: str,
    activation_memory: ActivationMemory | None = None,
) -> dict[str, str]:
    """File name -> contents for ``format``, from ``autopar estimate --json`` output (and,
    from ``autopar memplan --budget-gib``, the recompute/offload setting that fits)."""
    load_emitters()
    plan = emit_input_from_estimate(plan_json)
    if activation_memory is not None:
        plan = dataclasses.replace(plan, activation_memory=activation_memory)
    return emit(plan, format=format).as_dict()


__all__ = [
    "ActivationMemory",
    "EmitError",
    "EmitInput",
    "EmittedFiles",
    "checked_plan",
    "emit",
    "emit_files",
    "emit_input_from_estimate",
    "emitter_names",
    "get_emitter",
    "load_emitters",
]
