"""Memory that is not the model's: allocator fragmentation, CUDA context, NCCL buffers.

Fragmentation and the non-allocator share (CUDA context, cuBLAS/cuDNN workspaces) come
from our own training-step measurements (``benchmarks/measure``), stored as package data
under ``hardware_db/profiles/<gpu>/<profile>/train_steps.jsonl``:

* fragmentation = median over the measured runs of
  (peak reserved - peak allocated) / peak allocated;
* non-allocator bytes = median of (device memory in use per ``cudaMemGetInfo``) minus
  (memory reserved by PyTorch's caching allocator), read after the timed steps.

A GPU without its own measurement uses the measurement of another GPU (the record says
which), since both numbers are properties of the software stack more than of the chip.

Megatron-LM's allocator pattern (``contiguous-grad-buffer``: the bf16 parameter buffer
and the fp32 gradient buffer are one allocation each, the distributed optimizer's fp32
main parameters and Adam moments are allocated once in the first step and never freed)
gets its fragmentation share from Megatron-Core's own steps instead: the median of
(timed peak reserved - timed peak allocated) / timed peak allocated over the completed
Megatron-Core 0.16.1 steps of the GPU whose attention and allocator settings match the
run's (``megatron_steps.jsonl``, the ``results.json`` runs of the Megatron allocator
snapshots, and ``megatron_fused_steps.jsonl``; a record says its core attention in
``config.core_attention``, absent for the local spec's, and its allocator settings in
``alloc_conf``, empty for the default). Four allocation patterns, each measured on one
H200 (2026-12-03, Llama-3.2-1B/3B shapes at 2048-8192 tokens and the small snapshot
models, recompute none, selective and full):

* unfused attention (the local spec's ``DotProductAttention``), default allocator: 15
  steps, shares 0.4% to 21.6%, median 7.6%. In the snapshots every segment opened after
  the first step is one of the attention's score blocks (batch x heads x s² in bf16, and
  in fp32 for the softmax: 1 and 2 GiB for the Llama-3.2-1B shape at 4096 tokens) or a
  logits-sized block, asked for when the free space such a block used before has been
  split by smaller tensors (the Adam states of the first step among them).
* unfused attention, ``expandable_segments:True``: the 7 snapshot runs with it, 3.1% to
  7.2%, median 5.3%.
* fused attention (the local spec with ``scaled_dot_product_attention``'s flash kernel as
  core attention: no score blocks, as with Transformer Engine's fused attention), default
  allocator: 10 steps, 1.4% to 16.6%, median 6.2%. The score blocks were not the only
  cause: the logits-sized blocks (fp32 logits of 128256-word vocabularies: 2-4 GiB) and
  the MLP's transients still open new segments beside split free ones.
* fused attention, ``expandable_segments:True``: the same 10 steps, 0.01% to 0.46%, median
  0.11%: the segment grows by mapping pages at its end, so a large request reuses the
  freed tail instead of needing a whole free block.

A run with fused attention on a GPU with no fused-attention steps uses the unfused
share (the source says so); expandable segments are used when the launch sets them
(``Runtime.expandable_segments``). No simple share of a part of the peak fits better (a
share of the non-persistent memory only spreads from 0.7% to 89%), so the share stays a
share of the whole allocated peak, with the logits-block floor of ``planner.cost.memory``
(not under expandable segments, where it was measured not to hold).
The plain-PyTorch share and CUDA context still apply where no Megatron-Core step of any
GPU is stored, and for other frameworks, whose expandable-segment share is not measured
(their default-allocator share is kept).

NCCL buffers are derived from NCCL's documented defaults, not measured (no multi-GPU run
is stored yet): per communicator of more than one rank, NCCL allocates for each channel and
each ring neighbour a SIMPLE buffer of ``NCCL_BUFFSIZE`` (4 MiB default, NCCL environment
variable documentation) and LL128/LL buffers of about the same total again; we count
2 neighbours x 16 channels x 2 x 4 MiB = 256 MiB per communicator.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from functools import cache, partial

import hardware_db
from planner.cost.frameworks import StateLayout
from planner.cost.memory import MemoryReserve
from planner.frameworks import get_profile
from planner.specs.hardware import GPUSpec
from planner.specs.layout import ParallelConfig

NCCL_BYTES_PER_COMMUNICATOR = 2 * 16 * 2 * 4 * 2**20
MEASUREMENTS_FILE = "train_steps.jsonl"
VALIDATION_FILE = "validation_steps.jsonl"
MEGATRON_STEPS_FILE = "megatron_steps.jsonl"
"""Megatron-Core steps (``benchmarks/measure/megatron_step.py``)."""
MEGATRON_FUSED_STEPS_FILE = "megatron_fused_steps.jsonl"
"""Megatron-Core steps with a fused core attention (``megatron_step.py --sweep megatron-fused``)."""
SNAPSHOT_RESULTS_FILE = "results.json"
"""Allocator-snapshot runs (``benchmarks/measure/allocator_snapshots.py``): ``{"runs": [...]}``."""

DEEPSPEED_REDUCE_BUCKET_ELEMENTS = 500_000_000
"""``zero_optimization.reduce_bucket_size`` default (deepspeed/runtime/zero/config.py)."""
DEEPSPEED_PREFETCH_BUCKET_ELEMENTS = 50_000_000
"""``stage3_prefetch_bucket_size`` default in the source (the docs' 5e8 is stale)."""


def communication_buckets(*, framework: str, zero_stage: int, states: StateLayout) -> float:
    """Bytes of DeepSpeed's ZeRO bucket buffers at their configured defaults.

    Only a framework whose profile's allocator pattern is ``zero-buckets``
    (``planner.frameworks``) has them.

    Stages 1 and 2 fill a gradient bucket of ``reduce_bucket_size`` elements before each
    reduction (the parameter all-gather bucket of the same size is used only in the
    optimizer step, when the gradient bucket is empty, so one of the two is counted);
    stage 3 adds its prefetch bucket of ``stage3_prefetch_bucket_size`` elements.
    Megatron's buckets are views of its gradient buffer and FSDP2's are the per-layer
    unsharded buffers counted with the gathered weights, so neither adds anything here.
    """
    if get_profile(framework).allocator_pattern != "zero-buckets" or zero_stage == 0:
        return 0.0
    buckets = DEEPSPEED_REDUCE_BUCKET_ELEMENTS * states.grad_bytes
    if zero_stage == 3:
        buckets += DEEPSPEED_PREFETCH_BUCKET_ELEMENTS * states.weight_bytes
    return float(buckets)


@cache
def measured_records(gpu_id: str, file: str = MEASUREMENTS_FILE) -> tuple[dict, ...]:
    """Every training-step record stored for ``gpu_id`` (out-of-memory runs included).

    ``file`` = ``VALIDATION_FILE`` reads the validation sweeps instead: records nothing
    is fitted or calibrated to (``benchmarks/accuracy_measured.py``)."""
    records: list[dict] = []
    for profile in hardware_db.list_profiles(gpu_id):
        path = hardware_db.profiles_dir() / gpu_id / profile / file
        if path.is_file():
            records.extend(
                json.loads(line) for line in path.read_text().splitlines() if line.strip()
            )
    return tuple(records)


@cache
def measured_runs(gpu_id: str) -> tuple[dict, ...]:
    """Measured single-process training steps of ``gpu_id`` that completed."""
    return tuple(
        record
        for record in measured_records(gpu_id)
        if not record.get("oom")
        and record["config"].get("mode", "single") == "single"
        and record["memory"].get("timed_peak_allocated")
    )


@cache
def megatron_steps(
    gpu_id: str, *, fused_attention: bool = False, expandable_segments: bool = False
) -> tuple[dict, ...]:
    """Completed Megatron-Core steps of ``gpu_id`` with the given allocation pattern: fused
    or unfused core attention, expandable segments or the default allocator settings
    (``megatron_steps.jsonl``, ``megatron_fused_steps.jsonl`` and the Megatron runs of
    allocator-snapshot profiles; all carry ``timed_peak_reserved`` and
    ``timed_peak_allocated``)."""
    records = list(measured_records(gpu_id, MEGATRON_STEPS_FILE))
    records.extend(measured_records(gpu_id, MEGATRON_FUSED_STEPS_FILE))
    for profile in hardware_db.list_profiles(gpu_id):
        path = hardware_db.profiles_dir() / gpu_id / profile / SNAPSHOT_RESULTS_FILE
        if path.is_file():
            records.extend(json.loads(path.read_text()).get("runs", []))
    return tuple(
        record
        for record in records
        if not record.get("oom")
        and "error" not in record
        and (record.get("config") or {}).get("framework") == "megatron"
        and _is_fused(record) == fused_attention
        and _allocator(record) == ("expandable" if expandable_segments else "default")
        and (record.get("memory") or {}).get("timed_peak_allocated")
    )


def _is_fused(record: dict) -> bool:
    """Whether a Megatron-Core record's core attention is a fused kernel (not the local
    spec's unfused ``DotProductAttention``, which records before the option name by
    leaving ``core_attention`` out)."""
    return record["config"].get("core_attention", "local") != "local"


def _allocator(record: dict) -> str:
    """``"default"``, ``"expandable"`` (``expandable_segments:True`` alone) or ``"other"``:
    the allocator settings the record's process ran with."""
    conf = (record.get("alloc_conf") or "").replace(" ", "").lower()
    if not conf:
        return "default"
    return "expandable" if conf == "expandable_segments:true" else "other"


def _fragmentation(runs: tuple[dict, ...]) -> float:
    """Median of (timed peak reserved / timed peak allocated - 1) over ``runs``."""
    return statistics.median(
        r["memory"]["timed_peak_reserved"] / r["memory"]["timed_peak_allocated"] - 1 for r in runs
    )


def measured_gpu_for(gpu: GPUSpec) -> str | None:
    """``gpu`` itself when it has measured steps, else the first GPU that has (or None)."""
    return _first_with(measured_runs, gpu.id)


@cache
def usable_capacity_bytes(gpu: GPUSpec) -> tuple[float, str]:
    """Memory the driver gives PyTorch (``total_memory``) where measured, else the datasheet.

    An "80 GB" H100 reports 85,017,493,504 bytes (79.2 GiB), not 80 GiB: part of the HBM
    is held back by the driver. Only a measurement of the same GPU is used.
    """
    totals = [
        r["provenance"]["gpu_total_memory_bytes"]
        for r in measured_runs(gpu.id)
        if r["provenance"].get("gpu_total_memory_bytes")
    ]
    if totals:
        return float(statistics.median(totals)), "measured total_memory"
    return float(gpu.memory_bytes), "datasheet"


def _megatron_fragmentation(
    gpu_id: str, *, fused_attention: bool, expandable_segments: bool
) -> tuple[float, str] | None:
    """The Megatron-Core share for the run's allocation pattern and the words saying which
    pattern it was measured on; a fused-attention run without fused-attention steps falls
    back to the unfused ones of the same allocator setting. None: no step of any GPU."""
    allocator = "expandable segments" if expandable_segments else "the default allocator"
    for fused in (True, False) if fused_attention else (False,):
        pattern = {"fused_attention": fused, "expandable_segments": expandable_segments}
        source_gpu = _first_with(partial(megatron_steps, **pattern), gpu_id)
        if source_gpu is None:
            continue
        steps = megatron_steps(source_gpu, **pattern)
        attention = "fused" if fused else "unfused"
        if fused_attention and not fused:
            attention += " (no fused-attention step measured)"
        return _fragmentation(steps), (
            f"Megatron-Core steps with {attention} attention and {allocator} on "
            f"{source_gpu} ({len(steps)} runs)"
        )
    return None


def memory_reserve(
    gpu: GPUSpec,
    *,
    layout: ParallelConfig,
    framework: str = "pytorch",
    fused_attention: bool = True,
    expandable_segments: bool = False,
) -> MemoryReserve:
    """Fragmentation and fixed reserve for ``gpu`` running ``layout`` under ``framework``
    (its allocator pattern picks the measurements the fragmentation share comes from; for
    Megatron, also whether the core attention is fused and whether the launch sets
    ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``)."""
    communicators = sum(
        degree > 1 for degree in (layout.tp, layout.cp, layout.dp or 1, layout.pp, layout.ep)
    )
    nccl = communicators * NCCL_BYTES_PER_COMMUNICATOR
    measured = _measured_reserve(
        gpu.id,
        get_profile(framework).allocator_pattern,
        fused_attention=fused_attention,
        expandable_segments=expandable_segments,
    )
    if measured is None:
        return MemoryReserve(
            fragmentation=0.0,
            non_allocator_bytes=nccl,
            source="No measured profile: fragmentation and CUDA context not included.",
        )
    fragmentation, non_allocator, words, logits_floor = measured
    return MemoryReserve(
        fragmentation=fragmentation,
        non_allocator_bytes=non_allocator + nccl,
        logits_floor=logits_floor,
        source=(
            f"Reserve: {words}"
            + (f", NCCL buffers {nccl / 2**30:.2f} GiB (NCCL defaults)" if nccl else "")
            + "."
        ),
    )


@cache
def _measured_reserve(
    gpu_id: str, allocator_pattern: str, *, fused_attention: bool, expandable_segments: bool
) -> tuple[float, float, str, bool] | None:
    """(fragmentation share, CUDA context bytes, their source in words, whether the
    logits-block floor applies) measured for ``gpu_id`` under a framework with
    ``allocator_pattern`` (and, for Megatron, the run's attention and allocator setting);
    None without measurements. The same for every layout, so computed once per GPU and
    pattern (the medians over the measured runs cost more than the rest of a layout's
    preparation)."""
    source_gpu = _first_with(measured_runs, gpu_id)
    if source_gpu is None:
        return None
    runs = measured_runs(source_gpu)
    fragmentation = _fragmentation(runs)
    non_allocator = statistics.median(
        [r["memory"]["non_allocator_bytes"] for r in runs if "non_allocator_bytes" in r["memory"]]
        or [0.0]
    )
    words = (
        f"fragmentation {fragmentation:.1%} and CUDA context {non_allocator / 2**30:.2f} GiB "
        f"measured on {source_gpu} ({len(runs)} runs)"
    )
    megatron = (
        _megatron_fragmentation(
            gpu_id, fused_attention=fused_attention, expandable_segments=expandable_segments
        )
        if allocator_pattern == "contiguous-grad-buffer"
        else None
    )
    logits_floor = True
    if megatron is not None:
        fragmentation, pattern = megatron
        logits_floor = not expandable_segments
        words = (
            f"fragmentation {fragmentation:.1%} measured on {pattern}, CUDA context "
            f"{non_allocator / 2**30:.2f} GiB on {source_gpu} ({len(runs)} runs)"
        )
    elif expandable_segments:
        words += " (default allocator: expandable segments not measured for this framework)"
    return fragmentation, non_allocator, words, logits_floor


def _first_with(records: Callable[[str], tuple[dict, ...]], gpu_id: str) -> str | None:
    """``gpu_id`` itself when ``records`` has some for it, else the first GPU that has."""
    if records(gpu_id):
        return gpu_id
    return next((other for other in hardware_db.list_gpus() if records(other)), None)
