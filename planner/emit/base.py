"""Emitters: a plan (or an ``autopar estimate`` result) to the files a user launches.

Each emitter is a small class with a ``name`` and an ``emit(plan) -> EmittedFiles``
method, registered under its name. Output is deterministic for the same input (sorted
keys, stable order), so emitted files can be diffed and kept under version control.
A layout a framework cannot express is refused with ``EmitError`` naming what cannot be
expressed, never silently changed.

Before anything framework-specific, every emitter re-checks the whole plan it is given
with :func:`checked_plan` (a hand-edited or stale plan file must not become a launch file):
the workload's own fields, world size = tp x cp x dp x pp (ep is carved out of those ranks,
so it does not multiply), global batch = micro-batch size x dp x micro-batches, and every
rule of :func:`planner.specs.layout.layout_violations`. An inconsistent plan is refused
with one line naming the field.

An emitter is named after its framework, ``<framework>`` or ``<framework>-<variant>``
(``torchtitan-toml``). What a framework cannot express for a layout is said once, in
``planner.frameworks.refusals``, which the search reads too (so that every plan it returns
for a framework is one the emitter writes): the built-in emitters call it
(:func:`profile_refusals`) beside their own refusals of what no layout changes (a model
the framework does not define, a GPU count that does not fill whole nodes), and
:func:`emit` applies it again for an emitter that does not.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from planner.errors import SpecError
from planner.frameworks import FrameworkProfile, get_profile
from planner.frameworks.refusals import LayoutQuery, layout_refusals
from planner.scattering.result import ScatterSummary
from planner.specs._base import describe_validation_error, spec_error
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import (
    ParallelConfig,
    layout_violations,
    resolve_data_parallel,
)
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec


class EmitError(SpecError):
    """The plan cannot be expressed in the requested framework's configuration."""


def autopar_version() -> str:
    try:
        return version("autopar")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class ActivationMemory:
    """From ``autopar memplan --budget-gib``: the recompute/offload setting chosen to fit
    the budget, beyond what the layout's recompute fields say (``planner.memplan.settings``).
    """

    budget_gib: float
    peak_gib: float
    """The largest planned peak over the stages under this setting."""
    added_time_s: float
    """The largest time the setting adds to a stage's step."""
    offload_layers: int = 0
    """Megatron-Core's activation offload of the model's first N layers
    (``--cpu-offloading-num-layers``)."""
    every_nth_layer: int | None = None
    """torchtitan 0.2.2's layer-wise selective checkpointing: every k-th block."""
    mapped: str | None = None
    """How the setting differs from the per-layer choice, and why."""


@dataclass(frozen=True)
class EmitInput:
    """Everything an emitter reads: model, cluster size, workload, resolved layout, predictions."""

    model: ModelSpec
    num_gpus: int
    gpus_per_node: int
    seq_len: int
    global_batch: int
    precision: str
    layout: ParallelConfig
    framework: str
    predictions: dict[str, float]
    """step_time_s, tokens_per_s, mfu, peak_gib: recorded in the files' header comments."""
    scattering: ScatterSummary | None = None
    """The plan entry's ``scattering`` block (``autopar plan --length-dist``): where
    scattering wins, the Megatron emitter asks for hybrid context parallel."""
    expandable_saving_gib: float | None = None
    """From a plan simulated with ``--memplan``: how much less the simulated caching
    allocator reserves per GPU with expandable segments (None: not simulated, or no less);
    the launch scripts then set ``expandable_segments:True``."""
    expandable_segments: bool = False
    """The plan's ``config.runtime.expandable_segments`` (``autopar estimate
    --expandable-segments``): its memory verdict counts the fragmentation share measured
    with expandable segments, so the launch scripts must set them."""
    grad_reduce_in_bf16: bool = False
    """The plan's ``config.runtime.grad_reduce_in_bf16``: a bf16 gradient buffer
    (Megatron-LM's ``--grad-reduce-in-bf16``)."""
    cross_entropy_loss_fusion: bool | None = None
    """The plan's ``config.runtime.cross_entropy_loss_fusion`` (None: the framework's
    default, off in Megatron-LM): written as ``--cross-entropy-loss-fusion`` when on."""
    gradient_accumulation_fusion: bool | None = None
    """The plan's ``config.runtime.gradient_accumulation_fusion`` (None: the framework's
    default, on in Megatron-LM): written as ``--no-gradient-accumulation-fusion`` when off."""
    activation_memory: ActivationMemory | None = None
    """From ``autopar memplan --budget-gib ... --emit``: the recompute/offload setting that
    fits the budget (the layout's recompute fields carry its recomputation)."""
    layer_spec: str = "transformer_engine"
    """Megatron's layer spec the plan was predicted with (``local``: megatron-core's local
    modules, written as ``--transformer-impl local``)."""

    @property
    def nodes(self) -> int:
        return max(1, -(-self.num_gpus // self.gpus_per_node))

    @property
    def nproc_per_node(self) -> int:
        return min(self.num_gpus, self.gpus_per_node)

    @property
    def dp(self) -> int:
        assert self.layout.dp is not None
        return self.layout.dp

    @property
    def grad_accumulation(self) -> int:
        return self.global_batch // (self.layout.mbs * self.dp)


@dataclass(frozen=True)
class EmittedFiles:
    """File name -> contents, in a stable order."""

    files: tuple[tuple[str, str], ...]

    def as_dict(self) -> dict[str, str]:
        return dict(self.files)


_PREDICTIONS = (
    ("step_time_s", "step time", "{:.3f} s"),
    ("tokens_per_s", "throughput", "{:.0f} tokens/s"),
    ("mfu", "MFU", "{:.3f}"),
    ("peak_gib", "peak memory", "{:.1f} GiB per GPU"),
)


def prediction_comment_lines(plan: EmitInput) -> list[str]:
    """The plan's predictions as shell comment lines, in a fixed order and format."""
    return [
        f"#   {label:<12} {fmt.format(plan.predictions[key])}"
        for key, label, fmt in _PREDICTIONS
        if key in plan.predictions
    ] or ["#   (none recorded)"]


def checked_plan(plan: EmitInput) -> EmitInput:
    """The plan with ``dp`` resolved, once all its fields agree; else ``EmitError`` naming them.

    Checks the workload fields (positive sizes, a known precision), the GPU counts, world
    size = tp x cp x dp x pp, global batch = micro-batch size x dp x micro-batches, and the
    layout rules of :func:`planner.specs.layout.layout_violations`. Every emitter calls
    this first, so a plan file edited by hand cannot turn into a launch file that the
    framework would refuse, or that silently trains another batch.
    """
    for field, count in (("num_gpus", plan.num_gpus), ("gpus_per_node", plan.gpus_per_node)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise EmitError(f"plan: {field} {count!r} is not a positive whole number")
    try:
        workload = WorkloadSpec(
            seq_len=plan.seq_len, global_batch=plan.global_batch, precision=plan.precision
        )
        layout = resolve_data_parallel(plan.layout, num_gpus=plan.num_gpus)
    except ValidationError as error:
        raise EmitError(describe_validation_error(error, what="plan")) from None
    except SpecError as error:
        raise EmitError(f"plan: {str(error).removeprefix('layout: ')}") from None
    assert layout.dp is not None
    per_micro_batch = layout.mbs * layout.dp
    if plan.global_batch % per_micro_batch:
        raise EmitError(
            f"plan: global_batch {plan.global_batch} is not micro-batch size x dp x "
            f"micro-batches: {plan.global_batch} / ({layout.mbs} x {layout.dp}) = "
            f"{plan.global_batch / per_micro_batch:g} is not a whole number of micro-batches"
        )
    # layout_violations reads only the cluster's GPU count; the plan does not carry the
    # rest of the cluster (GPU type, links), so none is made up for it.
    cluster = ClusterSpec.model_construct(num_gpus=plan.num_gpus, gpus_per_node=plan.gpus_per_node)
    problems = layout_violations(
        model=plan.model, cluster=cluster, workload=workload, layout=layout
    )
    if problems:
        raise EmitError("plan: " + "; ".join(problem.message for problem in problems))
    return dataclasses.replace(plan, layout=layout)


class Emitter(Protocol):
    """Writes the files of one framework; ``emit`` starts with :func:`checked_plan`."""

    name: str

    def emit(self, plan: EmitInput) -> EmittedFiles: ...


_REGISTRY: dict[str, Emitter] = {}


def register(emitter: Emitter) -> Emitter:
    """Add an emitter under its name; a name registered twice is an error."""
    if emitter.name in _REGISTRY:
        raise ValueError(f"emitter '{emitter.name}' is already registered")
    _REGISTRY[emitter.name] = emitter
    return emitter


def unregister(name: str) -> None:
    """Remove an emitter (for tests that register a stub)."""
    _REGISTRY.pop(name, None)


def get_emitter(name: str) -> Emitter:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise EmitError(f"--format: unknown '{name}'; known: {known}") from None


def emitter_names() -> list[str]:
    return sorted(_REGISTRY)


def emit(plan: EmitInput, *, format: str) -> EmittedFiles:
    """The files of emitter ``format`` for ``plan``; ``EmitError`` naming every refusal.

    The emitter's own refusals come first (they name the framework's settings); then the
    framework profile's (:func:`profile_refusals`), so that a layout the profile excludes
    is refused even by an emitter that does not check it itself.
    """
    emitter = get_emitter(format)
    files = emitter.emit(plan)
    framework = emitter.name.split("-")[0]
    reasons = profile_refusals(get_profile(framework), plan)
    if reasons:
        raise EmitError(f"{framework} cannot express this plan: " + "; ".join(reasons))
    return files


def layout_query(plan: EmitInput, *, release: str | None = None) -> LayoutQuery:
    """What the framework refusals (``planner.frameworks.refusals``) read of ``plan``."""
    return LayoutQuery(
        model=plan.model,
        layout=plan.layout,
        seq_len=plan.seq_len,
        precision=plan.precision,
        release=release,
    )


def profile_refusals(
    profile: FrameworkProfile, plan: EmitInput, *, release: str | None = None
) -> list[str]:
    """What ``plan``'s layout needs that the framework cannot run (empty: nothing): the
    refusals the search applies too (:func:`planner.frameworks.refusals.layout_refusals`)."""
    return layout_refusals(profile, layout_query(plan, release=release))


SpecT = TypeVar("SpecT", bound=BaseModel)
_JSON_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return _JSON_KINDS.get(type(value), "a number")


def _json_object(value: Any, *, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EmitError(f"plan file: {where} must be a JSON object, not {_json_kind(value)}")
    return value


def _whole(block: dict[str, Any], key: str) -> int:
    value = block[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise EmitError(f"plan file: config.{key} must be a whole number, not {value!r}")
    return value


def _number(section: dict[str, Any], key: str, *, where: str) -> float | None:
    value = section.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise EmitError(f"plan file: {where}.{key} must be a number, not {value!r}")
    return None if value is None else float(value)


def _expandable_saving(memory: dict[str, Any]) -> float | None:
    """GiB the simulated allocator saves at the peak stage with expandable segments, from
    ``memory.simulated`` (``--memplan``); None without it or without a saving."""
    simulated = memory.get("simulated")
    if simulated is None:
        return None
    if not isinstance(simulated, list) or not simulated:
        raise EmitError("plan file: memory.simulated must be a non-empty list of stages")
    peaks = {"allocator_gib": 0.0, "allocator_expandable_gib": 0.0}
    for stage in simulated:
        stage = _json_object(stage, where="memory.simulated[]")
        for key in peaks:
            value = _number(stage, key, where="memory.simulated[]")
            if value is None:
                raise EmitError(f"plan file: missing field '{key}' in memory.simulated[]")
            peaks[key] = max(peaks[key], value)
    saving = peaks["allocator_gib"] - peaks["allocator_expandable_gib"]
    return saving if saving > 0 else None


def _runtime_switch(config: dict[str, Any], name: str) -> bool:
    """``config.runtime.<name>`` of a plan (False where absent: older plans)."""
    value = _runtime_value(config, name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise EmitError(f"plan file: config.runtime.{name} must be true or false")
    return value


def _runtime_choice(config: dict[str, Any], name: str) -> bool | None:
    """``config.runtime.<name>`` of a plan where null means the framework's default (None
    where absent too: older plans)."""
    value = _runtime_value(config, name)
    if value is not None and not isinstance(value, bool):
        raise EmitError(f"plan file: config.runtime.{name} must be true, false or null")
    return value


def _runtime_value(config: dict[str, Any], name: str) -> Any:
    runtime = config.get("runtime")
    if runtime is None:
        return None
    return _json_object(runtime, where="config.runtime").get(name)


def allocator_lines(plan: EmitInput, *, note: str = "") -> list[str]:
    """The launch script's allocator setting: ``expandable_segments:True`` exported when
    the plan's memory verdict assumed it (``config.runtime.expandable_segments``) or its
    simulation says it reserves less (with the simulated saving); else nothing."""
    lines = []
    if plan.expandable_segments:
        lines.append(
            "# autopar: the memory verdict counts the fragmentation measured with expandable "
            "segments (--expandable-segments)."
        )
    if plan.expandable_saving_gib is not None:
        lines.append(
            f"# autopar memplan: with expandable segments the simulated caching allocator "
            f"reserves {plan.expandable_saving_gib:.2f} GiB less per GPU at the peak stage{note}."
        )
    if not lines:
        return []
    return [*lines, "export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True", ""]


def activation_lines(plan: EmitInput) -> list[str]:
    """Comment lines saying which memory budget chose the recompute/offload setting, and
    what was mapped to the framework's nearest setting; none without one."""
    memory = plan.activation_memory
    if memory is None:
        return []
    text = (
        f"autopar memplan --budget-gib {memory.budget_gib:g}: this recompute/offload setting "
        f"plans a peak of {memory.peak_gib:.2f} GiB per GPU and adds "
        f"{memory.added_time_s:.3f} s per step (largest over the stages)."
    )
    lines = _comment(text)
    if memory.mapped is not None:
        lines += _comment(f"Mapped: {memory.mapped}.")
    return [*lines, ""]


def _comment(text: str, *, width: int = 92) -> list[str]:
    """``text`` as shell comment lines of at most ``width`` characters (words kept whole)."""
    lines, line = [], "#"
    for word in text.split():
        if len(line) + 1 + len(word) > width and line.strip("# "):
            lines.append(line)
            line = "#  "
        line += " " + word
    return [*lines, line]


def _validated(spec: type[SpecT], value: Any, *, where: str) -> SpecT:
    try:
        return spec.model_validate(value)
    except ValidationError as error:
        raise spec_error(error, what=f"plan file: {where}") from None


def emit_input_from_estimate(data: Any) -> EmitInput:
    """Build an ``EmitInput`` from ``autopar estimate --json`` output (or a plan's entry).

    Anything else (a list, a string, a missing or mistyped field) is an ``EmitError``
    naming the field; whether the fields agree is :func:`checked_plan`'s job.
    """
    data = _json_object(data, where="the plan")
    try:
        block = _json_object(data["config"], where="config")
        model = _validated(ModelSpec, block["model_spec"], where="config.model_spec")
        layout_fields = {name: block[name] for name in ParallelConfig.model_fields if name in block}
        layout = _validated(ParallelConfig, layout_fields, where="config")
        timing = _json_object(data.get("time", {}), where="time")
        memory = _json_object(data.get("memory", {}), where="memory")
        predictions = {
            "step_time_s": _number(timing, "step_time_s", where="time"),
            "tokens_per_s": _number(timing, "tokens_per_s", where="time"),
            "mfu": _number(timing, "mfu", where="time"),
            "peak_gib": _number(memory, "peak_gib", where="memory"),
        }
        scattering = data.get("scattering")
        return EmitInput(
            model=model,
            num_gpus=_whole(block, "num_gpus"),
            gpus_per_node=_whole(block, "gpus_per_node"),
            seq_len=_whole(block, "seq_len"),
            global_batch=_whole(block, "global_batch"),
            precision=str(block["precision"]),
            layout=layout,
            framework=str(block.get("framework", "megatron")),
            predictions={key: value for key, value in predictions.items() if value is not None},
            scattering=None
            if scattering is None
            else _validated(ScatterSummary, scattering, where="scattering"),
            expandable_saving_gib=_expandable_saving(memory),
            layer_spec=str(block.get("layer_spec", "transformer_engine")),
            expandable_segments=_runtime_switch(block, "expandable_segments"),
            grad_reduce_in_bf16=_runtime_switch(block, "grad_reduce_in_bf16"),
            cross_entropy_loss_fusion=_runtime_choice(block, "cross_entropy_loss_fusion"),
            gradient_accumulation_fusion=_runtime_choice(block, "gradient_accumulation_fusion"),
        )
    except KeyError as missing:
        where = "the plan" if missing.args == ("config",) else "'config'"
        raise EmitError(f"plan file: missing field {missing} in {where}") from None
