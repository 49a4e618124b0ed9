"""Per-category device time of a profiled Megatron-Core step (a trace of ``megatron_profile.py``).

    python benchmarks/measure/megatron_breakdown.py TRACE.json.gz [...] [--json OUT]

Reads the Chrome trace ``torch.profiler`` wrote (plain JSON: no torch needed) and sums
the device time of every kernel, copy and memset of the step by what launched it:

* each GPU event names the host op that launched it (``External id``); the host ops of
  one thread nest by time, so each has a chain of enclosing ops and ranges;
* forward work lies inside a module's ``mod:<name>`` range (``megatron_profile.py`` puts
  one around every module's forward); backward work lies inside the autograd engine's
  ``evaluate_function: <Node>``, whose ``Sequence number`` is that of the forward op that
  made the node, so it is charged to that op's module; work inside a backward node and
  inside a module range is a recomputed forward (``recompute``);
* the step's phases (``phase:zero_grad``, ``phase:forward_backward``,
  ``phase:optimizer``) are ranges on the main thread, matched by time.

The category is the module (layer index dropped) and, inside the attention core and the
optimizer, the ATen op; memory-bound work on attention scores (``b x heads x s x s``)
is told apart from the small tensors by the op's input size. ``idle`` is the step's span
on the GPU minus the union of its GPU events: where the device waited for the host.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections import defaultdict
from typing import Any

GPU_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}
HOST_CATS = {"cpu_op", "user_annotation"}
LAYER = re.compile(r"\.layers\.\d+")


def load(path: str) -> list[dict[str, Any]]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as fh:
        return json.load(fh)["traceEvents"]


class HostIndex:
    """Host events by thread, each with its chain of enclosing events (innermost first)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.by_external: dict[int, dict[str, Any]] = {}
        self.parent: dict[int, dict[str, Any] | None] = {}
        threads: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for e in events:
            if e.get("cat") in HOST_CATS and e.get("ph") == "X":
                threads[e["tid"]].append(e)
        for evs in threads.values():
            evs.sort(key=lambda e: (e["ts"], -e.get("dur", 0)))
            stack: list[dict[str, Any]] = []
            for e in evs:
                while stack and stack[-1]["ts"] + stack[-1].get("dur", 0) <= e["ts"]:
                    stack.pop()
                self.parent[id(e)] = stack[-1] if stack else None
                stack.append(e)
                ext = e.get("args", {}).get("External id")
                if ext is not None and (
                    ext not in self.by_external or e["cat"] == "cpu_op"
                ):  # a cpu_op wins over a range of the same id
                    self.by_external[ext] = e
        self.forward_by_seq: dict[int, dict[str, Any]] = {}
        for evs in threads.values():
            for e in evs:
                args = e.get("args", {})
                seq = args.get("Sequence number")
                if (
                    seq is not None
                    and e["cat"] == "cpu_op"
                    and not e["name"].startswith("autograd::engine")
                    and seq not in self.forward_by_seq
                    and self.module(e) is not None
                ):
                    self.forward_by_seq[seq] = e

    def chain(self, e: dict[str, Any] | None) -> list[dict[str, Any]]:
        out = []
        while e is not None:
            out.append(e)
            e = self.parent.get(id(e))
        return out

    def module(self, e: dict[str, Any]) -> str | None:
        for c in self.chain(e):
            if c["name"].startswith("mod:"):
                return c["name"][4:]
        return None


def short_module(name: str | None) -> str:
    if name is None:
        return "(no module)"
    name = LAYER.sub(".layers.N", name.removeprefix("module.module.").removeprefix("module."))
    return name


def numel(dims: Any) -> int:
    if not isinstance(dims, list) or not dims or not all(isinstance(x, int) for x in dims):
        return 0
    n = 1
    for x in dims:
        n *= x
    return n


def leaf_size(op: dict[str, Any]) -> int:
    dims = op.get("args", {}).get("Input Dims") or []
    return max([numel(d) for d in dims] + [0])


def classify(index: HostIndex, gpu: dict[str, Any], scores: int) -> tuple[str, str, str]:
    """(direction, category, op) of one GPU event."""
    leaf = index.by_external.get(gpu.get("args", {}).get("External id"))
    if leaf is None:
        return "other", "unattributed", gpu["name"][:40]
    chain = index.chain(leaf)
    names = [c["name"] for c in chain]
    phase = next((n[6:] for n in names if n.startswith("phase:")), None)
    op = next((c for c in chain if c["cat"] == "cpu_op" and c["name"].startswith("aten::")), None)
    op_name = op["name"][6:] if op is not None else chain[0]["name"][:40]
    node = next((c for c in chain if c["name"].startswith("autograd::engine::evaluate")), None)
    module = index.module(leaf)
    direction = "forward"
    if node is not None:
        if module is not None and names.index(
            next(n for n in names if n.startswith("mod:"))
        ) < names.index(node["name"]):
            direction = "recompute"
        else:
            direction = "backward"
            seq = node.get("args", {}).get("Sequence number")
            forward = index.forward_by_seq.get(seq)
            module = index.module(forward) if forward is not None else None
            if "AccumulateGrad" in node["name"] or (
                module is None and "torch::autograd" in node["name"]
            ):
                return "backward", "grad accumulation (main_grad hooks)", op_name
            if module is None:
                module = node["name"].split(": ")[-1]
    if phase in ("zero_grad", "optimizer") and node is None and module is None:
        in_adam = any("AdamW.step" in n for n in names)
        what = "AdamW" if in_adam else op_name
        return phase, f"{phase}: {what}", op_name
    mod = short_module(module)
    if "core_attention" in mod:
        size = leaf_size(op) if op is not None else 0
        if op_name in ("baddbmm", "bmm"):
            category = "core attention: batched matmul"
        elif size >= scores // 2:
            category = f"core attention: {op_name} on scores"
        else:
            category = f"core attention: {op_name} (small)"
        return direction, category, op_name
    if op_name in ("mm", "addmm", "matmul", "linear") or "gemm" in gpu["name"].lower():
        return direction, f"GEMM {mod}", op_name
    return direction, f"{mod}: elementwise", op_name


def breakdown(path: str) -> dict[str, Any]:
    events = load(path)
    index = HostIndex(events)
    gpu = [e for e in events if e.get("cat") in GPU_CATS and e.get("ph") == "X"]
    softmax = next(
        (e for e in events if e.get("name") == "aten::_softmax" and e.get("cat") == "cpu_op"),
        None,
    )
    scores = leaf_size(softmax) if softmax is not None else 1 << 62
    table: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for e in gpu:
        direction, category, _op = classify(index, e, scores)
        cell = table[(direction, category)]
        cell[0] += e.get("dur", 0.0) / 1e3
        cell[1] += 1
    phases = [
        e for e in events if e.get("cat") == "user_annotation" and e["name"].startswith("phase:")
    ]
    start = min(e["ts"] for e in gpu)
    end = max(e["ts"] + e.get("dur", 0) for e in gpu)
    busy = 0.0
    cursor = start
    for e in sorted(gpu, key=lambda e: e["ts"]):
        s, t = max(e["ts"], cursor), e["ts"] + e.get("dur", 0)
        if t > s:
            busy += t - s
            cursor = t
    return {
        "trace": path,
        "score_elements": scores,
        "gpu_span_ms": (end - start) / 1e3,
        "gpu_busy_ms": busy / 1e3,
        "idle_ms": (end - start - busy) / 1e3,
        "host_phases_ms": {e["name"][6:]: e["dur"] / 1e3 for e in phases},
        "rows": [
            {"direction": d, "category": c, "device_ms": round(v[0], 4), "events": v[1]}
            for (d, c), v in sorted(table.items(), key=lambda kv: -kv[1][0])
        ],
    }


LAYER_N = "decoder.layers.N"
ROOT_ELEMENTWISE = ("(no module): elementwise", "module: elementwise")
GROUPS = (
    ("GEMM (linears, output layer)", lambda c: c.startswith("GEMM")),
    ("attention batched matmuls", lambda c: c == "core attention: batched matmul"),
    ("attention scores element-wise", lambda c: c.endswith("on scores")),
    ("attention other element-wise", lambda c: c.startswith("core attention")),
    ("norms", lambda c: "layernorm" in c),
    ("RoPE, QKV split (self_attention)", lambda c: c == f"{LAYER_N}.self_attention: elementwise"),
    ("SwiGLU (mlp)", lambda c: c == f"{LAYER_N}.mlp: elementwise"),
    ("residual adds (layer)", lambda c: c == f"{LAYER_N}: elementwise"),
    ("loss, cross-entropy (model root, harness)", lambda c: c in ROOT_ELEMENTWISE),
    ("main_grad accumulation", lambda c: c.startswith("grad accumulation")),
    ("optimizer: AdamW", lambda c: c == "optimizer: AdamW"),
    ("optimizer: other (copies, grad norm, clip)", lambda c: c.startswith("optimizer:")),
    ("zero grad buffer", lambda c: c.startswith("zero_grad")),
    ("other", lambda c: True),
)  # fmt: skip


def grouped(result: dict[str, Any]) -> list[tuple[str, float, float, float]]:
    """(group, forward ms, backward ms, recompute-or-other ms) rows."""
    out: dict[str, list[float]] = {g: [0.0, 0.0, 0.0] for g, _ in GROUPS}
    for row in result["rows"]:
        group = next(g for g, test in GROUPS if test(row["category"]))
        col = {"forward": 0, "backward": 1}.get(row["direction"], 2)
        out[group][col] += row["device_ms"]
    return [(g, *v) for g, v in out.items() if sum(v) > 0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces", nargs="+")
    parser.add_argument("--json")
    parser.add_argument("--detail", action="store_true", help="print every category")
    args = parser.parse_args(argv)
    results = [breakdown(path) for path in args.traces]
    for result in results:
        print(f"== {result['trace']}")
        print(f"{'category':<46}{'fwd ms':>9}{'bwd ms':>9}{'other ms':>9}")
        for group, fwd, bwd, other in grouped(result):
            print(f"{group:<46}{fwd:>9.2f}{bwd:>9.2f}{other:>9.2f}")
        busy, span = result["gpu_busy_ms"], result["gpu_span_ms"]
        print(f"GPU busy {busy:.2f} ms of a {span:.2f} ms span (idle {span - busy:.2f} ms)")
        if args.detail:
            for row in result["rows"]:
                print(f"  {row['direction']:<10}{row['category']:<60}"
                      f"{row['device_ms']:>9.3f}{row['events']:>6}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())


DTYPE_BYTES = {"float": 4, "c10::BFloat16": 2, "c10::Half": 2, "bool": 1}
KERNEL_CLASSES: dict[str, tuple[str, tuple[str, ...], float]] = {
    # class: (ATen op, input dtypes, bytes moved per element of the first input)
    "upcast copy bf16->fp32 (unrolled)": ("copy_", ("float", "c10::BFloat16"), 6),
    "downcast copy fp32->bf16 (vectorized)": ("copy_", ("c10::BFloat16", "float"), 6),
    "masked_fill_ fp32, broadcast mask": ("masked_fill_", ("float", "bool"), 8),
    "in-place fp32 op, broadcast operand (sub_, div_, mul_)": ("*_", ("float", "float"), 8),
    "softmax forward fp32 (read + write)": ("_softmax", ("float",), 8),
    "softmax backward: grad x output (mul)": ("mul", ("float", "float"), 12),
    "softmax backward data": ("_softmax_backward_data", ("float", "float"), 12),
    "exp fp32": ("exp", ("float", "float"), 8),
    "main_grad add_ fp32 += bf16": ("add_", ("float", "c10::BFloat16"), 10),
    "bf16 mul, broadcast operand (RoPE)": ("mul", ("c10::BFloat16", "c10::BFloat16"), 4),
}  # fmt: skip
GENERIC = (
    "upcast copy bf16->fp32 (unrolled)",
    "masked_fill_ fp32, broadcast mask",
    "in-place fp32 op, broadcast operand (sub_, div_, mul_)",
    "main_grad add_ fp32 += bf16",
    "bf16 mul, broadcast operand (RoPE)",
)
"""The classes PyTorch runs in its generic (non-vectorized) element-wise kernels
(``elementwise_kernel``, ``unrolled_elementwise_kernel``): dtype-casting or broadcasting."""
STREAM = "downcast copy fp32->bf16 (vectorized)"
"""Kernel classes whose achieved bandwidth ``kernel_class_rates`` reports, by the ATen op
that launched them and its input dtypes, with the bytes each moves per element."""
LARGE = 1 << 23
"""Only ops on tensors of at least this many elements count (streaming, not launch-bound)."""


def _class_of(op: dict[str, Any]) -> str | None:
    args = op.get("args", {})
    types = tuple(t for t in args.get("Input type", []) if t in DTYPE_BYTES)
    dims = args.get("Input Dims") or [[]]
    name = op["name"].removeprefix("aten::")
    for cls, (want, dtypes, _) in KERNEL_CLASSES.items():
        if want == "*_":
            broadcast = len(dims) > 1 and isinstance(dims[1], list) and dims[1][-1:] == [1]
            if name in ("sub_", "div_", "mul_") and types[:2] == dtypes and broadcast:
                return cls
        elif name == want and types[: len(dtypes)] == dtypes:
            same = len(dims) > 1 and dims[0] == dims[1]
            if want == "mul" and dtypes[0] == "float" and not same:
                return None
            if want == "mul" and dtypes[0] != "float" and (same or len(dims) < 2):
                return None
            return cls
    return None


def kernel_class_rates(path: str) -> dict[str, dict[str, float]]:
    """Achieved bandwidth (bytes per second, median over its kernels) of each kernel class
    on large tensors in one trace, and the DtoD copies' (``cudaMemcpy``, read + write)."""
    events = load(path)
    index = HostIndex(events)
    rates: dict[str, list[float]] = defaultdict(list)
    per_op: dict[int, list[Any]] = {}  # one op's kernels (large tensors run as several)
    for e in events:
        if (
            e.get("cat") == "gpu_memcpy"
            and "DtoD" in e["name"]
            and e["args"].get("bytes", 0) >= LARGE
        ):
            rates["device-to-device copy (read + write)"].append(
                2 * e["args"]["bytes"] / (e["dur"] * 1e-6)
            )
            continue
        if e.get("cat") != "kernel" or e.get("dur", 0) <= 0:
            continue
        leaf = index.by_external.get(e.get("args", {}).get("External id"))
        if leaf is None or leaf["cat"] != "cpu_op":
            continue
        cls = _class_of(leaf)
        elements = numel((leaf["args"].get("Input Dims") or [[]])[0])
        if cls is None or elements < LARGE:
            continue
        entry = per_op.setdefault(id(leaf), [cls, elements, 0.0])
        entry[2] += e["dur"] * 1e-6
    for cls, elements, seconds in per_op.values():
        rates[cls].append(elements * KERNEL_CLASSES[cls][2] / seconds)
    out: dict[str, Any] = {}
    for cls, values in rates.items():
        values.sort()
        out[cls] = {"bytes_per_s": values[len(values) // 2], "kernels": len(values)}
    stream = out.get(STREAM, {}).get("bytes_per_s")
    if stream:
        for cls in GENERIC:
            if cls in out:
                per_element = out[cls]["bytes_per_s"] / KERNEL_CLASSES[cls][2]
                out[cls]["elements_per_s"] = per_element
                # how many bytes the vectorized kernels stream in the time of one element
                out[cls]["stream_bytes_per_element"] = stream / per_element
    return out
