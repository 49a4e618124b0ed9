"""One-GPU micro-benchmarks: matrix products, fused attention, element-wise bandwidth.

Each ``measure_*`` builds its operands on the device (random normal values, seeded once
by the runner), times the operation with :class:`~planner.profile.timing.Timer`, and
returns a row of the profile schema. torch is passed in, never imported here, so
``import planner`` does not need it.

* GEMM (bf16/fp16/fp32): ``torch.mm`` with the operand layout of the row's role (see
  ``GemmRow``). FP8: ``torch._scaled_mm`` on ``float8_e4m3fn`` operands with unit
  tensor-wise scales and bf16 output; cuBLASLt takes A row-major and B column-major
  only, and dimensions that are multiples of 16. Fast accumulation as Transformer
  Engine's default recipe: on for the forward product, off for the two gradients.
* Attention: ``scaled_dot_product_attention`` under ``sdpa_kernel(FLASH_ATTENTION)`` on
  (batch, seq, heads, head_dim) tensors transposed to (batch, heads, seq, head_dim) as a
  model does; grouped-query attention through ``enable_gqa=True``, or, if the kernel
  refuses it, K/V repeated to every head inside the timed call. The backward is timed
  alone: one forward, then ``torch.autograd.grad(..., retain_graph=True)`` repeated.
* Memory: ``copy_`` (read n, write n elements) and ``torch.add(a, b, out=c)`` (read 2n,
  write n). Tensors smaller than the GPU's L2 cache (50 MiB on an H100) may be served
  from it, which is what a training step's small element-wise kernels see too.
"""

from __future__ import annotations

from typing import Any

from planner.cost.profile_schema import AttentionRow, GemmRow, MemoryRow
from planner.profile.grid import AttentionPoint, GemmPoint, MemoryPoint
from planner.profile.timing import Timer

TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
FP8_MULTIPLE = 16
"""cuBLASLt FP8 products need every dimension a multiple of 16 (torch._scaled_mm checks)."""


def torch_dtype(torch: Any, dtype: str) -> Any:
    return getattr(torch, TORCH_DTYPES[dtype])


def fp8_unsupported(torch: Any, device: Any) -> str | None:
    """Why fp8 products cannot be measured here, or None if they can."""
    if device.type != "cuda":
        return "fp8 products are measured on CUDA GPUs only"
    if not hasattr(torch, "_scaled_mm") or not hasattr(torch, "float8_e4m3fn"):
        return f"torch {torch.__version__} has no torch._scaled_mm / float8_e4m3fn"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        return f"compute capability {major}.{minor} has no fp8 tensor cores (8.9 or newer)"
    try:
        _fp8_product(torch, device, 16, 16, 16, fast_accum=True)()
        torch.cuda.synchronize(device)
    except RuntimeError as error:
        return f"torch._scaled_mm failed: {str(error).splitlines()[0]}"
    return None


def _fp8_product(torch: Any, device: Any, m: int, n: int, k: int, *, fast_accum: bool) -> Any:
    e4m3 = torch.float8_e4m3fn
    a = torch.randn(m, k, device=device, dtype=torch.bfloat16).to(e4m3)
    b = torch.randn(n, k, device=device, dtype=torch.bfloat16).to(e4m3).t()  # column-major
    scale = torch.ones((), device=device, dtype=torch.float32)

    def product() -> Any:
        return torch._scaled_mm(
            a, b, scale_a=scale, scale_b=scale, out_dtype=torch.bfloat16, use_fast_accum=fast_accum
        )

    return product


def _product(torch: Any, device: Any, point: GemmPoint) -> Any:
    dt = torch_dtype(torch, point.dtype)
    m, n, k = point.m, point.n, point.k

    def rand(rows: int, cols: int) -> Any:
        return torch.randn(rows, cols, device=device, dtype=dt)

    if point.role in ("forward", "grid"):
        a, b = rand(m, k), rand(n, k).t()  # x · Wᵀ
    elif point.role == "grad_input":
        a, b = rand(m, k), rand(k, n)  # dy · W
    else:
        a, b = rand(k, m).t(), rand(k, n)  # dyᵀ · x
    out = torch.empty(m, n, device=device, dtype=dt)
    return lambda: torch.mm(a, b, out=out)


def measure_gemm(torch: Any, timer: Timer, point: GemmPoint) -> GemmRow:
    fast_accum = None
    if point.dtype == "fp8":
        if any(d % FP8_MULTIPLE for d in (point.m, point.n, point.k)):
            raise ValueError(f"fp8 dimensions must be multiples of {FP8_MULTIPLE}")
        fast_accum = point.role in ("forward", "grid")
        op = _fp8_product(torch, timer.device, point.m, point.n, point.k, fast_accum=fast_accum)
    else:
        op = _product(torch, timer.device, point)
    return GemmRow(
        role=point.role, m=point.m, n=point.n, k=point.k, dtype=point.dtype,
        fast_accum=fast_accum, labels=point.labels, time=timer.measure(op),
    )  # fmt: skip


def measure_attention(torch: Any, timer: Timer, point: AttentionPoint) -> AttentionRow:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    sdpa = torch.nn.functional.scaled_dot_product_attention
    dt, device = torch_dtype(torch, point.dtype), timer.device
    b, s, h, kv, d = point.batch, point.seq_len, point.heads, point.kv_heads, point.head_dim

    def leaf(heads: int) -> Any:
        return torch.randn(b, s, heads, d, device=device, dtype=dt, requires_grad=True)

    q_base, k_base, v_base = leaf(h), leaf(kv), leaf(kv)
    q, k, v = (t.transpose(1, 2) for t in (q_base, k_base, v_base))

    def native() -> Any:
        return sdpa(q, k, v, is_causal=point.causal, enable_gqa=h != kv)

    def repeated() -> Any:
        group = h // kv
        return sdpa(
            q, k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1),
            is_causal=point.causal,
        )  # fmt: skip

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        attend, gqa = native, "native" if h != kv else "none"
        try:
            out = attend()
        except (RuntimeError, TypeError):  # no kernel for it, or a torch before enable_gqa
            if h == kv:
                raise
            attend, gqa = repeated, "repeat_kv"
            out = attend()
        forward = timer.measure(attend)
        grad = torch.randn_like(out)
        inputs = (q_base, k_base, v_base)
        backward = timer.measure(lambda: torch.autograd.grad(out, inputs, grad, retain_graph=True))
    return AttentionRow(
        batch=b, seq_len=s, heads=h, kv_heads=kv, head_dim=d, causal=point.causal,
        dtype=point.dtype, gqa=gqa, backend="flash", forward=forward, backward=backward,
    )  # fmt: skip


def measure_memory(torch: Any, timer: Timer, point: MemoryPoint) -> MemoryRow:
    dt, device, n = torch_dtype(torch, point.dtype), timer.device, point.elements
    element = torch.empty((), dtype=dt).element_size()
    a = torch.randn(n, device=device, dtype=dt)
    out = torch.empty_like(a)
    if point.op == "copy":
        moved = 2 * n * element
        op = lambda: out.copy_(a)  # noqa: E731
    else:
        other = torch.randn(n, device=device, dtype=dt)
        moved = 3 * n * element
        op = lambda: torch.add(a, other, out=out)  # noqa: E731
    return MemoryRow(
        op=point.op, dtype=point.dtype, elements=n, bytes=moved, time=timer.measure(op)
    )
