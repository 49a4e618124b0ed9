"""Empirical re-ranking: measure the top candidates with short real training steps.

``measure_candidates`` runs each candidate layout through the measuring script
(``benchmarks/measure/train_step.py`` of a source checkout: plain PyTorch Llama-style
steps, ``--steps`` optimizer steps of which ``--warmup`` are untimed) on the local GPUs,
then ranks the candidates by measured median step time and says whether that ranking is
the predicted one (Kendall's tau between the two orders).

What the script can run, and so what can be measured: a dense Llama-style model (gated
SwiGLU MLP, RMSNorm, RoPE, no biases, no MoE or MLA), recomputation none or full, and a
layout whose only parallelism is one of data parallel (DDP), tensor parallel or pipeline
parallel over every local GPU, or none on one GPU. A candidate outside that is reported
as not measurable, with the reason, never dropped silently.

The prediction it is compared with is the cost model's for the same layout under
``framework="pytorch"`` (eager PyTorch with autocast, the software the script runs), so
measured and predicted describe the same program.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict

from planner.errors import SpecError
from planner.predict import estimate
from planner.resolved import CONFIG_SCHEMA, ResolvedConfig
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import ParallelConfig
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec

MEASURE_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "measure" / "train_step.py"
"""The measuring script in a source checkout (the installed wheel does not ship it)."""
MEASURE_PRECISION = "bf16-autocast"
"""The script's precision matching ``framework="pytorch"``'s default state layout."""
MODES = {"dp": "ddp", "tp": "tp", "pp": "pp"}


class MeasuredCandidate(BaseModel):
    """One candidate: its layout, the predicted and the measured step (or why not)."""

    model_config = ConfigDict(frozen=True)

    rank_predicted: int
    config: Annotated[ResolvedConfig, CONFIG_SCHEMA]
    predicted_step_s: float
    measured_step_s: float | None = None
    measured_peak_gib: float | None = None
    rank_measured: int | None = None
    note: str = ""


class HardwareRanking(BaseModel):
    """The candidates in predicted order, their measured ranks and the agreement."""

    model_config = ConfigDict(frozen=True)

    candidates: list[MeasuredCandidate]
    measured: int
    kendall_tau: float | None
    """Rank correlation of predicted and measured order over the measured candidates
    (1: same order, -1: reversed); None with fewer than two measured."""
    same_order: bool | None
    device: str


def measurable(model: ModelSpec, layout: ParallelConfig, *, gpus: int) -> str | None:
    """Why the measuring script cannot run this candidate, or None if it can."""
    if model.moe is not None or model.mla is not None:
        return "the measuring script runs dense Llama-style models only (no MoE, no MLA)"
    if (
        model.mlp_activation != "swiglu"
        or model.normalization != "rmsnorm"
        or model.position_embedding != "rope"
    ):
        return "the measuring script runs SwiGLU, RMSNorm and RoPE models only"
    if layout.recompute == "selective":
        return "the measuring script recomputes none or full layers, not selective"
    if layout.recompute == "full" and (layout.recompute_num_layers or 1) != 1:
        return "the measuring script recomputes every layer (full, one layer per group)"
    if layout.vpp or layout.first_stage_layers or layout.last_stage_layers:
        return "the measuring script splits layers evenly without virtual stages"
    degrees = {"dp": layout.dp or 1, "tp": layout.tp, "pp": layout.pp}
    if layout.cp > 1 or layout.ep > 1:
        return "the measuring script has no context or expert parallelism"
    parallel = [name for name, degree in degrees.items() if degree > 1]
    if len(parallel) > 1:
        return f"the measuring script runs one kind of parallelism at a time, not {parallel}"
    if parallel and degrees[parallel[0]] != gpus:
        return f"{parallel[0]} {degrees[parallel[0]]} does not use all {gpus} local GPUs"
    return None


def script_arguments(
    model: ModelSpec, layout: ParallelConfig, workload: WorkloadSpec, *, device: str, steps: int
) -> list[str]:
    """The measuring script's flags for this candidate (shape, batch, layout, device)."""
    dp = layout.dp or 1
    accumulation = workload.sequences_per_step // (layout.mbs * dp)
    parallel = [name for name in ("dp", "tp", "pp") if {"dp": dp, "tp": layout.tp,
                                                         "pp": layout.pp}[name] > 1]  # fmt: skip
    arguments = [
        "--num-layers", str(model.num_layers), "--hidden-size", str(model.hidden_size),
        "--num-attention-heads", str(model.num_attention_heads),
        "--num-kv-heads", str(model.kv_heads), "--ffn-hidden-size", str(model.ffn_hidden_size),
        "--vocab-size", str(model.vocab_size), "--seq-len", str(workload.seq_len),
        "--mbs", str(layout.mbs), "--grad-accum", str(accumulation),
        "--recompute", "full" if layout.recompute == "full" else "none",
        "--precision", MEASURE_PRECISION, "--steps", str(steps), "--warmup", "2",
        "--mode", MODES[parallel[0]] if parallel else "single", "--device", device,
        "--no-census",
    ]  # fmt: skip
    if model.tie_embeddings:
        arguments.append("--tie-embeddings")
    return arguments


def measure_candidates(
    configs: Sequence[ResolvedConfig],
    *,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    device: str = "cuda",
    steps: int = 6,
    script: Path = MEASURE_SCRIPT,
) -> HardwareRanking:
    """Measure ``configs`` (best predicted first) on this machine and rank them."""
    if not script.is_file():
        raise SpecError(
            f"--refine-on-hardware: the measuring script {script} is not here; it ships with "
            "a source checkout of autopar (benchmarks/measure/train_step.py)"
        )
    rows = []
    for config in configs:
        layout = config.layout
        predicted = estimate(
            model=model, cluster=cluster, workload=workload, layout=layout, framework="pytorch"
        ).time.step_time_s
        reason = measurable(model, layout, gpus=cluster.num_gpus)
        measured: Outcome = (None, None, reason or "")
        if reason is None:
            arguments = script_arguments(model, layout, workload, device=device, steps=steps)
            measured = _run(script, arguments, gpus=cluster.num_gpus)
        rows.append((config, predicted, *measured))
    return _ranked(rows, device=device)


Outcome = tuple[float | None, float | None, str]
"""Measured median step seconds, peak allocated GiB, and why not (empty when measured)."""


def _run(script: Path, arguments: list[str], *, gpus: int) -> Outcome:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "step.jsonl"
        launcher = [sys.executable]
        if gpus > 1:
            launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]
        command = [*launcher, str(script), *arguments, "--out", str(out)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if not out.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return None, None, f"the measurement failed: {last}"
        record = json.loads(out.read_text().splitlines()[-1])
    if record.get("oom"):
        return None, None, "ran out of memory"
    peak = record["memory"].get("timed_peak_allocated")
    return record["time"]["median_s"], (peak / 2**30 if peak else None), ""


def _ranked(rows: list[tuple], *, device: str) -> HardwareRanking:
    measured = sorted(
        (i for i, row in enumerate(rows) if row[2] is not None), key=lambda i: rows[i][2]
    )
    rank_of = {index: rank for rank, index in enumerate(measured)}
    candidates = [
        MeasuredCandidate(
            rank_predicted=i, config=config, predicted_step_s=predicted,
            measured_step_s=step, measured_peak_gib=peak, rank_measured=rank_of.get(i),
            note=note,
        )
        for i, (config, predicted, step, peak, note) in enumerate(rows)
    ]  # fmt: skip
    order = sorted(measured)  # predicted order of the measured candidates
    tau = _kendall_tau([rows[i][1] for i in order], [rows[i][2] for i in order])
    return HardwareRanking(
        candidates=candidates,
        measured=len(measured),
        kendall_tau=tau,
        same_order=None if len(measured) < 2 else measured == order,
        device=device,
    )


def _kendall_tau(predicted: list[float], measured: list[float]) -> float | None:
    """Kendall's tau-a of two equally long lists (pairs tied in either count as neither)."""
    n = len(predicted)
    if n < 2:
        return None
    score = 0
    for i in range(n):
        for j in range(i + 1, n):
            a = (predicted[i] > predicted[j]) - (predicted[i] < predicted[j])
            b = (measured[i] > measured[j]) - (measured[i] < measured[j])
            score += a * b
    return score / (n * (n - 1) / 2)
