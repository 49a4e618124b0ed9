"""RefineProblem: everything a refinement worker needs, stored with the study.

A study is refined by processes that may run on other machines and know only the study's
name and the storage URL, so the study itself carries the problem: the model, cluster and
workload specs, the framework, the headroom to keep, the objectives and the solver's
plans that seed it. Each is one study user attribute holding JSON (``USER_ATTRS`` lists
the keys), and :meth:`RefineProblem.from_user_attrs` rebuilds and re-validates the specs
from them. ``fingerprint`` hashes the problem so that a study name reused for another
problem is refused rather than mixed.

Objectives (all maximised):

  throughput  predicted tokens per second (``Estimate.time.tokens_per_s``); for a fixed
              global batch this is the same ranking as the shortest step time
  headroom    GiB left free on the fullest GPU (``Estimate.memory.headroom_gib``)
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from planner.cost.frameworks import DEFAULT_RUNTIME, Framework, LayerSpec, Runtime
from planner.errors import SpecError
from planner.frameworks import framework_names
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import ParallelConfig
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec

Objective = Literal["throughput", "headroom"]
OBJECTIVES: tuple[Objective, ...] = ("throughput", "headroom")

USER_ATTRS = (
    "model",
    "cluster",
    "workload",
    "framework",
    "headroom_gib",
    "objectives",
    "seeds",
    "fingerprint",
    "autopar_version",
)
"""Study user attributes written by :meth:`RefineProblem.to_user_attrs`."""


class Seed(BaseModel):
    """One of the solver's plans: its layout and what the cost model predicted for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layout: dict[str, Any]
    """``ParallelConfig`` fields (dp resolved), as ``model_dump(mode="json")`` gives them."""
    step_time_s: float
    tokens_per_s: float
    headroom_gib: float

    def parallel_config(self) -> ParallelConfig:
        return ParallelConfig(**self.layout)


class RefineProblem(BaseModel):
    """The specs, the seeds and the objectives of one refinement study."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ModelSpec
    cluster: ClusterSpec
    workload: WorkloadSpec
    framework: Framework = "megatron"
    framework_version: str | None = None
    """The framework release the plans are for (``FrameworkProfile.versions``; None: the
    default): trials the release cannot run are illegal."""
    headroom_gib: float = Field(default=0.0, ge=0.0)
    """GiB each GPU must keep free for a trial to count as fitting (as ``plan``'s option)."""
    objectives: tuple[Objective, ...] = ("throughput",)
    seeds: tuple[Seed, ...] = Field(min_length=1)
    runtime: Runtime = DEFAULT_RUNTIME
    """The launch's run-time settings every trial is priced with (the search's)."""
    layer_spec: LayerSpec = "transformer_engine"

    @field_validator("framework")
    @classmethod
    def _registered(cls, framework: str) -> str:
        if framework not in framework_names():
            raise ValueError(f"unknown '{framework}'; known: {', '.join(framework_names())}")
        return framework

    def to_user_attrs(self) -> dict[str, Any]:
        """Study user attributes (JSON values) from which a worker rebuilds the problem."""
        data = self.model_dump(mode="json")
        data["fingerprint"] = self.fingerprint
        data["autopar_version"] = autopar_version()
        return data

    @classmethod
    def from_user_attrs(cls, attrs: dict[str, Any], *, study: str) -> RefineProblem:
        """The problem stored on study ``study``; ``SpecError`` if it is missing or broken."""
        missing = [key for key in USER_ATTRS[:-2] if key not in attrs]
        if missing:
            raise SpecError(
                f"--study: study '{study}' was not created by autopar refinement (user "
                f"attributes missing: {', '.join(missing)})"
            )
        try:
            return cls(
                **{key: attrs[key] for key in USER_ATTRS[:-2]},
                framework_version=attrs.get("framework_version"),
                **{key: attrs[key] for key in _DEFAULTED if key in attrs},
            )
        except ValidationError as error:
            raise SpecError(
                f"--study: study '{study}' holds a problem this autopar cannot read "
                f"(stored by autopar {attrs.get('autopar_version', '?')}): "
                + "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
                )
            ) from None

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the problem's canonical JSON (specs, framework, headroom, objectives,
        seeds): equal problems, equal fingerprints."""
        # fields at their defaults are left out: the JSON (and the fingerprint) of studies
        # stored before those fields existed
        unset = {"framework_version"} if self.framework_version is None else set()
        unset |= {key for key in _DEFAULTED if getattr(self, key) == _DEFAULTED[key]}
        data = self.model_dump(mode="json", exclude=unset or None)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def directions(self) -> list[str]:
        return ["maximize"] * len(self.objectives)


_DEFAULTED: dict[str, object] = {"runtime": DEFAULT_RUNTIME, "layer_spec": "transformer_engine"}
"""Fields left out of the fingerprint at these values, and read back only when stored."""


def parse_objectives(text: str) -> tuple[Objective, ...]:
    """'throughput,headroom' -> ('throughput', 'headroom'); ``SpecError`` naming the option."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise SpecError(
            f"--refine-objectives: give one or more of {', '.join(OBJECTIVES)} (comma-separated)"
        )
    unknown = [name for name in names if name not in OBJECTIVES]
    if unknown:
        raise SpecError(
            f"--refine-objectives: unknown '{unknown[0]}'; known: {', '.join(OBJECTIVES)}"
        )
    if len(set(names)) != len(names):
        raise SpecError("--refine-objectives: an objective is given twice")
    return tuple(names)  # type: ignore[return-value]


def autopar_version() -> str:
    try:
        return version("autopar")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"
