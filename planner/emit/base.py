"""Emitters: a plan (or an ``autopar estimate`` result) to the files a user launches.

Each emitter is a small class with a ``name`` and an ``emit(plan) -> EmittedFiles``
method, registered under its name. Output is deterministic for the same input (sorted
keys, stable order), so emitted files can be diffed and kept under version control.
A layout a framework cannot express is refused with ``EmitError`` naming what cannot be
expressed, never silently changed. An emitter is named after its framework,
``<framework>`` or ``<framework>-<variant>`` (``torchtitan-toml``): besides its own,
specific refusals, :func:`emit` refuses whatever the framework's profile
(``planner.frameworks``) says it cannot run, the declaration the search reads too.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

from pydantic import ValidationError

from planner.errors import SpecError
from planner.frameworks import FrameworkProfile, get_profile
from planner.resolved import ResolvedConfig
from planner.specs._base import spec_error
from planner.specs.layout import ParallelConfig, stage_layer_counts_or_even
from planner.specs.model import ModelSpec


class EmitError(SpecError):
    """The plan cannot be expressed in the requested framework's configuration."""


def autopar_version() -> str:
    try:
        return version("autopar")
    except PackageNotFoundError:
        return "0+unknown"


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


class Emitter(Protocol):
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


_AXIS_WORDS = {
    "tp": "tensor parallelism",
    "cp": "context parallelism",
    "pp": "pipeline parallelism",
    "ep": "expert parallelism",
}


def profile_refusals(profile: FrameworkProfile, plan: EmitInput) -> list[str]:
    """What ``plan`` needs that the framework's profile does not run (empty: nothing)."""
    layout, name = plan.layout, profile.name
    reasons = [
        f"{axis} = {getattr(layout, axis)}: {name} runs no {words}"
        for axis, words in _AXIS_WORDS.items()
        if getattr(layout, axis) > 1 and not profile.runs(axis)  # type: ignore[arg-type]
    ]
    if layout.sequence_parallel and not profile.runs("sequence_parallel"):
        reasons.append(f"sequence_parallel: {name} runs no sequence parallelism")
    if layout.interleaved and not profile.interleaved:
        reasons.append(f"vpp = {layout.vpp}: {name} runs no interleaved (virtual) stages")
    reasons.extend(_uneven_refusals(profile, plan))
    if layout.cp > 1 and layout.cp_comm_type not in profile.cp_algorithms:
        reasons.append(
            f"cp_comm_type {layout.cp_comm_type}: {name} runs " + ", ".join(profile.cp_algorithms)
        )
    stage = 1 if layout.distributed_optimizer else layout.zero_stage
    if stage not in profile.sharding_stages:
        stages = ", ".join(str(s) for s in sorted(profile.sharding_stages))
        reasons.append(f"ZeRO stage {stage}: {name} runs stages {stages}")
    if layout.offload_optimizer_fraction > 0 and profile.offload == "none":
        reasons.append(f"offload_optimizer_fraction: {name} does not offload the optimizer")
    return reasons


def _uneven_refusals(profile: FrameworkProfile, plan: EmitInput) -> list[str]:
    layout = plan.layout
    if layout.first_stage_layers is None and layout.last_stage_layers is None:
        return []
    if profile.uneven_stages == "none":
        return [f"first/last stage layers: {profile.name} splits the layers evenly"]
    if profile.uneven_stages == "ends-at-most-middle":
        counts = stage_layer_counts_or_even(plan.model, layout)
        if layout.interleaved or len(counts) < 3 or max(counts[0], counts[-1]) > counts[1]:
            return [
                f"stage layers {counts}: {profile.name} gives the first and last stages at "
                "most as many layers as the others, and only without vpp"
            ]
    return []


def emit_input_from_estimate(data: dict[str, Any]) -> EmitInput:
    """Build an ``EmitInput`` from ``autopar estimate --json`` output (or a plan's entry)."""
    config = _resolved_config(data.get("config"))
    timing = data.get("time", {})
    memory = data.get("memory", {})
    return EmitInput(
        model=config.model_spec,
        num_gpus=config.num_gpus,
        gpus_per_node=config.gpus_per_node,
        seq_len=config.seq_len,
        global_batch=config.global_batch,
        precision=config.precision,
        layout=config.layout,
        framework=config.framework,
        predictions={
            key: float(value)
            for key, value in (
                ("step_time_s", timing.get("step_time_s")),
                ("tokens_per_s", timing.get("tokens_per_s")),
                ("mfu", timing.get("mfu")),
                ("peak_gib", memory.get("peak_gib")),
            )
            if value is not None
        },
    )


def _resolved_config(block: object) -> ResolvedConfig:
    """The plan file's ``config`` block, typed; a missing field is named."""
    if not isinstance(block, dict):
        raise EmitError("plan file: missing field 'config'")
    try:
        return ResolvedConfig.model_validate(block)
    except ValidationError as error:
        missing = [
            ".".join(str(part) for part in item["loc"])
            for item in error.errors()
            if item["type"] == "missing"
        ]
        if missing:
            raise EmitError(f"plan file: missing field '{missing[0]}' in 'config'") from None
        raise spec_error(error, what="plan file") from None
