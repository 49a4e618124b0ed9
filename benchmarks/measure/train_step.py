"""Measure peak memory and step time of real training steps of a Llama-style model.

    python benchmarks/measure/train_step.py --preset llama-1b --seq-len 4096 --mbs 2 \\
        --out runs.jsonl
    torchrun --nproc_per_node 2 benchmarks/measure/train_step.py --mode fsdp2 ...

Method. Synthetic uniform random token ids (fixed seed). The model is built and
parallelised (``parallel.py``), then ``steps`` optimizer steps run, each the forward and
backward of ``grad_accum`` micro-batches, ``optimizer.step()`` and
``zero_grad(set_to_none=True)``. Memory readings (bytes, ``torch.cuda``):

- ``after_build``: allocated after the model and optimizer exist (no optimizer state);
- ``first_step_peak_allocated`` / ``_reserved``: peak during step 1, which creates the
  AdamW state; ``after_first_step``: allocated after it (weights + optimizer state);
- ``timed_peak_allocated`` / ``_reserved``: peaks over the timed steps only (stats reset
  after warm-up), the number to compare with a steady-state memory model;
- ``retained_after_forward``: allocated after the first micro-batch's forward and loss,
  minus before it, in the last timed step (everything the forward leaves for the
  backward; not measured under pp);
- ``alloc_retries``: the allocator's cudaMalloc retries during the timed steps (it
  frees its cache and retries when a request does not fit: fragmentation pressure).

Times: each timed step is bracketed by ``torch.cuda.synchronize()`` (and a barrier across
ranks before it) and ``time.perf_counter()``. Inside it (single, ddp, fsdp2, tp), the
host's clock and a CUDA event are noted after the forward (loss included) and the
backward of the last micro-batch,
after ``optimizer.step()`` and after ``zero_grad``, without synchronising: ``time.phases``
gives, per timed step and its median, when the host had issued each phase (``host_s``)
and when the GPU had finished it (``device_s``), from the step's start. After the timed
steps the optimizer state is dropped and, in single mode, a saved-tensor census
(``saved.py``) of one block and the head is recorded. On CPU all memory fields are None;
times are kept for testing only.

Out of memory: ``torch.OutOfMemoryError`` is caught and recorded as ``{"oom": true}``
with the phase and what had been measured. A single-process run (and ``sweep.py``)
frees memory and goes on; under torchrun the failing rank writes its own record and
exits with status 3, which makes torchrun stop the other ranks.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

import record
from llama import Llama
from options import RunOptions, build_parser, check, options_from_args
from parallel import DistContext, Trainer, build_trainer, local_param_count, world_barrier
from saved import model_census

OOM_EXIT_STATUS = 3


@dataclass
class Progress:
    """What a run has reached; kept outside the run so an OOM record can report it."""

    phase: str = "start"
    steps_done: int = 0
    memory: dict[str, int | None] = field(default_factory=dict)
    step_s: list[float] = field(default_factory=list)
    phases: list[dict[str, dict[str, float | None]]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _dtypes(opts: RunOptions) -> dict[str, Any]:
    if opts.precision == "bf16":
        return {
            "param_dtype": "bfloat16",
            "grad_dtype": "bfloat16",
            "optimizer_state_dtype": "bfloat16",
            "compute_dtype": "bfloat16",
            "autocast": False,
            "residual_dtype": "bfloat16",
        }
    fsdp = opts.mode == "fsdp2"
    return {
        "param_dtype": "float32",
        "grad_dtype": "float32",
        "optimizer_state_dtype": "float32",
        "compute_dtype": "bfloat16",
        "autocast": not fsdp,
        "residual_dtype": "bfloat16" if fsdp else "float32",
    }


def _timed_step(trainer: Trainer, device: torch.device, progress: Progress) -> float:
    record.synchronize(device)
    world_barrier()
    trainer.marks = []
    start = time.perf_counter()
    trainer.mark("start")
    trainer.step()
    record.synchronize(device)
    elapsed = time.perf_counter() - start
    progress.phases.append(_phase_times(trainer.marks, start))
    trainer.marks = None
    return elapsed


def _phase_times(
    marks: list[tuple[str, float, Any]], start: float
) -> dict[str, dict[str, float | None]]:
    """Seconds from the step's start to each mark: host clock, and device events."""
    if not marks:
        return {}
    first_event = marks[0][2]
    times: dict[str, dict[str, float | None]] = {}
    for name, host, event in marks[1:]:
        device = None
        if event is not None and first_event is not None:
            device = first_event.elapsed_time(event) / 1e3
        times[name] = {"host_s": host - start, "device_s": device}
    return times


def _phase_summary(phases: list[dict[str, dict[str, float | None]]]) -> dict[str, Any]:
    """The per-step phase times and, per phase, their medians."""
    median: dict[str, dict[str, float | None]] = {}
    for name in phases[0] if phases else {}:
        median[name] = {}
        for clock in ("host_s", "device_s"):
            values = [p[name][clock] for p in phases if p.get(name, {}).get(clock) is not None]
            median[name][clock] = statistics.median(values) if values else None
    return {"steps": phases, "median": median}


def _log_loss(trainer: Trainer, progress: Progress) -> None:
    loss = trainer.last_loss[0]
    if loss is not None:
        progress.losses.append(float(loss))


def _first_and_warmup_steps(
    trainer: Trainer, opts: RunOptions, dev: torch.device, progress: Progress
) -> None:
    mem = progress.memory
    progress.phase = "first_step"
    record.synchronize(dev)
    record.reset_peak(dev)
    trainer.step()
    record.synchronize(dev)
    first = record.peaks(dev)
    _log_loss(trainer, progress)
    mem["first_step_peak_allocated"] = first["peak_allocated"]
    mem["first_step_peak_reserved"] = first["peak_reserved"]
    mem["after_first_step"] = record.allocated(dev)
    progress.steps_done = 1
    progress.phase = "warmup"
    for _ in range(opts.warmup - 1):
        trainer.step()
        _log_loss(trainer, progress)
        progress.steps_done += 1


def _timed_steps(trainer: Trainer, opts: RunOptions, dev: torch.device, progress: Progress) -> None:
    mem = progress.memory
    record.synchronize(dev)
    record.reset_peak(dev)
    progress.phase = "timed"
    retries_before = record.peaks(dev)["alloc_retries"]
    for _ in range(opts.timed_steps):
        progress.step_s.append(_timed_step(trainer, dev, progress))
        _log_loss(trainer, progress)
        progress.steps_done += 1
    timed = record.peaks(dev)
    mem["timed_peak_allocated"] = timed["peak_allocated"]
    mem["timed_peak_reserved"] = timed["peak_reserved"]
    retries_after = timed["alloc_retries"]
    mem["alloc_retries"] = None
    if retries_before is not None and retries_after is not None:
        mem["alloc_retries"] = retries_after - retries_before
    mem["after_timed"] = record.allocated(dev)
    mem.update(record.outside_allocator(dev))
    mem["retained_after_forward"] = trainer.retained_after_forward[0]


def run_steps(opts: RunOptions, ctx: DistContext, progress: Progress) -> None:
    """Build, warm up, time; fill ``progress`` as it goes (see the module docstring)."""
    dev = ctx.device
    progress.memory["allocated_at_start"] = record.allocated(dev)
    progress.phase = "build"
    trainer = build_trainer(opts, ctx)
    progress.extra.update(trainer.info)
    progress.extra["param_count_local"] = local_param_count(trainer.model)
    progress.memory["after_build"] = record.allocated(dev)
    _first_and_warmup_steps(trainer, opts, dev, progress)
    _timed_steps(trainer, opts, dev, progress)
    trainer.optimizer.state.clear()
    if opts.census and opts.mode == "single" and isinstance(trainer.model, Llama):
        progress.phase = "census"
        gc.collect()
        autocast = opts.precision == "bf16-autocast"
        progress.extra["saved_tensors"] = model_census(trainer.model, opts.mbs, autocast=autocast)
    progress.phase = "done"


def _tokens_per_step(opts: RunOptions, world_size: int) -> int:
    data_parallel = world_size if opts.mode in ("ddp", "fsdp2") else 1
    return opts.mbs * opts.grad_accum * opts.model.seq_len * data_parallel


def build_record(
    opts: RunOptions, ctx: DistContext, progress: Progress, oom: str | None
) -> dict[str, Any]:
    """One JSON record of this rank's run."""
    with torch.device("meta"):
        param_count = sum(p.numel() for p in Llama(opts.model).parameters())
    extra = dict(progress.extra)
    saved = extra.pop("saved_tensors", None)
    config = {
        **opts.to_record(),
        "world_size": ctx.world_size,
        "timed_steps": opts.timed_steps,
        "param_count": param_count,
        **_dtypes(opts),
        "optimizer_impl": {
            "name": "torch.optim.AdamW",
            "lr": 1e-4,
            "weight_decay": 0.1,
            "foreach": "default" if opts.foreach else False,
            "fused": False,
        },
        "loss": "cross_entropy(logits.float().view(-1, V), targets.view(-1)) / grad_accum",
        "data": "uniform random token ids, torch.Generator seeded with seed (+ rank)",
        **extra,
    }
    memory: dict[str, Any] = dict(progress.memory)
    if ctx.device.type != "cuda":
        memory["note"] = "CPU run: memory is not measured (all values None)"
    result: dict[str, Any] = {
        "schema": record.SCHEMA,
        "oom": oom is not None,
        "config": config,
        "memory": memory,
        "time": {
            **record.time_summary(progress.step_s, _tokens_per_step(opts, ctx.world_size)),
            "phases": _phase_summary(progress.phases),
        },
        "losses": progress.losses,
        "saved_tensors": saved,
        "provenance": record.provenance(ctx.device, ctx.world_size),
    }
    if oom is not None:
        result["oom_info"] = {
            "phase": progress.phase,
            "steps_done": progress.steps_done,
            "rank": ctx.rank,
            "error": oom,
        }
    return result


def measure(opts: RunOptions, ctx: DistContext) -> dict[str, Any]:
    """Run one configuration; an OOM becomes a record, memory is freed either way."""
    progress = Progress()
    oom: str | None = None
    try:
        run_steps(opts, ctx, progress)
    except torch.OutOfMemoryError as err:
        oom = str(err).splitlines()[0][:500]
        reached = record.peaks(ctx.device)
        progress.memory["peak_allocated_before_oom"] = reached["peak_allocated"]
        progress.memory["peak_reserved_before_oom"] = reached["peak_reserved"]
    gc.collect()
    record.release_cached(ctx.device)
    return build_record(opts, ctx, progress, oom)


def _gather_ranks(result: dict[str, Any]) -> None:
    """Put every rank's memory and times into rank 0's record."""
    mine = {
        "memory": result["memory"],
        "time": result["time"],
        "losses": result["losses"],
        "param_count_local": result["config"].get("param_count_local"),
    }
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    result["per_rank"] = everyone


def setup(opts: RunOptions) -> DistContext:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    check(opts, world)
    if opts.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but torch sees no GPU; use --device cpu")
    if opts.mode == "single":
        device = torch.device("cuda", 0) if opts.device == "cuda" else torch.device("cpu")
        return DistContext(0, 1, device)
    local = int(os.environ["LOCAL_RANK"])
    device = torch.device("cuda", local) if opts.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if device.type == "cuda":
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), device)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        opts = options_from_args(args)
        ctx = setup(opts)
    except ValueError as err:
        parser.error(str(err))
    result = measure(opts, ctx)
    distributed = dist.is_available() and dist.is_initialized()
    if distributed and result["oom"]:
        if opts.out:
            record.append_record(opts.out, result)
        print(f"rank {ctx.rank}: out of memory in {result['oom_info']['phase']}", file=sys.stderr)
        return OOM_EXIT_STATUS
    if distributed:
        _gather_ranks(result)
    if ctx.rank == 0:
        if opts.out:
            record.append_record(opts.out, result)
        summary = result["time"]["median_s"], result["memory"].get("timed_peak_allocated")
        print(f"mode={opts.mode} median_step_s={summary[0]} timed_peak_allocated={summary[1]}")
    if distributed:
        dist.barrier()  # let pending pipeline sends finish before the group goes away
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
