"""Achievable rates of a GPU: fitted to our measured steps, per the GPU or borrowed.

``rates_for(gpu, dtype)`` returns the GEMM, attention and memory rates and the launch
overhead the time model uses. Where the GPU has measured training steps, the four
efficiencies are fitted to them (``planner.cost.fit``: even runs fit, odd runs held out);
where it has none, the efficiencies fitted on a measured GPU are applied to this GPU's
datasheet peaks, and the source says so. A GEMM/attention profile from ``autopar
profile`` (a later issue) will take precedence over both.
"""

from __future__ import annotations

from functools import cache

from planner.catalog import load_gpu
from planner.cost.compute import Rates
from planner.cost.fit import Efficiencies, Sample, fit_efficiencies
from planner.cost.measured import single_gpu_step_work
from planner.cost.reserve import measured_gpu_for, measured_runs
from planner.errors import SpecError
from planner.specs.hardware import GPUSpec

FIT_DTYPE = "bf16"


@cache
def fitted_efficiencies(gpu_id: str) -> Efficiencies | None:
    """Efficiencies fitted to ``gpu_id``'s measured steps (None without measurements)."""
    runs = measured_runs(gpu_id)
    if not runs:
        return None
    gpu = load_gpu(gpu_id)
    samples = [
        Sample(works=tuple(single_gpu_step_work(run["config"])), measured_s=run["time"]["median_s"])
        for run in runs
    ]
    return fit_efficiencies(
        samples,
        peak_flops=gpu.peak_flops(FIT_DTYPE),
        bandwidth=gpu.hbm_bandwidth_gbps * 1e9,
        source=f"fitted to {len(runs)} measured training steps on {gpu_id}",
    )


def rates_for(gpu: GPUSpec, dtype: str) -> Rates:
    """The rates the time model uses for ``gpu`` computing in ``dtype``."""
    source_gpu = measured_gpu_for(gpu)
    if source_gpu is None:
        raise SpecError(
            f"gpu {gpu.id}: no measured profile to derive achievable rates from "
            "(run benchmarks/measure on a GPU and store the records under hardware_db/profiles)"
        )
    efficiencies = fitted_efficiencies(source_gpu)
    assert efficiencies is not None
    rates = efficiencies.rates(gpu, dtype)
    if source_gpu != gpu.id:
        note = (
            f"efficiencies fitted on {source_gpu} applied to {gpu.id}'s datasheet peaks "
            "(no measurement of this GPU)"
        )
    else:
        note = efficiencies.source
    return Rates(
        gemm_flops=rates.gemm_flops,
        attention_flops=rates.attention_flops,
        memory_bytes_per_s=rates.memory_bytes_per_s,
        kernel_overhead_s=rates.kernel_overhead_s,
        source=(
            f"{note}; GEMM {efficiencies.gemm:.0%} and attention {efficiencies.attention:.0%} "
            f"of the dense peak, memory {efficiencies.memory:.0%} of HBM bandwidth, "
            f"{efficiencies.kernel_overhead_s * 1e6:.1f} us per kernel; held-out error "
            f"{efficiencies.holdout_mape_pct:.1f}% over {efficiencies.runs_holdout} runs"
        ),
    )
