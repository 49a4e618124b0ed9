"""Framework profiles: one frozen declaration per training framework, in a registry.

``get_profile(name)`` is what the search, the cost model, the refinement space and the
emitters read; the built-in profiles (megatron, deepspeed, torchtitan, pytorch) register
on import. A new framework registers its own ``FrameworkProfile`` with ``register``.
"""

from planner.frameworks import builtin as _builtin  # noqa: F401  (registers the built-ins)
from planner.frameworks.profile import (
    REFINABLE,
    AllocatorPattern,
    Axis,
    FrameworkProfile,
    OffloadSupport,
    Schedule,
    UnevenStages,
    framework_names,
    get_profile,
    register,
    unregister,
)

__all__ = [
    "REFINABLE",
    "AllocatorPattern",
    "Axis",
    "FrameworkProfile",
    "OffloadSupport",
    "Schedule",
    "UnevenStages",
    "framework_names",
    "get_profile",
    "register",
    "unregister",
]
