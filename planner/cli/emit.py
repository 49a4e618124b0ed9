"""``autopar emit``: write launch files for Megatron-LM, DeepSpeed or torchtitan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from planner.cli.files import write_files
from planner.cli.output import console, print_json
from planner.emit import emit_files
from planner.errors import SpecError

TORCHTITAN_FORMATS = {"current": "torchtitan", "0.2": "torchtitan-toml"}


def emit_command(
    plan: Annotated[Path, typer.Argument(help="autopar estimate --json output (or a plan entry).")],
    format: Annotated[
        str, typer.Option("--format", help="megatron | deepspeed | torchtitan.")
    ] = "megatron",
    out: Annotated[Path, typer.Option(help="Directory to write the files into.")] = Path("run"),
    torchtitan_version: Annotated[
        str,
        typer.Option(
            "--torchtitan-version",
            help="current (Python recipe) or 0.2 (TOML job file, releases up to v0.2.2).",
        ),
    ] = "current",
    as_json: Annotated[bool, typer.Option("--json", help="Print the files as JSON.")] = False,
) -> None:
    """Turn a plan into the files a user launches (deterministic: same plan, same bytes).

    Example, for Llama-3.1-70B on 64 H100s (tp 8, pp 4 with 2 virtual stages):

        autopar estimate --model llama-3.1-70b --cluster dgx-h100 --nodes 8 --seq-len 8192
            --global-batch 512 --tp 8 --pp 4 --vpp 2 --recompute selective
            --sequence-parallel --distributed-optimizer --json > plan.json
        autopar emit plan.json --format megatron --out run/

    writes run/launch_megatron.sh (torchrun, rendezvous from MASTER_ADDR, MASTER_PORT,
    NODE_RANK, NNODES) and run/megatron_args.txt with, among the model flags,
    --tensor-model-parallel-size 8 --pipeline-model-parallel-size 4
    --num-virtual-stages-per-pipeline-rank 2 --sequence-parallel --micro-batch-size 1
    --global-batch-size 512 --seq-length 8192 --bf16 --use-distributed-optimizer
    --recompute-granularity selective.
    """
    if not plan.exists():
        raise SpecError(f"emit: plan file not found: {plan}")
    try:
        data = json.loads(plan.read_text())
    except json.JSONDecodeError as error:
        where = f"{error.msg} (line {error.lineno})"
        raise SpecError(f"emit: {plan} is not valid JSON: {where}") from None
    data = plan_entry(data)
    if format == "torchtitan":
        if torchtitan_version not in TORCHTITAN_FORMATS:
            raise SpecError(
                f"--torchtitan-version: unknown '{torchtitan_version}'; known: current, 0.2"
            )
        format = TORCHTITAN_FORMATS[torchtitan_version]
    if as_json:
        print_json(emit_files(data, format=format))
        return
    write_emitted(data, format=format, out=out)


def plan_entry(data: Any) -> Any:
    """The estimate or plan entry to emit: a whole ``autopar plan --json`` result gives its
    best plan. Whether it is a plan at all is ``planner.emit``'s check, one line per fault."""
    if isinstance(data, dict) and "plans" in data:  # autopar plan --json: the best plan
        plans = data["plans"]
        if not isinstance(plans, list) or not plans:
            raise SpecError("emit: the plan file holds no plans ('plans' is not a non-empty list)")
        return plans[0]
    return data


def write_emitted(data: dict[str, Any], *, format: str, out: Path, quiet: bool = False) -> None:
    """Emit ``data`` (an estimate, a plan entry or a whole plan result) into ``out``."""
    files = emit_files(plan_entry(data), format=format)
    write_files(out, files, option="--out")
    if not quiet:
        console().print(f"wrote {', '.join(sorted(files))} to {out}/")
