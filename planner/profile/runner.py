"""Run a whole profile: set up the device (and processes), measure each section, write JSON.

Order: under ``torchrun`` with several processes, the collectives first (every process
takes part), then the process group is closed and only rank 0 goes on with the one-GPU
sections: memory bandwidth, attention, GEMMs (per dtype, the interpolation grid before
the model shapes), then the host's copies and CPU optimizer step and the optimizer step on
the GPU (their tensors are released after each point).
A GPU is first kept busy with bf16 products for about a second
so the clocks are up before anything is recorded.

A point that fails with a ``RuntimeError`` (out of memory even after the allocator's
cache was emptied and the point retried, a kernel that refuses the shape) is recorded
under ``skipped`` with the error's first line, and the run goes on.
When ``time_limit_s`` has passed, the remaining points of every section are recorded as
skipped (one entry per section, with the count), so a run always ends with a file.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

import hardware_db
from planner.cost.profile_schema import KernelProfile, Settings, Skipped
from planner.errors import AutoparError, UnknownNameError
from planner.profile import kernels, provenance
from planner.profile.collectives import Collectives
from planner.profile.grid import Grid, build_grid
from planner.profile.optimizer import measure_host, measure_optimizer
from planner.profile.timing import Timer, TimerSettings

SECTIONS = ("collectives", "memory", "attention", "gemm", "optimizer", "host")
WARM_UP_GPU_S = 1.0
PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=30)


class ProfilerUnavailable(AutoparError):
    """The profiler cannot run here: no PyTorch, or no GPU without ``--allow-cpu``."""


@dataclass(frozen=True)
class ProfileOptions:
    out: Path
    quick: bool = False
    gpu_id: str | None = None
    allow_cpu: bool = False
    sections: tuple[str, ...] = SECTIONS
    time_limit_s: float = 420.0


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ProfilerUnavailable(
            "autopar profile needs PyTorch, which is not installed: pip install 'autopar[profile]'"
        ) from None
    return torch


def check_options(options: ProfileOptions) -> None:
    unknown = [s for s in options.sections if s not in SECTIONS]
    if unknown or not options.sections:
        raise AutoparError(
            f"--sections: unknown section(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(SECTIONS)}"
        )
    if options.gpu_id is not None and options.gpu_id not in hardware_db.list_gpus():
        raise UnknownNameError(
            f"--gpu-id: unknown GPU {options.gpu_id!r}; known: "
            + ", ".join(hardware_db.list_gpus())
        )
    if options.time_limit_s <= 0:
        raise AutoparError(f"--time-limit must be positive, got {options.time_limit_s}")


def pick_device(torch: Any, *, allow_cpu: bool) -> Any:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if not allow_cpu:
        raise ProfilerUnavailable(
            f"autopar profile needs a CUDA GPU and PyTorch {torch.__version__} sees none "
            "(CUDA build: " + (torch.version.cuda or "none") + "); pass --allow-cpu to "
            "measure the CPU instead (for tests only)"
        )
    return torch.device("cpu")


class _Run:
    """The state of one run: timer, deadline, rows and skips, progress."""

    def __init__(self, torch: Any, timer: Timer, deadline: float, progress: Progress) -> None:
        self.torch, self.timer, self.deadline, self.progress = torch, timer, deadline, progress
        self.rows: dict[str, list[Any]] = {s: [] for s in SECTIONS}
        self.skipped: list[Skipped] = []
        self.task = progress.add_task("starting", total=0)

    def section(
        self,
        name: str,
        points: Sequence[Any],
        measure: Callable[[Any], Any | None],
        *,
        agree: Callable[[bool], bool] | None = None,
    ) -> None:
        """Measure ``points`` in order, recording rows, failures and what time left out.

        ``agree`` makes the time-limit decision collective (every process must stop at the
        same point or the others wait forever); collectives' errors are not caught, for
        the same reason: a failure on one process must end them all.
        """
        start, skipped = time.monotonic(), len(self.skipped)
        self._measure(name, points, measure, agree)
        if not self.progress.disable:
            self.progress.console.print(
                f"{name}: {len(self.rows[name])} measured, {len(self.skipped) - skipped} "
                f"skipped in {time.monotonic() - start:.1f} s"
            )

    def _measure(
        self,
        name: str,
        points: Sequence[Any],
        measure: Callable[[Any], Any | None],
        agree: Callable[[bool], bool] | None,
    ) -> None:
        catch = () if agree is not None else (RuntimeError, ValueError)
        for index, point in enumerate(points):
            late = time.monotonic() > self.deadline
            if agree(late) if agree is not None else late:
                self._out_of_time(name, points[index:])
                return
            self.progress.update(self.task, description=point.describe())
            try:
                row = self._with_retry(measure, point) if not agree else measure(point)
            except catch as error:
                self.skipped.append(
                    Skipped(section=name, what=point.describe(), reason=_first_line(error))
                )
                self.release()
            else:
                if row is not None:
                    self.rows[name].append(row)
            self.progress.advance(self.task)

    def _with_retry(self, measure: Callable[[Any], Any | None], point: Any) -> Any | None:
        """``measure(point)``, once more after emptying the allocator's cache on an OOM.

        Points of very different sizes follow each other, so the caching allocator can
        hold enough free but fragmented blocks to refuse a large operand that would fit.
        """
        try:
            return measure(point)
        except RuntimeError as error:
            if "out of memory" not in str(error).lower():
                raise
        self.release()
        return measure(point)

    def _out_of_time(self, name: str, remaining: Sequence[Any]) -> None:
        self.skipped.append(
            Skipped(
                section=name,
                what=f"{len(remaining)} points, from {remaining[0].describe()}",
                reason="the time limit (--time-limit) was reached",
            )
        )
        self.progress.advance(self.task, len(remaining))

    def release(self) -> None:
        if self.timer.cuda:
            self.torch.cuda.empty_cache()


def _released(run: _Run, row: Any) -> Any:
    """``row``, after giving the point's tensors back to the device (up to 16 GiB each)."""
    run.release()
    return row


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _warm_gpu(torch: Any, device: Any) -> None:
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    start = time.monotonic()
    while time.monotonic() - start < WARM_UP_GPU_S:
        for _ in range(10):
            a @ a
        torch.cuda.synchronize(device)


def _gemm_dtypes(torch: Any, device: Any, skipped: list[Skipped]) -> tuple[str, ...]:
    reason = kernels.fp8_unsupported(torch, device)
    if reason is None:
        return ("bf16", "fp8")
    skipped.append(Skipped(section="gemm", what="fp8 products", reason=reason))
    return ("bf16",)


def run_profile(options: ProfileOptions, *, console: Console) -> KernelProfile | None:
    """Measure what ``options`` asks for; the profile on rank 0 (None on other ranks)."""
    check_options(options)
    torch = import_torch()
    device = pick_device(torch, allow_cpu=options.allow_cpu)
    started = time.monotonic()
    world = int(os.environ.get("WORLD_SIZE", 1))
    distributed = world > 1
    if distributed:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend, timeout=PROCESS_GROUP_TIMEOUT)
    rank = torch.distributed.get_rank() if distributed else 0
    torch.manual_seed(0)
    settings = TimerSettings.for_run(quick=options.quick, device=device.type)
    timer = Timer(torch, device, settings)
    skipped: list[Skipped] = []
    dtypes = _gemm_dtypes(torch, device, skipped) if "gemm" in options.sections else ("bf16",)
    grid = build_grid(quick=options.quick, gemm_dtypes=dtypes, world_size=world)
    record = provenance.collect(torch, device, gpu_id=options.gpu_id, world_size=world)
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=rank != 0,
        transient=True,
    )  # fmt: skip
    with progress:
        run = _Run(torch, timer, started + options.time_limit_s, progress)
        run.skipped += skipped
        run.progress.update(run.task, total=_point_count(grid, options.sections, rank=rank))
        if "collectives" in options.sections:
            _measure_collectives(run, grid, torch=torch, world=world)
        if distributed:
            torch.distributed.destroy_process_group()
        if rank == 0:
            _measure_kernels(run, grid, options, torch=torch, device=device)
    if rank != 0:
        return None
    return KernelProfile(
        provenance=record,
        settings=Settings(
            quick=options.quick, sections=options.sections, warmup=settings.warmup,
            min_repeats=settings.min_repeats, max_repeats=settings.max_repeats,
            target_point_s=settings.target_point_s, time_limit_s=options.time_limit_s,
            timer="cuda_events" if timer.cuda else "perf_counter",
        ),
        gemm=tuple(run.rows["gemm"]), attention=tuple(run.rows["attention"]),
        memory=tuple(run.rows["memory"]), collectives=tuple(run.rows["collectives"]),
        optimizer=tuple(run.rows["optimizer"]), host=tuple(run.rows["host"]),
        skipped=tuple(run.skipped), elapsed_s=time.monotonic() - started,
    )  # fmt: skip


def _point_count(grid: Grid, sections: Sequence[str], *, rank: int) -> int:
    return sum(len(getattr(grid, s)) for s in sections if s == "collectives" or rank == 0)


def _measure_collectives(run: _Run, grid: Grid, *, torch: Any, world: int) -> None:
    if world < 2:
        run.skipped.append(
            Skipped(
                section="collectives",
                what="every collective",
                reason="one process: launch with torchrun --nproc_per_node N (N > 1)",
            )
        )
        return
    sizes = sorted({p.group_size for p in grid.collectives})
    collectives = Collectives(torch, run.timer, sizes)
    run.section("collectives", grid.collectives, collectives.measure, agree=collectives.any_rank)
    torch.distributed.barrier()


def _measure_kernels(
    run: _Run, grid: Grid, options: ProfileOptions, *, torch: Any, device: Any
) -> None:
    wanted, timer = options.sections, run.timer
    if device.type == "cuda" and not options.quick:
        run.progress.update(run.task, description="warming up the GPU")
        _warm_gpu(torch, device)
    if "memory" in wanted:
        run.section("memory", grid.memory, lambda p: kernels.measure_memory(torch, timer, p))
    if "attention" in wanted:
        run.section(
            "attention", grid.attention, lambda p: kernels.measure_attention(torch, timer, p)
        )
    if "gemm" in wanted:
        run.section("gemm", grid.gemm, lambda p: kernels.measure_gemm(torch, timer, p))
    if "host" in wanted:
        run.section("host", grid.host, lambda p: _released(run, measure_host(torch, timer, p)))
    if "optimizer" in wanted:
        run.section(
            "optimizer",
            grid.optimizer,
            lambda p: _released(run, measure_optimizer(torch, timer, p)),
        )


def write_profile(profile: KernelProfile, path: Path) -> None:
    """Write the profile as JSON (:func:`profile_text`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(profile_text(profile), encoding="utf-8")


def profile_text(profile: KernelProfile) -> str:
    """The profile as JSON, one row per line (readable diffs, small files)."""
    data = profile.model_dump(mode="json")
    lines = ["{"]
    keys = list(data)
    for index, key in enumerate(keys):
        end = "," if index < len(keys) - 1 else ""
        value = data[key]
        if isinstance(value, list) and value:
            rows = ",\n".join("    " + json.dumps(row) for row in value)
            lines.append(f'  "{key}": [\n{rows}\n  ]{end}')
        else:
            lines.append(f'  "{key}": {json.dumps(value, indent=None)}{end}')
    lines.append("}")
    return "\n".join(lines) + "\n"
