"""Emitters: a plan (or an ``autopar estimate`` result) to the files a user launches.

Each emitter is a small class with a ``name`` and an ``emit(plan) -> EmittedFiles``
method, registered under its name. Output is deterministic for the same input (sorted
keys, stable order), so emitted files can be diffed and kept under version control.
A layout a framework cannot express is refused with ``EmitError`` naming what cannot be
expressed, never silently changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

from pydantic import ValidationError

from planner.errors import SpecError
from planner.specs._base import spec_error
from planner.specs.layout import ParallelConfig
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


def get_emitter(name: str) -> Emitter:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise EmitError(f"--format: unknown '{name}'; known: {known}") from None


def emitter_names() -> list[str]:
    return sorted(_REGISTRY)


def emit_input_from_estimate(data: dict[str, Any]) -> EmitInput:
    """Build an ``EmitInput`` from ``autopar estimate --json`` output (or a plan's entry)."""
    try:
        config = data["config"]
        model = ModelSpec(**config["model_spec"])
        layout_fields = {
            name: config[name] for name in ParallelConfig.model_fields if name in config
        }
        layout = ParallelConfig(**layout_fields)
        timing = data.get("time", {})
        memory = data.get("memory", {})
        return EmitInput(
            model=model,
            num_gpus=int(config["num_gpus"]),
            gpus_per_node=int(config["gpus_per_node"]),
            seq_len=int(config["seq_len"]),
            global_batch=int(config["global_batch"]),
            precision=str(config["precision"]),
            layout=layout,
            framework=str(config.get("framework", "megatron")),
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
    except KeyError as missing:
        raise EmitError(f"plan file: missing field {missing} in 'config'") from None
    except ValidationError as error:
        raise spec_error(error, what="plan file") from None
