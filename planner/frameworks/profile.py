"""FrameworkProfile: what one training framework runs and how it stores state, and the registry.

A profile is the single declaration the rest of the planner reads about a framework:

  search       which axes, pipeline schedules, uneven stage splits and CP algorithms it
               enumerates (``planner.search.candidates``), and the optimizer sharding it
               sets on every candidate (``sharding``)
  estimate     the knobs it fills when the user leaves them unset (``layout_defaults``),
               its state layout, optimizer implementation, kernels and allocator pattern
               (``planner.predict``, ``planner.cost``)
  refinement   the knobs the Optuna space tunes (``planner.refine.space``): those in
               ``refined_knobs`` that its capabilities allow
  refusals     what its launch files cannot express for a layout
               (``planner.frameworks.refusals``): the generic refusals (an axis, schedule,
               CP algorithm, sharding stage, uneven split or offload it cannot run) and the
               framework's own ``layout_rules``; the search drops a candidate they refuse
               and the emitters refuse a plan with the same words, so a plan the search
               returns for a framework is one its emitter writes
  versions     the releases its emitter targets (default first) where they differ: the CP
               algorithms each runs, whether expert parallelism keeps expert TP

Profiles are registered by name like emitters (``planner.emit.base``): registering a name
twice raises, and an unknown name lists the known ones. Glossary of the axes in
``planner.specs.layout``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from planner.errors import SpecError
from planner.specs.layout import CpCommType

if TYPE_CHECKING:
    from planner.frameworks.refusals import LayoutQuery

LayoutRules = Callable[["FrameworkProfile", "LayoutQuery"], list[str]]
"""A framework's own refusals of one layout (``planner.frameworks.refusals``)."""

Axis = Literal["tp", "cp", "pp", "ep", "sequence_parallel"]
Schedule = Literal["1f1b", "interleaved-1f1b"]
Overlap = Literal["tp_comm", "grad_reduce", "param_gather"]
UnevenStages = Literal["any", "ends-at-most-middle", "none"]
"""Uneven pipeline splits: any first/last sizes; only ends no larger than the middle stages
and without virtual stages (torchtitan's ``*_stage_less_layers``); none."""
OffloadSupport = Literal["none", "distributed-optimizer", "zero"]
"""Optimizer offload: none; any share with the distributed optimizer (Megatron-LM's
``--optimizer-cpu-offload``); DeepSpeed's ``offload_optimizer`` (the whole step with
ZeRO-1/2, any ``ratio`` with ZeRO-3)."""
AllocatorPattern = Literal[
    "contiguous-grad-buffer", "zero-buckets", "fsdp-per-layer", "ddp-buckets"
]
"""How the framework's buffers sit in the caching allocator beyond the model states:
Megatron-LM's contiguous gradient buffer (buckets are views of it); DeepSpeed's ZeRO reduce
(and stage-3 prefetch) buckets, allocated on their own; FSDP2's per-layer unsharded
buffers (counted with the gathered weights); PyTorch DDP's bucket copy of the gradients."""
OptimizerImpl = Literal["fused", "foreach", "per_tensor"]
REFINABLE = frozenset(
    {
        "mbs",
        "vpp",
        "stage_split",
        "recompute",
        "recompute_method",
        "recompute_num_layers",
        "offload_optimizer_fraction",
    }
)
"""Every knob the refinement space knows (``planner.refine.space``); the CP algorithm and
the overlaps are the exact search's (``planner.search.candidates``)."""


@dataclass(frozen=True)
class FrameworkProfile:
    """One framework's capabilities and defaults (module docstring: who reads what)."""

    name: str
    description: str
    state_layout: str
    """Default ``planner.cost.frameworks`` state layout (bytes per parameter per state)."""
    optimizer_impl: OptimizerImpl
    """How its optimizer step allocates temporaries (``planner.cost.memory.OptimizerKind``)."""
    fused_kernels: bool
    """Transformer Engine's fused kernels (SwiGLU, norms, attention), not eager PyTorch ops."""
    allocator_pattern: AllocatorPattern
    axes: frozenset[Axis]
    """Parallel axes it runs besides data parallelism."""
    schedules: tuple[Schedule, ...]
    uneven_stages: UnevenStages
    cp_algorithms: tuple[CpCommType, ...]
    """The context-parallel algorithms it runs at its target version, its default first."""
    cp_algorithms_searched: tuple[CpCommType, ...]
    """The subset the solver's search tabulates where no release says otherwise."""
    sharding_stages: frozenset[int]
    """ZeRO stages it runs (Megatron's distributed optimizer counts as stage 1)."""
    overlaps: frozenset[Overlap]
    offload: OffloadSupport
    recompute_methods: tuple[str, ...]
    """Full-recomputation methods it runs; empty: per block only, no layer groups."""
    sharding: Mapping[str, Any] = field(default_factory=dict)
    """``ParallelConfig`` sharding fields the search sets on every candidate."""
    layout_defaults: Mapping[str, Any] = field(default_factory=dict)
    """``ParallelConfig`` fields ``estimate`` fills when the user leaves them unset."""
    refined_knobs: frozenset[str] = REFINABLE
    """Knobs the refinement tunes, further limited by the capabilities above."""
    cp_algorithms_by_version: Mapping[str, tuple[CpCommType, ...]] = field(default_factory=dict)
    """Where versions differ: version -> the CP algorithms that version runs (all of them
    searched: the cost model prices each)."""
    versions: Mapping[str, str] = field(default_factory=dict)
    """Version names a user may give (``--torchtitan-version``) -> the release; the first
    is the default. Empty: one version, the one in ``description``."""
    expert_tp_under_ep: Mapping[str, bool] = field(default_factory=dict)
    """Release -> whether it shards experts over the TP ranks when ep > 1 (etp = tp);
    where it does not, the search sets etp 1 (missing: it does)."""
    refusal_words: Mapping[str, str] = field(default_factory=dict)
    """Why it cannot run a declared capability, in the words its refusal shows (keys: an
    axis, ``vpp``, ``uneven``, ``cp_comm_type``, ``sharding``, ``offload``; ``{stage}``
    stands for the ZeRO stage); missing: generic words."""
    layout_rules: LayoutRules | None = None
    """The framework's own refusals beyond the generic ones (``planner.frameworks.refusals``)."""
    kernel_switches: Mapping[str, bool] = field(default_factory=dict)
    """Switches that choose which kernels run, named as the framework names them, with
    their defaults at the target release (a ``planner.cost.frameworks.Runtime`` field of
    the same name overrides one): Megatron-LM's ``cross_entropy_loss_fusion`` and
    ``gradient_accumulation_fusion``."""

    def __post_init__(self) -> None:
        if not self.cp_algorithms_searched or not set(self.cp_algorithms_searched) <= set(
            self.cp_algorithms
        ):
            raise ValueError(f"framework {self.name}: searched CP algorithms must be runnable")
        unknown = self.refined_knobs - REFINABLE
        if unknown:
            raise ValueError(f"framework {self.name}: unknown refined knobs {sorted(unknown)}")

    def switch(self, name: str, given: bool | None) -> bool:
        """The kernel switch ``name``: ``given`` where set, else the framework's default
        (a switch the framework does not declare is off)."""
        return self.kernel_switches.get(name, False) if given is None else given

    def runs(self, axis: Axis) -> bool:
        return axis in self.axes

    def release(self, version: str | None) -> str | None:
        """The release ``version`` names (None: the default one; None without versions);
        an unknown name lists the known ones."""
        if not self.versions:
            if version is not None:
                raise SpecError(f"version: {self.name} has no versions to choose from")
            return None
        if version is None:
            return next(iter(self.versions.values()))
        if version in self.versions.values():
            return version
        if version not in self.versions:
            known = ", ".join(self.versions)
            raise SpecError(f"version: unknown {self.name} version '{version}'; known: {known}")
        return self.versions[version]

    def cp_algorithms_at(self, release: str | None) -> tuple[CpCommType, ...]:
        """The CP algorithms ``release`` runs (None: any release's, ``cp_algorithms``)."""
        if release is None:
            return self.cp_algorithms
        return self.cp_algorithms_by_version.get(release, self.cp_algorithms)

    def searched_cp_algorithms(self, release: str | None) -> tuple[CpCommType, ...]:
        """The CP algorithms the search tabulates for ``release``."""
        if release is not None and release in self.cp_algorithms_by_version:
            return self.cp_algorithms_by_version[release]
        return self.cp_algorithms_searched

    def runs_expert_tp_under_ep(self, release: str | None) -> bool:
        """Whether ``release`` shards experts over TP when ep > 1 (None: some release does)."""
        if release is None:
            return not self.expert_tp_under_ep or any(self.expert_tp_under_ep.values())
        return self.expert_tp_under_ep.get(release, True)

    @property
    def interleaved(self) -> bool:
        """Whether it runs virtual pipeline stages (the interleaved 1F1B schedule)."""
        return "interleaved-1f1b" in self.schedules

    @property
    def fully_shards_states(self) -> bool:
        """Its default shards every model state over the data-parallel ranks (ZeRO-3)."""
        return self.layout_defaults.get("zero_stage", self.sharding.get("zero_stage")) == 3


_REGISTRY: dict[str, FrameworkProfile] = {}


def register(profile: FrameworkProfile) -> FrameworkProfile:
    """Add a profile under its name; a name registered twice is an error."""
    if profile.name in _REGISTRY:
        raise ValueError(f"framework '{profile.name}' is already registered")
    _REGISTRY[profile.name] = profile
    return profile


def unregister(name: str) -> None:
    """Remove a profile (for tests that register a stub)."""
    _REGISTRY.pop(name, None)


def get_profile(name: str) -> FrameworkProfile:
    """The profile called ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(_REGISTRY)
        raise SpecError(f"framework: unknown '{name}'; known: {known}") from None


def framework_names() -> list[str]:
    """Registered framework names, in registration order (the built-in ones first)."""
    return list(_REGISTRY)
