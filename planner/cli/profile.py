"""``autopar profile``: measure this machine's GPU kernels and collectives into one JSON file.

Needs PyTorch (``pip install 'autopar[profile]'``) and a CUDA GPU; ``--allow-cpu``
measures the CPU instead (for tests). Under ``torchrun --nproc_per_node N`` it also
measures collectives across the N processes; every process runs the command and rank 0
writes the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from planner.cli.files import ensure_dir, write_text
from planner.cli.output import console, print_json
from planner.cost.profile_rates import ProfileRates
from planner.cost.profile_schema import KernelProfile
from planner.profile import ProfileOptions, profile_text, run_profile
from planner.profile.runner import SECTIONS


def profile_command(
    out: Annotated[Path, typer.Option(help="JSON file to write the profile to.")],
    quick: Annotated[
        bool, typer.Option("--quick", help="A tiny grid (seconds): for tests and CPUs.")
    ] = False,
    gpu_id: Annotated[
        str | None,
        typer.Option(
            "--gpu-id",
            help="hardware_db GPU id to file the profile under [default: from the GPU's name].",
        ),
    ] = None,
    allow_cpu: Annotated[
        bool, typer.Option("--allow-cpu", help="Measure the CPU when no GPU is visible.")
    ] = False,
    sections: Annotated[
        str, typer.Option(help="Comma-separated subset of: " + ", ".join(SECTIONS) + ".")
    ] = ",".join(SECTIONS),
    time_limit: Annotated[
        float,
        typer.Option(
            "--time-limit",
            help="Seconds after which the remaining points are skipped (and listed as such).",
        ),
    ] = 420.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Measure GEMM, attention, memory-bandwidth, optimizer-step and collective rates.

    Example, one GPU (the default grid is sized for about 3 minutes on an H100; whatever
    is left at --time-limit is skipped and listed), then two GPUs for the collectives:

        autopar profile --out h100.json
        torchrun --standalone --nproc_per_node 2 -m planner profile --out h200x2.json
            --sections collectives
    """
    ensure_dir(out.parent, option="--out")  # before minutes of measuring, not after
    options = ProfileOptions(
        out=out,
        quick=quick,
        gpu_id=gpu_id,
        allow_cpu=allow_cpu,
        sections=tuple(s.strip() for s in sections.split(",") if s.strip()),
        time_limit_s=time_limit,
    )
    profile = run_profile(options, console=Console(stderr=True))
    if profile is None:  # a rank other than 0 under torchrun
        return
    write_text(out, profile_text(profile), option="--out")
    summary = summarize(profile, path=out)
    if as_json:
        print_json(summary)
    else:
        _print_summary(summary)


def summarize(profile: KernelProfile, *, path: Path) -> dict[str, Any]:
    """Counts and headline rates of a profile, for people (and ``--json``)."""
    rates = ProfileRates.of(profile, source=str(path))
    by_dtype: dict[str, list[float]] = {}
    for row in profile.gemm:
        by_dtype.setdefault(row.dtype, []).append(row.flops_per_s)
    gemm = {
        dtype: {"points": len(values), "max_tflops": max(values) / 1e12}
        for dtype, values in sorted(by_dtype.items())
    }
    for dtype in gemm:
        error = rates.gemm_grid_error(dtype)
        gemm[dtype]["grid_error_pct_on_model_shapes"] = error[0] if error else None
    attention = {
        "points": len(profile.attention),
        "max_forward_tflops": max(
            (r.forward_flops / r.forward.median_s / 1e12 for r in profile.attention), default=None
        ),
        "max_backward_tflops": max(
            (r.backward_flops / r.backward.median_s / 1e12 for r in profile.attention),
            default=None,
        ),
    }
    memory = {
        "points": len(profile.memory),
        "max_gbps": max((r.bytes_per_s / 1e9 for r in profile.memory), default=None),
    }
    return {
        "out": str(path),
        "device": profile.provenance.gpu_name or profile.provenance.device,
        "gpu_id": profile.provenance.gpu_id,
        "gemm": gemm,
        "attention": attention,
        "memory": memory,
        "collectives": {"points": len(profile.collectives)},
        "optimizer": {
            "points": len(profile.optimizer),
            "ms_per_billion": _optimizer_rates(profile),
        },
        "skipped": [f"{s.section}: {s.what}: {s.reason}" for s in profile.skipped],
        "elapsed_s": profile.elapsed_s,
    }


def _optimizer_rates(profile: KernelProfile) -> dict[str, float]:
    """Device milliseconds per 10⁹ parameters of each AdamW implementation and dtype, at
    the largest parameter set measured."""
    largest: dict[str, Any] = {}
    for row in profile.optimizer:
        key = f"{row.implementation} {row.dtype}"
        if key not in largest or row.elements > largest[key].elements:
            largest[key] = row
    return {key: row.time.median_s / row.elements * 1e12 for key, row in largest.items()}


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _print_summary(summary: dict[str, Any]) -> None:
    out = console()
    table = Table(title=f"Profile of {summary['device']} (gpu id {summary['gpu_id']})")
    table.add_column("section")
    table.add_column("points", justify="right")
    table.add_column("headline")
    for dtype, gemm in summary["gemm"].items():
        error = gemm["grid_error_pct_on_model_shapes"]
        table.add_row(
            f"gemm {dtype}",
            str(gemm["points"]),
            f"max {_number(gemm['max_tflops'])} TFLOP/s; grid vs model shapes "
            f"{_number(error)}% mean error",
        )
    attention = summary["attention"]
    table.add_row(
        "attention",
        str(attention["points"]),
        f"max forward {_number(attention['max_forward_tflops'])} TFLOP/s, "
        f"backward {_number(attention['max_backward_tflops'])} TFLOP/s",
    )
    memory = summary["memory"]
    table.add_row("memory", str(memory["points"]), f"max {_number(memory['max_gbps'])} GB/s")
    table.add_row("collectives", str(summary["collectives"]["points"]), "")
    optimizer = summary["optimizer"]
    rates = ", ".join(f"{k} {v:,.0f}" for k, v in optimizer["ms_per_billion"].items())
    table.add_row(
        "optimizer", str(optimizer["points"]), f"ms per 10⁹ parameters: {rates}" if rates else ""
    )
    out.print(table)
    for line in summary["skipped"]:
        out.print(f"skipped {line}")
    out.print(f"wrote {summary['out']}; elapsed {summary['elapsed_s']:.1f} s")
