"""One-GPU micro-benchmarks of the optimizer step: AdamW per implementation, and offload.

A training step ends with AdamW over every local parameter: a memory-bound pass (or
several) over weights, gradients and both moments, issued as anything from one fused
multi-tensor kernel to about ten element-wise kernels per tensor. How fast each
implementation streams, and what it costs the host per tensor, depends on the dtype and
on PyTorch's kernels, not only on the GPU's copy bandwidth, so the profile measures it:

* ``per_tensor``: ``AdamW(foreach=False)``, the loop over tensors (``_single_tensor_adamw``);
* ``foreach``: ``AdamW(foreach=True)``, PyTorch's default on GPUs (``_multi_tensor_adamw``:
  ``_foreach_*`` kernels over the lists, plus a temporary for the denominator);
* ``fused``: ``AdamW(fused=True)``, one multi-tensor kernel per launch.

Parameters are ``tensors`` one-dimensional tensors of equal size with random values and
random gradients, all in the point's dtype (as a bf16 run, or an fp32 run under
autocast, keeps them), learning rate 1e-4 and weight decay 0.1 (the measured training
steps' settings, ``benchmarks/measure``). The device time of ``step()`` comes from the
timer (CUDA events); the host time is the wall time of the call itself, started on an
idle GPU (synchronised before each repeat), so it is what issuing the step costs.

Optimizer offload (``measure_host``) moves fp32 gradients to the host, steps there and
moves the weights back: a non-blocking copy between a GPU tensor and a pinned host tensor
each way (timed with CUDA events), and ``AdamW(fused=True)`` on fp32 CPU tensors (four
tensors, gradients random, timed with the wall clock; torch's vectorised, multi-threaded
CPU kernel, as DeepSpeed's CPU Adam and Megatron-LM's hybrid optimizer run a vectorised
Adam on the host). torch is passed in, never imported here.
"""

from __future__ import annotations

import time
from typing import Any

from planner.cost.profile_schema import HostRow, OptimizerRow
from planner.profile.grid import HostPoint, OptimizerPoint
from planner.profile.kernels import torch_dtype
from planner.profile.timing import Timer, TimerSettings, summarize

LEARNING_RATE = 1e-4
WEIGHT_DECAY = 0.1
CPU_ADAMW_TENSORS = 4
CPU_TIMER = TimerSettings(warmup=1, min_repeats=3, max_repeats=5, target_point_s=0.5)
IMPLEMENTATION_FLAGS: dict[str, dict[str, bool]] = {
    "per_tensor": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}


def measure_optimizer(torch: Any, timer: Timer, point: OptimizerPoint) -> OptimizerRow:
    dtype, device = torch_dtype(torch, point.dtype), timer.device
    params = []
    for _ in range(point.tensors):
        param = torch.nn.Parameter(
            torch.randn(point.elements_per_tensor, device=device, dtype=dtype)
        )
        param.grad = torch.randn_like(param)
        params.append(param)
    optimizer = torch.optim.AdamW(
        params,
        lr=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
        **IMPLEMENTATION_FLAGS[point.implementation],
    )
    device_time = timer.measure(optimizer.step)
    host_time = summarize(_host_times(timer, optimizer.step, timer.repeats_for(0.0)))
    return OptimizerRow(
        implementation=point.implementation,
        dtype=point.dtype,
        tensors=point.tensors,
        elements=point.tensors * point.elements_per_tensor,
        time=device_time,
        host=host_time,
    )


def _host_times(timer: Timer, op: Any, repeats: int) -> list[float]:
    """Wall time of each call of ``op``, each started with the device idle."""
    times = []
    for _ in range(repeats):
        timer.synchronize()
        start = time.perf_counter()
        op()
        times.append(time.perf_counter() - start)
    timer.synchronize()
    return times


def measure_host(torch: Any, timer: Timer, point: HostPoint) -> HostRow:
    n, threads = point.elements, torch.get_num_threads()
    if point.op == "cpu_adamw":
        cpu = torch.device("cpu")
        params = []
        for _ in range(CPU_ADAMW_TENSORS):
            param = torch.nn.Parameter(torch.randn(n // CPU_ADAMW_TENSORS, device=cpu))
            param.grad = torch.randn_like(param)
            params.append(param)
        optimizer = torch.optim.AdamW(
            params, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, fused=True
        )
        time_s = Timer(torch, cpu, CPU_TIMER).measure(optimizer.step)
        return HostRow(op="cpu_adamw", elements=n, bytes=16 * n, threads=threads, time=time_s)
    if not timer.cuda:
        raise ValueError("host copies are measured between a CUDA GPU and its host")
    gpu = torch.empty(n, device=timer.device, dtype=torch.float32)
    host = torch.empty(n, dtype=torch.float32, pin_memory=True)
    source, target = (gpu, host) if point.op == "d2h" else (host, gpu)
    time_s = timer.measure(lambda: target.copy_(source, non_blocking=True))
    return HostRow(op=point.op, elements=n, bytes=4 * n, threads=threads, time=time_s)
