"""Synthetic kernel profiles for the reader tests, built from known formulas.

Rates follow power laws, which are linear in log space: the reader's log-space
interpolation must reproduce them exactly between grid points, so a test can compute the
expected value by hand.
"""

from __future__ import annotations

import math
from typing import Any

from planner.cost.profile_schema import (
    AttentionRow,
    CollectiveRow,
    GemmRow,
    KernelProfile,
    MemoryRow,
    Provenance,
    Settings,
    Timing,
)


def timing(median_s: float) -> Timing:
    return Timing(
        median_s=median_s, p10_s=0.95 * median_s, p90_s=1.05 * median_s,
        min_s=0.9 * median_s, max_s=1.1 * median_s, repeats=10,
    )  # fmt: skip


def gemm_law(m: float, n: float, k: float) -> float:
    """A made-up achieved rate: 1e14 FLOP/s x m^0.1 n^0.05 k^0.08 (log-linear)."""
    return 1e14 * m**0.1 * n**0.05 * k**0.08


def gemm_row(m: int, n: int, k: int, *, role: str = "grid", dtype: str = "bf16",
             rate: float | None = None) -> GemmRow:  # fmt: skip
    rate = rate if rate is not None else gemm_law(m, n, k)
    return GemmRow(role=role, m=m, n=n, k=k, dtype=dtype, time=timing(2 * m * n * k / rate))


def attention_law(seq_len: float, parallel_heads: float, group: float, head_dim: float) -> float:
    return 1e13 * seq_len**0.2 * parallel_heads**0.1 * group**0.01 * head_dim**0.3


def attention_row(seq_len: int, heads: int, kv_heads: int, head_dim: int, *,
                  causal: bool = True, batch: int = 1) -> AttentionRow:  # fmt: skip
    keys = seq_len / 2 if causal else seq_len
    flops = 2.0 * batch * seq_len * heads * 2 * head_dim * keys
    rate = attention_law(seq_len, batch * heads, heads // kv_heads, head_dim)
    return AttentionRow(
        batch=batch, seq_len=seq_len, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        causal=causal, dtype="bf16", gqa="native" if heads != kv_heads else "none",
        backend="flash", forward=timing(flops / rate), backward=timing(2.5 * flops / (rate / 2)),
    )  # fmt: skip


def memory_row(tensor_bytes: int, *, op: str = "copy") -> MemoryRow:
    moved = (2 if op == "copy" else 3) * tensor_bytes
    bandwidth = 1e12 * math.log2(tensor_bytes)  # grows with size, known at each point
    return MemoryRow(
        op=op, dtype="bf16", elements=tensor_bytes // 2, bytes=moved,
        time=timing(moved / bandwidth),
    )  # fmt: skip


def collective_row(nbytes: int, *, op: str = "all_reduce", group_size: int = 2) -> CollectiveRow:
    # latency 20 us + size over 100 GB/s
    return CollectiveRow(
        op=op, group_size=group_size, bytes=nbytes, dtype="bf16", backend="nccl",
        scope="intra_node", time=timing(20e-6 + nbytes / 100e9),
    )  # fmt: skip


def provenance(**changes: Any) -> Provenance:
    fields: dict[str, Any] = {
        "device": "cuda", "gpu_id": "h100-sxm", "gpu_name": "NVIDIA H100 80GB HBM3",
        "gpu_count": 1, "world_size": 1, "nodes": 1, "gpu_total_memory_bytes": 85017493504,
        "compute_capability": "9.0", "driver": "580.159.04", "cuda": "13.0",
        "torch": "2.11.0+cu130", "nccl": "2.28.9", "python": "3.12.3", "hostname": "test",
        "date_utc": "2026-11-23T12:00:00+00:00", "command": ("autopar", "profile"),
        "autopar_version": "0.1.0", "git_commit": None,
    }  # fmt: skip
    fields.update(changes)
    return Provenance(**fields)


def make_profile(**sections: Any) -> KernelProfile:
    prov = sections.pop("provenance", None) or provenance()
    settings = Settings(
        quick=False, sections=("gemm", "attention", "memory", "collectives"), warmup=2,
        min_repeats=5, max_repeats=25, target_point_s=0.03, time_limit_s=420.0,
        timer="cuda_events",
    )  # fmt: skip
    return KernelProfile(provenance=prov, settings=settings, elapsed_s=1.0, **sections)


GRID = (256, 512, 1024, 2048, 4096)
