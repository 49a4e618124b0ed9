"""The result of ``planner.scattering``: what ``autopar scatter --json`` prints and
``POST /v1/scatter`` stores. Times in seconds, memory in GiB (2^30 bytes) per GPU."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class SPGroup(_Frozen):
    """One sequence-parallel group of one micro-batch and the sequences it runs, packed."""

    size: int
    placement: Literal["inside node", "across nodes"]
    nodes: int
    exchange: str
    """ulysses (all-to-all), ring (p2p) or none (one GPU)."""
    sequences: list[int]
    """Indices into the batch's lengths."""
    lengths: list[int]
    tokens: int
    time_s: float
    memory_per_gpu_gib: float
    """Model states and what the packed sequences keep, on each GPU of the group."""


class MicroBatch(_Frozen):
    groups: list[SPGroup]
    tokens: int
    time_s: float
    """The slowest group's time."""


class Baseline(_Frozen):
    name: str
    step_time_s: float
    micro_batches: int
    detail: str
    speedup: float
    """Its step time over ours (above 1: scattering is faster)."""


class BatchResult(_Frozen):
    index: int
    sequences: int
    tokens: int
    longest: int
    method: str
    """``scatter`` (the solver's plan), or the baseline it fell back to when that one is
    faster (a static degree is a scattering that keeps one layout for every micro-batch)."""
    step_time_s: float
    """Forward + backward of every micro-batch, one after another."""
    micro_batches: list[MicroBatch]
    status: str
    """The solver's status over the micro-batches: optimal only if every one is."""
    solve_s: float
    buckets: int
    """Length buckets the solver's rows were built from (distinct lengths, at most)."""
    baselines: list[Baseline]


class CostInfo(_Frozen):
    cp_algo: str
    alpha1_s: float
    alpha2_s: float
    bytes_per_token: float
    fixed_gib: float
    capacity_gib: float
    tokens_per_gpu: int
    time_source: str
    memory_source: str


class Summary(_Frozen):
    step_time_s: float
    baselines: dict[str, float]
    speedups: dict[str, float]
    solve_s: float
    solve_max_s: float
    optimal_batches: int
    fallback_batches: int


class ScatterResult(_Frozen):
    model: str
    cluster: str
    gpu: str
    gpus: int
    gpus_per_node: int
    lengths_source: str
    max_seq_len: int | None
    cost: CostInfo
    batches: list[BatchResult]
    summary: Summary


class ScatterSummary(_Frozen):
    """What ``autopar plan --length-dist``/``--seq-lengths`` attaches to the best plan: its
    cluster's batches of the given lengths scattered over SP groups of different sizes,
    against the best single static degree, both priced on the same per-sequence cost
    model (``planner.scattering.cost``: ZeRO-3 with Ulysses or ring exchange, so these
    step times are that model's, not the plan's own ``time`` block)."""

    lengths_source: str
    batches: int
    gpus: int
    max_seq_len: int
    """Documents longer than this (the plan's sequence length) are cut into pieces."""
    step_time_s: float
    """Scattering: every batch's step, summed over the batches."""
    static_step_time_s: float
    """The best static degree per batch, summed the same way."""
    megatron_hybrid_cp_step_time_s: float
    speedup_over_static: float
    static_degrees: list[int]
    """The best static SP/CP degree of each batch."""
    sp_sizes: list[int]
    """SP group sizes the scattering uses (batches that kept a baseline excluded)."""
    wins: bool
    """Scattering's predicted step is shorter than the best static degree's (with
    ``decided_by`` search: hybrid context parallel is, for the plan's own layout)."""
    reason: str
    solve_s: float
    decided_by: Literal["scatter solver", "search"] = "scatter solver"
    """Whose verdict ``wins``, ``reason``, ``speedup_over_static`` and ``sp_sizes`` are:
    the per-batch solver's, or the search's pricing of the plan's layout over the
    lengths (``planner.search.length_pricing``: the plan's full cost model), which then
    decides what the launch files run."""
    search_static_step_time_s: float | None = None
    """The search's expected step of the plan's layout with its static CP."""
    search_hybrid_step_time_s: float | None = None
    """... and with hybrid context parallel (None where the framework or layout has none)."""
