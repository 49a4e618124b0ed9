"""Collective and point-to-point communication time for a placed process group.

Sizes are the collective's whole buffer ``S`` in bytes, as nccl-tests reports it
(NVIDIA/nccl-tests doc/PERFORMANCE.md): for all-gather and reduce-scatter the gathered
array (per-rank count x n), for all-to-all each rank's whole send buffer (``S/n`` to
every rank), for send/recv the message. Times are seconds.

Inside one node (``n`` ranks), NCCL's ring over the intra-node link::

    t = base + steps(op, n)·latency_intra + factor(op, n)·S / bw_intra

with the bus factors of PERFORMANCE.md (all-reduce 2(n-1)/n; all-gather, reduce-scatter
and all-to-all (n-1)/n; send/recv 1) and NCCL's ring step counts
(``nsteps`` in ``ncclTopoTuneModel``, src/graph/tuning.cc: all-reduce 2(n-1), all-gather
and reduce-scatter n-1; we use n-1 for all-to-all and 1 for send/recv).

Across nodes (``k`` ranks per node, ``N`` nodes), the hierarchical decomposition that
NCCL's rail-optimised rings and trees effectively achieve on nodes with one NIC per GPU
(each GPU moves only its ``1/k`` share over its own NIC share, the rest over NVLink)::

    all-reduce      = RS_intra(S, k) + AR_inter(S/k, N) + AG_intra(S, k)
    all-gather      = AG_inter(S/k, N) + AG_intra(S, k)
    reduce-scatter  = RS_intra(S, k) + RS_inter(S/k, N)
    all-to-all      = max((k-1)·S/n / bw_intra, (n-k)·S/n / bw_inter)
                      + (k-1)·latency_intra + (n-k)·latency_inter
    send/recv       = latency_inter + S / bw_inter

each ``X(size, m)`` a ring term as above without the base latency, which is paid once per
collective. ``bw_inter`` is one GPU's share of its node's NICs
(``ClusterSpec.inter_node_bandwidth_per_gpu_gbps``), whether or not every GPU of the node
is in this group: the other GPUs run their own groups' collectives at the same time.
stas00/ml-engineering network/README.md ("Inter-node speed depends on intra-node speed")
works the same decomposition through measured 4-node all-reduces.

Achievable bandwidth is the link's nominal per-direction bandwidth times
``LINK_EFFICIENCY`` of its kind. Inside one node, a group whose size was measured on the
GPU's own machine takes the measured NCCL time instead (``planner.cost.measured_collectives``:
the two-H200 curves show 2-rank all-gathers of 16 MiB at 54 us where the formula gives
about 30: small and medium messages do not reach the large-message bandwidth).
Not modelled: NVLink SHARP (NVLS) and in-network (SHARP/CollNet) all-reduce, which beat
the ring on NVSwitch/InfiniBand-SHARP systems; elsewhere, the lower bandwidth of small
messages (protocol switches below a few MiB); links whose
per-pair bandwidth is below the per-GPU total (xGMI on MI300X without a switch: 64 of
448 GB/s between two GPUs).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

from planner.cost.measured_collectives import measured_collective_time
from planner.cost.placement import GroupPlacement
from planner.specs.hardware import ClusterSpec, LinkKind, LinkSpec

Collective = Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv"]

GB = 1e9
US = 1e-6

# Achieved bus bandwidth / nominal per-direction link bandwidth, for large messages.
# Replaced by a measured profile (``autopar profile``, a later issue) where one exists.
LINK_EFFICIENCY: Mapping[LinkKind, float] = MappingProxyType(
    {
        # NCCL maintainer S. Jeaugey, NVIDIA/nccl-tests#212 (2024-05-06): "450GB/s is the
        # line rate. With the protocol overhead (~20%) NCCL can get an effective NVLink
        # bandwidth of 370GB/s" (H100, 0.82); nccl-tests#149: A100 ~230 of 300 GB/s (0.77);
        # NVIDIA/nccl#412: A800 ~160 of 200 GB/s (0.80). 0.80 = the stated ~20% overhead.
        "nvlink": 0.80,
        # stas00/ml-engineering network/README.md (commit 744d01e1): all_reduce_bench on
        # 8x MI300X, 4 GiB: 312.9 GB/s busbw of 448 GB/s per direction = 0.70. Measured on
        # MI300X only; applied to every xGMI link.
        "xgmi": 0.70,
        # stas00/ml-engineering network/README.md (commit 744d01e1): nvbandwidth on 8x H200,
        # PCIe 5.0 x16: 55.06 GB/s device-to-host, 55.43 host-to-device, of 63 = 0.87.
        # A copy-engine measurement of the link, not an NCCL collective: a ceiling (on
        # NVLink the same kind of test gives 0.83-0.91 against NCCL's 0.77-0.82).
        "pcie": 0.87,
        # NCCL maintainer (AddyLaddy), NVIDIA/nccl#812 (2023-03-31): DGX A100 with
        # 8x 200 Gb/s IB "we measure 192GB/s AllReduce BusBW" = 192/200 = 0.96; S. Jeaugey,
        # NVIDIA/nccl#412: HDR "24GB/s inter-node" of 25 = 0.96.
        "infiniband": 0.96,
        # NCCL maintainer (AddyLaddy), NVIDIA/nccl-tests#267 (2025-01-23), on a RoCE
        # cluster of ConnectX-7: "CX-7 NICs at NDR rate (400Gbps) should achieve up to
        # 48-49GB/s per NIC" = 48/50 = 0.96.
        "roce": 0.96,
        # Nominal: no maintainer-confirmed measurement of NCCL's socket transport. User
        # reports (NVIDIA/nccl#209: at most 60% of a 32 Gb/s wire; NVIDIA/nccl#450: 4-6 GB/s
        # busbw on 100 Gb/s) show TCP can reach far less; measure before trusting this.
        "ethernet": 1.0,
    }
)

# NCCL's per-collective base latency for the Ring algorithm with the LL protocol,
# baseLat[Ring][LL] = 6.6 us in src/graph/tuning.cc at commit
# b6475625fbcaa2c3c0e50eed2fa1255d7514d4a2 (the same table and protocol as the per-hop
# latencies in hardware_db/interconnects). NCCL's table has no p2p entry; send/recv pays
# it too, as the nearest constant.
NCCL_BASE_LATENCY_S = 6.6 * US


def bus_factor(op: Collective, n: int) -> float:
    """nccl-tests' bus factor: bytes each rank moves per byte of ``S`` (PERFORMANCE.md)."""
    if op == "all_reduce":
        return 2 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        return (n - 1) / n
    if op == "send_recv":
        return 1.0
    raise ValueError(f"unknown collective {op!r}")


def ring_steps(op: Collective, n: int) -> int:
    """Latency-bearing steps of a ring over ``n`` ranks (NCCL tuning.cc ``nsteps``)."""
    if op == "all_reduce":
        return 2 * (n - 1)
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        return n - 1
    if op == "send_recv":
        return 1
    raise ValueError(f"unknown collective {op!r}")


def link_bandwidth_bytes_per_s(link: LinkSpec) -> float:
    """Achievable bandwidth of one GPU's (or port's) share of ``link``, per direction."""
    return link.bandwidth_gbps * GB * LINK_EFFICIENCY[link.kind]


def inter_node_bandwidth_per_gpu_bytes_per_s(cluster: ClusterSpec) -> float:
    """Achievable NIC bandwidth of one GPU when every GPU of its node sends at once."""
    return cluster.inter_node_bandwidth_per_gpu_gbps * GB * LINK_EFFICIENCY[cluster.inter_node.kind]


def ring_time(
    op: Collective, size_bytes: float, *, ranks: int, bandwidth: float, latency_s: float
) -> float:
    """``steps·latency + factor·S/bandwidth`` over ``ranks``; 0 for one rank (no base)."""
    if ranks <= 1:
        return 0.0
    return ring_steps(op, ranks) * latency_s + bus_factor(op, ranks) * size_bytes / bandwidth


def collective_time(
    op: Collective, size_bytes: float, group: GroupPlacement, cluster: ClusterSpec
) -> float:
    """Seconds for ``op`` on a buffer of ``size_bytes`` over ``group`` (formulas above)."""
    if size_bytes < 0:
        raise ValueError(f"size_bytes must be >= 0 (got {size_bytes})")
    bus_factor(op, 2)  # rejects an unknown op before the shortcuts below
    if group.size == 1 or size_bytes == 0:
        return 0.0
    if op == "send_recv":
        return p2p_time(size_bytes, group.intra_node, cluster)
    intra_bw = link_bandwidth_bytes_per_s(cluster.intra_node)
    intra_lat = cluster.intra_node.latency_us * US
    if op == "all_to_all":
        measured = measured_collective_time(cluster.gpu.id, op, size_bytes, group.size)
        if group.nodes == 1 and measured is not None:
            return measured
        return NCCL_BASE_LATENCY_S + _all_to_all_s(size_bytes, group, cluster)
    k, nodes = group.ranks_per_node, group.nodes
    if nodes == 1:
        measured = measured_collective_time(cluster.gpu.id, op, size_bytes, k)
        if measured is not None:
            return measured
        intra = ring_time(op, size_bytes, ranks=k, bandwidth=intra_bw, latency_s=intra_lat)
        return NCCL_BASE_LATENCY_S + intra
    inter = ring_time(
        op,
        size_bytes / k,
        ranks=nodes,
        bandwidth=inter_node_bandwidth_per_gpu_bytes_per_s(cluster),
        latency_s=cluster.inter_node.latency_us * US,
    )
    # all-reduce = reduce-scatter then all-gather inside the node; the others one of them
    intra_phases = 2 if op == "all_reduce" else 1
    intra_op: Collective = "reduce_scatter" if op == "all_reduce" else op
    intra = ring_time(intra_op, size_bytes, ranks=k, bandwidth=intra_bw, latency_s=intra_lat)
    return NCCL_BASE_LATENCY_S + intra_phases * intra + inter


def all_to_all_time(
    size_bytes: float,
    group: GroupPlacement,
    cluster: ClusterSpec,
    *,
    cross_node_fraction: float | None = None,
) -> float:
    """An all-to-all of ``size_bytes`` per rank over ``group``; ``cross_node_fraction``
    (of ``size_bytes``) is the share that leaves the node when routing is not uniform
    (an expert placement's), None for uniform destinations (``collective_time``'s)."""
    if cross_node_fraction is None or group.nodes == 1 or group.size == 1 or size_bytes == 0:
        return collective_time("all_to_all", size_bytes, group, cluster)
    return NCCL_BASE_LATENCY_S + _all_to_all_s(size_bytes, group, cluster, cross_node_fraction)


def _all_to_all_s(
    size_bytes: float,
    group: GroupPlacement,
    cluster: ClusterSpec,
    cross_node_fraction: float | None = None,
) -> float:
    """Each rank sends ``S/n`` to each peer (or, with ``cross_node_fraction`` c, ``c·S``
    across nodes and the rest of what leaves the GPU, ``((n-1)/n - c)·S``, inside it):
    NVLink and NIC peers concurrently."""
    n, k = group.size, group.ranks_per_node
    chunk = size_bytes / n
    inside, across = (k - 1) * chunk, (n - k) * chunk
    if cross_node_fraction is not None:
        across = cross_node_fraction * size_bytes
        inside = max(0.0, (n - 1) * chunk - across)
    intra_s = inside / link_bandwidth_bytes_per_s(cluster.intra_node)
    inter_s = across / inter_node_bandwidth_per_gpu_bytes_per_s(cluster)
    intra_lat_s = (k - 1) * cluster.intra_node.latency_us * US
    inter_lat_s = (n - k) * cluster.inter_node.latency_us * US
    return max(intra_s, inter_s) + intra_lat_s + inter_lat_s


def p2p_time(size_bytes: float, same_node: bool, cluster: ClusterSpec) -> float:
    """Seconds to send ``size_bytes`` to one peer (pipeline send/recv).

    ``base + latency + S / bw`` over the intra-node link, or across nodes over one GPU's
    share of the NICs (every stage boundary sends at once, so each GPU gets its share).
    """
    if size_bytes < 0:
        raise ValueError(f"size_bytes must be >= 0 (got {size_bytes})")
    if size_bytes == 0:
        return 0.0
    measured = measured_collective_time(cluster.gpu.id, "send_recv", size_bytes, 2)
    if same_node and measured is not None:
        return measured
    if same_node:
        bandwidth = link_bandwidth_bytes_per_s(cluster.intra_node)
        latency_s = cluster.intra_node.latency_us * US
    else:
        bandwidth = inter_node_bandwidth_per_gpu_bytes_per_s(cluster)
        latency_s = cluster.inter_node.latency_us * US
    return NCCL_BASE_LATENCY_S + latency_s + size_bytes / bandwidth
