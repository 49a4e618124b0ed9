"""Achievable rates of a GPU: a measured kernel profile, calibrated on measured steps.

``rates_for(gpu, dtype, framework)`` returns what the time model uses for one GPU. It is
``rates_from(load_rate_data(gpu, dtype), framework)``: ``load_rate_data`` reads the
catalogue, the kernel profiles, the attention-backend ratios and the measured steps (once
per process), and ``rates_from`` computes the rates from what was read, reading nothing
else:

* every shaped GEMM and fused attention kernel gets the FLOP/s measured for its shape in
  the GPU's kernel profile (``autopar profile``, stored under
  ``hardware_db/profiles/<gpu>/``; interpolated as ``planner.cost.profile_rates``
  documents), element-wise work the streaming bandwidth the profile measured;
* a GPU without its own profile borrows a profiled GPU's curves as fractions of the
  datasheet peaks (FLOP/s scaled by the ratio of dense peaks, bandwidth by the ratio of
  HBM bandwidths), and the source says so;
* the optimizer step gets the device time and host time the profile measured for its
  AdamW implementation and dtype (its device time scaled like bandwidth);
* what a kernel profile cannot give, the host's time per kernel launch (inside and
  outside autograd) and the ratio of in-step to profiled device time, is calibrated on
  the measured training steps (``planner.cost.fit.calibrate_steps``: even runs fit, odd
  runs held out; the result is kept on disk between processes, ``planner.cost.fit_cache``).
  Launch overheads belong to the host and the eager dispatch, so a GPU
  without measured steps uses those of a GPU that has them; the device-time ratio is
  applied to eager PyTorch only (``EAGER_FRAMEWORKS``), the software it was fitted to.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import hardware_db
from planner.catalog import load_gpu
from planner.cost.attention_backends import BackendSpeedups, backend_speedups
from planner.cost.compute import AttentionShape, GemmShape, OptimizerShape, Rates
from planner.cost.fit import Sample, StepCalibration, calibrate_steps
from planner.cost.fit_cache import cached_calibration
from planner.cost.measured import single_gpu_step_phases
from planner.cost.profile_rates import ProfileRates, find_profile
from planner.cost.reserve import measured_gpu_for, measured_runs
from planner.errors import SpecError
from planner.specs.hardware import GPUSpec

FIT_DTYPE = "bf16"
ELEMENTWISE_OP = "add"
"""Element-wise kernels (norms, residual adds, activations) read two tensors and write one,
as the profile's ``add``; the profile's ``copy`` differs from it by under 10% at every size."""
STREAMING_BYTES = 2.0**30
"""Element-wise bandwidth is read at the profile's largest size, 1 GiB per tensor."""
SCALAR_GEMM_SHAPE = GemmShape(4096, 4096, 4096)
"""Where a GEMM has no shape, the rate of this product stands for it (documented fallback)."""
SCALAR_ATTENTION_SHAPE = AttentionShape(
    batch=1, heads=32, kv_heads=8, seq_len=4096, head_dim=128, causal=True, backward=False
)
EAGER_FRAMEWORKS = frozenset({"pytorch"})
"""Frameworks whose steps run the eager PyTorch ops the step calibration was fitted to."""
PROFILE_DTYPES = {"bf16": "bf16", "fp16": "bf16", "fp8": "fp8", "fp32": "bf16"}
"""Compute dtype -> the profile's dtype. fp16 runs on the same tensor-core peak as bf16;
fp8 training keeps attention in bf16 (Transformer Engine), so only its GEMMs use fp8; fp32
(no profile of its own) scales the bf16 curves by the ratio of the dense peaks."""


class ProfiledRates:
    """``compute.ShapeRates`` from a kernel profile, scaled to another GPU where borrowed."""

    def __init__(
        self,
        profile: ProfileRates,
        *,
        gemm_dtype: str,
        flops_scale: float = 1.0,
        bandwidth_scale: float = 1.0,
        optimizer_scale: float = 1.0,
        backends: BackendSpeedups | None = None,
    ) -> None:
        self.profile = profile
        self.backends = backends
        """The attention-backend ratios measured on the profile's GPU (None: none)."""
        self.gemm_dtype = gemm_dtype
        self.flops_scale = flops_scale
        self.bandwidth_scale = bandwidth_scale
        self.optimizer_scale = optimizer_scale
        self._gemm: dict[GemmShape, float] = {}
        self._attention: dict[AttentionShape, float] = {}
        self._memory: dict[float, float] = {}
        self._optimizer: dict[OptimizerShape, tuple[float, float] | None] = {}

    def gemm_flops(self, shape: GemmShape) -> float:
        rate = self._gemm.get(shape)
        if rate is None:
            measured = self.profile.gemm_flops(shape.m, shape.n, shape.k, self.gemm_dtype)
            rate = self._gemm[shape] = measured * self.flops_scale
        return rate

    def attention_flops(self, shape: AttentionShape) -> float:
        rate = self._attention.get(shape)
        if rate is None:
            measured = self.profile.attention(
                seq_len=shape.seq_len,
                heads=shape.heads,
                kv_heads=min(shape.kv_heads, shape.heads),
                head_dim=shape.head_dim,
                causal=shape.causal,
                dtype="bf16",
                batch=max(shape.batch, 1e-9),
            )
            chosen = (
                measured.backward_flops_per_s if shape.backward else measured.forward_flops_per_s
            )
            # another SDPA backend: FlashAttention-2's rate times its measured speed-up
            speedup = self.backends.speedup(shape) if self.backends is not None else None
            rate = self._attention[shape] = chosen * (speedup or 1.0) * self.flops_scale
        return rate

    def memory_bytes_per_s(self, bytes_per_kernel: float) -> float:
        """The bandwidth of the profile's largest element-wise kernels, at every size.

        The profile times each small kernel from the host's launch to its end, so below
        some hundred MiB its figure is launch-bound; the time model charges launches
        separately (``compute.total_time``: the larger of device time and launch time), so
        the device part is the streaming bandwidth of large tensors.
        """
        rate = self._memory.get(bytes_per_kernel)
        if rate is None:
            measured = self.profile.memory_bandwidth(STREAMING_BYTES, ELEMENTWISE_OP)
            rate = self._memory[bytes_per_kernel] = measured * self.bandwidth_scale
        return rate

    def optimizer_time(self, shape: OptimizerShape) -> tuple[float, float] | None:
        """(device, host) seconds of the step as profiled; None if never measured.

        The device time streams ``traffic_ratio`` times the profiled bytes per parameter
        and scales with the HBM bandwidth of the GPU (``optimizer_scale``; it is measured
        as the step itself, so the in-step device-time ratio does not apply); the host
        time is the host's.
        """
        if shape in self._optimizer:
            return self._optimizer[shape]
        found = None
        if self.profile.has_optimizer(shape.implementation, shape.dtype):
            measured = self.profile.optimizer(shape.implementation, shape.dtype)
            device = measured.device_s(shape.params) * shape.traffic_ratio
            found = (device / self.optimizer_scale, measured.host_s(shape.tensors, shape.params))
        self._optimizer[shape] = found
        return found

    def offload_time(self, params: float, *, grad_bytes: int, weight_bytes: int) -> float | None:
        """Optimizer offload as the profile's host section measured it, not overlapped:
        ``params`` gradients copied down at ``grad_bytes`` each, the fused AdamW step over
        them on the CPU in fp32, and the updated weights copied up at ``weight_bytes`` each
        (ZeRO-Offload, Ren et al. 2021, section 4: fp16 gradients down and fp16 parameters
        up, 2M bytes each way for M parameters). The host link and the CPU belong to the
        machine, so a borrowed profile's host rates apply unscaled."""
        if not self.profile.has_host():
            return None
        host = self.profile.host()
        return params * (
            grad_bytes / host.d2h_bytes_per_s
            + host.cpu_adamw_s_per_param
            + weight_bytes / host.h2d_bytes_per_s
        )


def profiled_gpu_for(gpu: GPUSpec, dtype: str) -> tuple[str, ProfileRates] | None:
    """``gpu``'s own kernel profile with GEMMs of ``dtype``, else the first GPU's that has one."""
    wanted = PROFILE_DTYPES.get(dtype)
    if wanted is None:
        return None
    for gpu_id in (gpu.id, *hardware_db.list_gpus()):
        profile = find_profile(gpu_id)
        if (
            profile is not None
            and profile.has_gemm(wanted)
            and profile.has_attention("bf16")
            and profile.has_memory(ELEMENTWISE_OP)
        ):
            return gpu_id, profile
    return None


@cache
def _samples(gpu_id: str) -> tuple[Sample, ...]:
    return tuple(
        Sample(phases=single_gpu_step_phases(run["config"]), measured_s=run["time"]["median_s"])
        for run in measured_runs(gpu_id)
    )


@dataclass(frozen=True)
class RateData:
    """What the rates of one GPU computing in one dtype are computed from, as loaded by
    ``load_rate_data`` (or built by hand: ``rates_from`` reads nothing else)."""

    gpu: GPUSpec
    dtype: str
    profiled_gpu: GPUSpec
    """The GPU the kernel profile was measured on: ``gpu`` itself, or the one it borrows."""
    profile: ProfileRates
    calibration: StepCalibration | None
    """Launch overheads and device-time ratio fitted to measured steps (None: the bare
    profile, which is what the calibration itself is fitted over)."""
    attention_backends: BackendSpeedups
    """The attention backends' speed over FlashAttention-2 measured on ``profiled_gpu``."""


@cache
def step_calibration(gpu_id: str) -> StepCalibration | None:
    """Launch overhead and device-time ratio fitted to ``gpu_id``'s steps over its profile
    (kept on disk between processes, keyed by the data and code: ``cost.fit_cache``)."""
    return cached_calibration(gpu_id, lambda: fit_step_calibration(gpu_id))


def fit_step_calibration(gpu_id: str) -> StepCalibration | None:
    """``step_calibration`` fitted afresh (no cache)."""
    runs = measured_runs(gpu_id)
    found = profiled_gpu_for(load_gpu(gpu_id), FIT_DTYPE)
    if not runs or found is None:
        return None
    profiled_id, profile = found
    uncalibrated = _profiled_rates(
        RateData(
            load_gpu(gpu_id),
            FIT_DTYPE,
            load_gpu(profiled_id),
            profile,
            calibration=None,
            attention_backends=backend_speedups(profiled_id),
        )
    )
    return calibrate_steps(
        _samples(gpu_id),
        uncalibrated,
        source=f"fitted to {len(runs)} measured training steps on {gpu_id}",
    )


def _profiled_rates(data: RateData, *, framework: str = "megatron", source: str = "") -> Rates:
    """``data``'s profile scaled to its GPU, with its calibration's launch overheads and
    (for ``EAGER_FRAMEWORKS``) its device-time ratio; without one: the bare profile."""
    gpu, dtype, profiled, calibration = data.gpu, data.dtype, data.profiled_gpu, data.calibration
    eager = calibration is not None and framework in EAGER_FRAMEWORKS
    device_scale = calibration.device_scale if calibration is not None and eager else 1.0
    shape_rates = ProfiledRates(
        data.profile,
        gemm_dtype=PROFILE_DTYPES[dtype],
        flops_scale=gpu.peak_flops(dtype)  # type: ignore[arg-type]
        / profiled.peak_flops(PROFILE_DTYPES[dtype])  # type: ignore[arg-type]
        / device_scale,
        bandwidth_scale=gpu.hbm_bandwidth_gbps / profiled.hbm_bandwidth_gbps / device_scale,
        optimizer_scale=gpu.hbm_bandwidth_gbps / profiled.hbm_bandwidth_gbps,
        backends=data.attention_backends,
    )
    return Rates(
        gemm_flops=shape_rates.gemm_flops(SCALAR_GEMM_SHAPE),
        attention_flops=shape_rates.attention_flops(SCALAR_ATTENTION_SHAPE),
        memory_bytes_per_s=shape_rates.memory_bytes_per_s(STREAMING_BYTES),
        kernel_overhead_s=calibration.kernel_overhead_s if calibration else 0.0,
        backward_kernel_overhead_s=(
            calibration.backward_kernel_overhead_s if calibration else None
        ),
        plain_kernel_overhead_s=calibration.plain_kernel_overhead_s if calibration else None,
        source=source,
        by_shape=shape_rates,
    )


@cache
def load_rate_data(gpu: GPUSpec, dtype: str) -> RateData:
    """Read what ``gpu``'s rates in ``dtype`` are computed from: the kernel profile (its own,
    else a profiled GPU's), the profiled GPU's catalogue entry and attention-backend
    ratios, and the step calibration (fitted to its own measured steps, else to another
    GPU's). The files are package data: read once per process."""
    source_gpu = measured_gpu_for(gpu)
    if source_gpu is None:
        raise SpecError(
            f"gpu {gpu.id}: no measured training steps to calibrate the time model with "
            "(run benchmarks/measure on a GPU and store the records under hardware_db/profiles)"
        )
    found = profiled_gpu_for(gpu, dtype)
    calibration = step_calibration(source_gpu)
    if found is None or calibration is None:
        raise SpecError(
            f"gpu {gpu.id}: no kernel profile with {dtype} matrix products to time it with "
            "(run `autopar profile` on a GPU and store the file under hardware_db/profiles)"
        )
    profiled_id, profile = found
    return RateData(
        gpu, dtype, load_gpu(profiled_id), profile, calibration, backend_speedups(profiled_id)
    )


@cache
def rates_from(data: RateData, framework: str = "megatron") -> Rates:
    """The rates the time model uses for ``data``'s GPU and dtype under ``framework``.

    The device-time ratio of the step calibration is applied to eager PyTorch
    (``EAGER_FRAMEWORKS``), the software it was fitted to; the fused frameworks run the
    profiled kernels as measured. The launch overhead applies to all (each framework's
    kernel count is its own, see ``planner.graph.build.Implementation``). A pure function
    of its arguments, cached: the time model's own caches key on the ``Rates`` object.
    """
    calibration = data.calibration
    if calibration is None:
        raise ValueError("rates_from needs a step calibration (RateData.calibration)")
    gpu, profiled = data.gpu, data.profiled_gpu
    where = (
        f"kernel profile of {profiled.id} ({data.profile.sources.describe()})"
        if profiled.id == gpu.id
        else f"kernel profile of {profiled.id} scaled to {gpu.id}'s datasheet peaks "
        "(no profile of this GPU)"
    )
    device_scale = calibration.device_scale if framework in EAGER_FRAMEWORKS else 1.0
    source = (
        f"{where}: GEMM and attention by shape, element-wise bandwidth, "
        f"{_optimizer_source(calibration)}; device time x{device_scale:.3f}; host time per "
        f"kernel launch {calibration.kernel_overhead_s * 1e6:.1f} us in the forward, "
        f"{calibration.backward_kernel_overhead_s * 1e6:.1f} us in the backward, "
        f"{calibration.source}, held-out error "
        f"{calibration.holdout_mape_pct:.1f}% over {calibration.runs_holdout} runs"
    )
    return _profiled_rates(data, framework=framework, source=source)


def rates_for(gpu: GPUSpec, dtype: str, framework: str = "megatron") -> Rates:
    """``rates_from(load_rate_data(gpu, dtype), framework)``: the rates the time model uses
    for ``gpu`` computing in ``dtype`` under ``framework`` (the same object on every call)."""
    return rates_from(load_rate_data(gpu, dtype), framework)


def _optimizer_source(calibration: StepCalibration) -> str:
    plain = calibration.plain_kernel_overhead_s
    if plain is None:
        return "the optimizer step as profiled"
    return f"the optimizer step by its bytes, {plain * 1e6:.1f} us per launch"


def transferred_rates(gpu: GPUSpec, from_gpu: str, dtype: str, framework: str) -> Rates:
    """``gpu``'s rates as if only ``from_gpu`` had been measured (its profile, scaled to
    ``gpu``'s peaks, and its calibration): how a GPU without measurements is predicted.
    ``benchmarks/time_measured.py --transfer-from`` checks it on a GPU that was measured."""
    profile = find_profile(from_gpu)
    calibration = step_calibration(from_gpu)
    if profile is None or calibration is None:
        raise SpecError(f"gpu {from_gpu}: needs a kernel profile and measured steps")
    return _profiled_rates(
        RateData(gpu, dtype, load_gpu(from_gpu), profile, calibration, backend_speedups(from_gpu)),
        framework=framework,
        source=f"transferred from {from_gpu}",
    )
