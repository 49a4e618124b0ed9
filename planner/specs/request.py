"""PlanRequest: everything one ``plan()`` call needs, as one frozen record.

The CLI (``autopar plan``) and the REST service (the planning worker) each build one and
pass it whole to :func:`planner.plan.plan`, which runs the search, then the optional
steps the request asks for: Optuna refinement of the solver's plans (``refine``) and the
re-ranking of the top plans by measured steps on this machine (``hardware``). The values
are checked where they are used (the search names the bad field and the rule), so a
request built from any front end fails the same way.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from planner.cost.frameworks import DEFAULT_RUNTIME, LayerSpec, Runtime
from planner.experts.stats import RoutingStats
from planner.specs.hardware import ClusterSpec
from planner.specs.limits import MAX_MEASURE_STEPS, MAX_REFINE_TRIALS, MAX_TOP_K
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec

DEFAULT_TIME_LIMIT_S = 60.0


class RefineOptions(BaseModel):
    """Refine the solver's plans with ``trials`` Optuna trials of the full cost model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trials: int = Field(ge=1, le=MAX_REFINE_TRIALS)
    objectives: str = "throughput"
    """Comma-separated: ``throughput``, or ``throughput,headroom`` for a Pareto front."""
    study_name: str | None = None
    """Reused: resumed; default: a new study."""
    storage: str | None = None
    """Optuna storage URL; default: the service's database."""


class HardwareRankOptions(BaseModel):
    """Measure the ``top`` plans with short real training steps and rank them again."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    top: int = Field(ge=1, le=MAX_TOP_K)
    device: str = "cuda"
    steps: int = Field(default=6, ge=3, le=MAX_MEASURE_STEPS)


class LengthsOption(BaseModel):
    """Variable sequence lengths to scatter the best plan's batches on
    (``planner.scattering.for_plan``): a shipped distribution, sampled, or the user's own
    batches; exactly one of the two."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    distribution: str | None = None
    """A shipped distribution (``autopar scatter --length-dist``'s names)."""
    batches: list[list[int]] | None = None
    """Batches of sequence lengths (``--seq-lengths FILE``, read by the CLI)."""
    source: str | None = None
    """Where ``batches`` came from, for the report (e.g. the file's name)."""
    samples: int = Field(default=2, ge=1, le=64)
    """Batches sampled from ``distribution``."""
    seed: int = Field(default=0, ge=0)
    time_limit_s: float = Field(default=1.0, gt=0, le=60)
    """The scattering solver's seconds per batch."""


class PlanRequest(BaseModel):
    """The specs, the framework, the objective, pinned and bounded knobs, the limits."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model: ModelSpec
    cluster: ClusterSpec
    workload: WorkloadSpec
    framework: str = "megatron"
    framework_version: str | None = None
    """The framework release planned for (``FrameworkProfile.versions``, e.g. torchtitan
    ``current`` or ``0.2``); None: the profile's default."""
    objective: str = "throughput"
    fixed: dict[str, Any] = Field(default_factory=dict)
    """Knobs pinned to one value (``--fix tp=8``)."""
    maxima: dict[str, Any] = Field(default_factory=dict)
    """Upper bounds on integer knobs (``--max pp=4``)."""
    headroom_gib: float | None = None
    """GiB kept free on every GPU; None keeps the framework's default margin
    (``planner.accuracy.default_headroom``)."""
    risk: str = "averse"
    """averse: plans inside the best one's error band ordered by robustness; neutral: by
    the objective alone (``planner.search.robust``)."""
    top_k: int = 5
    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    price_per_gpu_hour: float | None = None
    token_budget: float | None = None
    deadline_hours: float | None = None
    refine: RefineOptions | None = None
    hardware: HardwareRankOptions | None = None
    lengths: LengthsOption | None = None
    """Variable sequence lengths: the best plan then carries a ``scattering`` block."""
    routing: RoutingStats | None = None
    """MoE routing statistics (``autopar plan --routing``): each EP degree's layouts are
    timed with the expert placement solved for it; None assumes balanced routing."""
    runtime: Runtime = DEFAULT_RUNTIME
    """The launch's run-time settings (``cost.frameworks.Runtime``: expandable segments, the
    bf16 gradient buffer, Megatron's kernel switches): the search, the robust pass, the
    length pricing and the refinement price every layout with them."""
    layer_spec: LayerSpec = "transformer_engine"
    """Megatron's layer spec (``--transformer-impl``); ``local`` attends unfused."""
