"""One-GPU micro-benchmark of the optimizer step: ``torch.optim.AdamW`` per implementation.

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
torch is passed in, never imported here.
"""

from __future__ import annotations

import time
from typing import Any

from planner.cost.profile_schema import OptimizerRow
from planner.profile.grid import OptimizerPoint
from planner.profile.kernels import torch_dtype
from planner.profile.timing import Timer, summarize

LEARNING_RATE = 1e-4
WEIGHT_DECAY = 0.1
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
