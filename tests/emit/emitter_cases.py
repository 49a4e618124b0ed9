"""What the emitter tests share: plan builders, and the ``Contract`` each registered emitter
fills in (``megatron_cases``, ``deepspeed_cases``, ``torchtitan_cases``) for
``test_contract.py``; the per-framework test files use the same plans for their checks
against the real frameworks.

A plan is given as a builder (a function returning a fresh ``EmitInput``), so a test of
determinism can build it twice. Regenerate the golden files with ``UPDATE_GOLDEN=1``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.catalog import catalog_model
from planner.emit.base import EmitInput, emit_input_from_estimate
from planner.specs.layout import ParallelConfig, resolve_data_parallel
from planner.specs.model import ModelSpec

PLANS = Path(__file__).parents[1] / "fixtures" / "plans"
GOLDEN = Path(__file__).parent / "golden"
FIXED_PREDICTIONS = {"step_time_s": 3.25, "tokens_per_s": 80000.0, "mfu": 0.5, "peak_gib": 60.0}

Build = Callable[[], EmitInput]
Files = dict[str, str]


def load_plan(
    stem: str, *, model: str | None = None, precision: str | None = None, **layout: Any
) -> EmitInput:
    """A fixture plan with fixed predictions; ``model`` swaps in a catalogue model and
    ``layout`` overrides ParallelConfig fields."""
    plan = emit_input_from_estimate(json.loads((PLANS / f"{stem}.json").read_text()))
    return dataclasses.replace(
        plan,
        model=catalog_model(model).spec if model else plan.model,
        layout=ParallelConfig(**{**plan.layout.model_dump(), **layout}),
        precision=precision or plan.precision,
        predictions=dict(FIXED_PREDICTIONS),
    )


def make_plan(
    model: ModelSpec | str,
    *,
    num_gpus: int,
    seq_len: int = 4096,
    global_batch: int = 64,
    precision: str = "bf16",
    **layout: Any,
) -> EmitInput:
    """A synthetic Megatron plan for ``model`` (a catalogue name or a spec)."""
    spec = catalog_model(model).spec if isinstance(model, str) else model
    return EmitInput(
        model=spec,
        num_gpus=num_gpus,
        gpus_per_node=8,
        seq_len=seq_len,
        global_batch=global_batch,
        precision=precision,
        layout=resolve_data_parallel(ParallelConfig(**layout), num_gpus=num_gpus),
        framework="megatron",
        predictions=dict(FIXED_PREDICTIONS),
    )


def mixtral_variant(**moe: Any) -> ModelSpec:
    base = catalog_model("mixtral-8x7b").spec
    return base.model_copy(update={"moe": base.moe.model_copy(update=moe)})  # type: ignore[union-attr]


def built(cases: Mapping[str, Build]) -> dict[str, EmitInput]:
    return {name: build() for name, build in cases.items()}


@dataclass(frozen=True)
class Contract:
    """What the contract suite needs to know about one registered emitter."""

    emitter: str
    golden_folder: Callable[[str], Path]
    golden_cases: tuple[str, ...]
    plans: Mapping[str, Build]
    """Plans the framework can express, by case name."""
    read_back: Callable[[Files, EmitInput], tuple[Any, Any]]
    """(what the emitted files say, what the checked plan says): they must be equal."""
    refusal: str
    """How every refusal of a plan the framework cannot express begins."""
    refusals: Mapping[str, tuple[Build, tuple[str, ...]]]
    """Plans the framework cannot express, each with the phrases its refusal must contain."""


def with_model(plan: EmitInput, **model: Any) -> EmitInput:
    """The plan with some of its model's fields changed."""
    return dataclasses.replace(plan, model=plan.model.model_copy(update=model))


def golden_folder(*parts: str) -> Callable[[str], Path]:
    """The golden folder of a case: ``GOLDEN/<framework>/<case>[/<format>]``."""
    framework, *format_ = parts
    return lambda case: GOLDEN.joinpath(framework, case, *format_)
