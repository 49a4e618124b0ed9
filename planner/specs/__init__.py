"""The pydantic specs: model (what), cluster (where), workload and layout (how)."""

from planner.specs.hardware import ClusterSpec, GPUSpec, LinkSpec, PeakTflops
from planner.specs.layout import ParallelConfig
from planner.specs.model import MLASpec, ModelSpec, MoESpec
from planner.specs.workload import OptimizerSpec, WorkloadSpec

__all__ = [
    "ClusterSpec",
    "GPUSpec",
    "LinkSpec",
    "MLASpec",
    "MoESpec",
    "ModelSpec",
    "OptimizerSpec",
    "ParallelConfig",
    "PeakTflops",
    "WorkloadSpec",
]
