"""GPUSpec, LinkSpec and ClusterSpec: where a model is trained.

Units are in the names: ``_gib`` binary gibibytes (2^30 bytes), ``_gbps`` gigabytes (10^9
bytes, not bits) per second, ``_tflops`` 10^12 floating-point operations per second,
``_us`` microseconds. Peaks are dense (no structured sparsity), as printed on the
vendor's datasheet, whose address every record carries in ``source``.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from planner.specs import limits as L
from planner.specs._base import Spec

Dtype = Literal["fp32", "tf32", "bf16", "fp16", "fp8"]
LinkKind = Literal["nvlink", "xgmi", "pcie", "infiniband", "roce", "ethernet"]

GIB = 2**30
Tflops = Annotated[float, Field(ge=L.MIN_HARDWARE_RATE, le=L.MAX_TFLOPS)]


class PeakTflops(Spec):
    """Dense peak throughput per data type, TFLOP/s (``fp8`` absent on GPUs without it)."""

    fp32: Tflops
    tf32: Tflops | None = None
    bf16: Tflops
    fp16: Tflops
    fp8: Tflops | None = None


class GPUSpec(Spec):
    """One accelerator: memory, dense peaks per dtype, memory bandwidth, datasheet source."""

    id: str = Field(min_length=1)
    name: str
    vendor: Literal["nvidia", "amd"]
    architecture: str
    memory_gib: float = Field(
        ge=L.MIN_HARDWARE_RATE, le=L.MAX_MEMORY_GIB, description="device memory, GiB"
    )
    hbm_bandwidth_gbps: float = Field(
        ge=L.MIN_HARDWARE_RATE, le=L.MAX_BANDWIDTH_GBPS, description="memory bandwidth, GB/s"
    )
    tdp_w: PositiveFloat | None = None
    peak_tflops: PeakTflops
    source: str = Field(min_length=1, description="datasheet URL")

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GIB)

    def peak_flops(self, dtype: Dtype) -> float:
        """Dense peak in FLOP/s for ``dtype``; a dtype the GPU lacks is an error."""
        value = getattr(self.peak_tflops, dtype)
        if value is None:
            raise ValueError(f"GPU {self.id} has no dense {dtype} peak (not supported)")
        return value * 1e12


class LinkSpec(Spec):
    """An interconnect: bandwidth per GPU (per port for NICs) and direction, and latency."""

    id: str = Field(min_length=1)
    name: str
    kind: LinkKind
    scope: Literal["intra_node", "inter_node"]
    bandwidth_gbps: float = Field(
        ge=L.MIN_HARDWARE_RATE,
        le=L.MAX_BANDWIDTH_GBPS,
        description="GB/s per GPU or port, per direction",
    )
    latency_us: float = Field(
        ge=L.MIN_HARDWARE_RATE, le=L.MAX_LATENCY_US, description="small-message one-way latency"
    )
    source: str = Field(min_length=1)


class ClusterSpec(Spec):
    """A cluster of identical nodes: ``num_gpus`` GPUs, ``gpus_per_node`` to a node.

    Fewer GPUs than one node describe a partial node (one or two GPUs of a DGX); more
    must fill whole nodes.
    """

    name: str = Field(min_length=1)
    gpu: GPUSpec
    num_gpus: PositiveInt = Field(le=L.MAX_GPUS, description="GPUs in the cluster")
    gpus_per_node: PositiveInt = Field(le=L.MAX_GPUS_PER_NODE)
    intra_node: LinkSpec
    inter_node: LinkSpec
    nics_per_node: PositiveInt = Field(
        le=L.MAX_GPUS_PER_NODE, description="compute-fabric ports per node"
    )

    @model_validator(mode="after")
    def _check_nodes(self) -> ClusterSpec:
        if self.num_gpus > self.gpus_per_node and self.num_gpus % self.gpus_per_node != 0:
            raise ValueError(
                f"num_gpus ({self.num_gpus}) must be a multiple of gpus_per_node "
                f"({self.gpus_per_node}) when it spans more than one node"
            )
        return self

    @property
    def nodes(self) -> int:
        return math.ceil(self.num_gpus / self.gpus_per_node)

    @property
    def gpus_in_node(self) -> int:
        """GPUs used per node (less than ``gpus_per_node`` for a partial node)."""
        return min(self.num_gpus, self.gpus_per_node)

    @property
    def inter_node_bandwidth_per_gpu_gbps(self) -> float:
        """NIC bandwidth one GPU can use when every GPU of a node sends at once."""
        return self.inter_node.bandwidth_gbps * self.nics_per_node / self.gpus_per_node
