"""Time ``scaled_dot_product_attention`` forward and backward on every SDPA backend.

Standalone (needs only torch): for each backend (cuDNN, FlashAttention-2, memory-efficient,
math) and each shape, one forward is timed by CUDA events around the call, and the backward
alone by replaying ``torch.autograd.grad`` on a kept graph, as ``autopar profile``'s
attention section does for the flash backend (``planner/profile/kernels.py``). Shapes are
(batch, seq, heads, head_dim 128) with K/V already repeated to every head (what a model
that ``repeat_interleave``s grouped K/V before the call runs), causal, bf16. Rows are
written in the kernel-profile schema (``planner/cost/profile_schema.py`` AttentionRow), with
the backend named, to ``--out``; the backend torch picks by default for each shape is
recorded too.

Run: ``python benchmarks/measure/attention_backends.py --out attention.json [--quick]``
(``--quick``: tiny shapes, for a CPU check of the script itself; CPU runs the math backend).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from datetime import UTC, datetime

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}
HEAD_DIM = 128
MATH_MAX_SEQ = 8192
"""The math backend materialises the fp32 (batch, heads, s, s) scores: kept to 8K tokens."""


def summarize(times: list[float]) -> dict:
    ordered = sorted(times)
    n = len(ordered)

    def pct(p: float) -> float:
        x = p * (n - 1)
        lo = math.floor(x)
        hi = min(lo + 1, n - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (x - lo)

    return {"median_s": pct(0.5), "p10_s": pct(0.1), "p90_s": pct(0.9),
            "min_s": ordered[0], "max_s": ordered[-1], "repeats": n}  # fmt: skip


def measure(fn, device, *, target_s: float = 0.05) -> dict:
    for _ in range(2):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    guess = max(time.perf_counter() - start, 1e-6)
    repeats = min(25, max(5, math.ceil(target_s / guess)))
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return summarize(times)


def one_row(backend: str, batch: int, seq: int, heads: int, device, dtype) -> dict:
    def leaf() -> torch.Tensor:
        return torch.randn(batch, seq, heads, HEAD_DIM, device=device, dtype=dtype,
                           requires_grad=True)  # fmt: skip

    bases = (leaf(), leaf(), leaf())
    q, k, v = (t.transpose(1, 2) for t in bases)
    with sdpa_kernel(BACKENDS[backend]):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        forward = measure(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), device)
        grad = torch.randn_like(out)
        backward = measure(lambda: torch.autograd.grad(out, bases, grad, retain_graph=True), device)
    return {"batch": batch, "seq_len": seq, "heads": heads, "kv_heads": heads,
            "head_dim": HEAD_DIM, "causal": True, "dtype": "bf16", "gqa": "none",
            "backend": backend, "forward": forward, "backward": backward}  # fmt: skip


def default_backend(seq: int, heads: int, device, dtype) -> str:
    """The backend SDPA picks with every backend allowed (torch's private chooser)."""
    q = torch.randn(1, heads, seq, HEAD_DIM, device=device, dtype=dtype, requires_grad=True)
    try:
        return SDPBackend(torch._fused_sdp_choice(q, q, q, None, 0.0, True)).name
    except Exception as error:
        return f"unknown ({type(error).__name__})"


def points(quick: bool) -> list[tuple[int, int, int]]:
    if quick:
        return [(1, 64, 2), (2, 128, 2)]
    grid = [(1, s, h) for h in (16, 8) for s in (2048, 4096, 8192, 16384, 32768)]
    grid += [(b, 4096, h) for h in (16, 8) for b in (2, 4, 8)]
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--time-limit", type=float, default=150.0)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16
    backends = list(BACKENDS) if device.type == "cuda" else ["math"]
    began = time.perf_counter()
    rows, skipped = [], []
    for batch, seq, heads in points(args.quick):
        for backend in backends:
            label = f"{backend} b{batch} s{seq} h{heads}"
            if backend == "math" and seq > MATH_MAX_SEQ:
                skipped.append(f"{label}: math backend kept to {MATH_MAX_SEQ} tokens")
                continue
            if time.perf_counter() - began > args.time_limit:
                skipped.append(f"{label}: time limit")
                continue
            try:
                rows.append(one_row(backend, batch, seq, heads, device, dtype))
            except (RuntimeError, torch.OutOfMemoryError) as error:
                skipped.append(f"{label}: {str(error).splitlines()[0][:200]}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
            print(label, "done", flush=True)
    defaults = {f"s{seq} h{heads}": default_backend(seq, heads, device, dtype)
                for _, seq, heads in points(args.quick)}  # fmt: skip
    props = torch.cuda.get_device_properties(0) if device.type == "cuda" else None
    record = {
        "schema_version": 1,
        "kind": "attention_backends",
        "provenance": {
            "gpu_name": props.name if props else "cpu",
            "gpu_total_memory_bytes": props.total_memory if props else 0,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "python": platform.python_version(),
            "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python benchmarks/measure/attention_backends.py --out attention.json",
        },
        "default_backend": defaults,
        "attention": rows,
        "skipped": skipped,
        "elapsed_s": time.perf_counter() - began,
    }
    with open(args.out, "w") as handle:
        json.dump(record, handle, indent=1)


if __name__ == "__main__":
    main()
