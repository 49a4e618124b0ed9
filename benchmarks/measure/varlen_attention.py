"""Measure variable-length (document-masked) causal attention, forward + backward.

For each head shape and document length s, a pack of ``--pack-tokens`` tokens made of
equal documents of s tokens (cu_seqlens 0, s, 2s, ...) runs one attention layer forward
and backward; each document attends only to itself, causally. The time of one document is
the pack's time over its documents. The first API that runs is used and recorded:
``torch.nn.attention.varlen.varlen_attn`` (PyTorch's FlashAttention varlen entry), else
``flex_attention`` with a document-causal block mask, else SDPA document by document.

Writes ``varlen_attention.json`` (to ``$OUT`` or ``--out``): provenance (GPU, driver,
CUDA, torch, date, command) and per shape the points (seq_len, docs, median/p10/p90
seconds over ``--reps`` timed runs after ``--warmup``). ``planner.scattering.profile`` loads
and fits it; never edit the numbers by hand.

    python3 benchmarks/measure/varlen_attention.py            # on a GPU
    python3 benchmarks/measure/varlen_attention.py --smoke    # tiny CPU run (SDPA)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = (
    # (label, query heads, key/value heads, head dim): the models they come from
    ("llama-3.1-8b", 32, 8, 128),
    ("llama-3.1-70b", 64, 8, 128),
    ("llama-2-7b", 32, 32, 128),
)
LENGTHS = (512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768)


def _varlen(q, k, v, cu, max_len):
    from torch.nn.attention.varlen import varlen_attn

    try:
        return varlen_attn(q, k, v, cu, cu, max_len, max_len, is_causal=True)
    except TypeError:
        return varlen_attn(q, k, v, cu, cu, max_len, max_len, window_size=[-1, 0])


def _flex_factory(total: int, s: int, device: str):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    doc = torch.arange(total, device=device) // s

    def mask(b, h, q_idx, kv_idx):
        return (doc[q_idx] == doc[kv_idx]) & (q_idx >= kv_idx)

    block = create_block_mask(mask, B=None, H=None, Q_LEN=total, KV_LEN=total, device=device)
    compiled = torch.compile(flex_attention)

    def run(q, k, v):
        # (tokens, heads, dim) -> (1, heads, tokens, dim)
        out = compiled(
            q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
            block_mask=block, enable_gqa=q.shape[1] != k.shape[1],
        )  # fmt: skip
        return out[0].transpose(0, 1)

    return run


def _sdpa_per_document(q, k, v, s):
    outs = []
    for start in range(0, q.shape[0], s):
        qs, ks, vs = (t[start : start + s].transpose(0, 1) for t in (q, k, v))
        outs.append(
            F.scaled_dot_product_attention(
                qs, ks, vs, is_causal=True, enable_gqa=q.shape[1] != k.shape[1]
            ).transpose(0, 1)
        )
    return torch.cat(outs)


def attention_runner(api: str, total: int, s: int, device: str):
    cu = torch.arange(0, total + 1, s, device=device, dtype=torch.int32)
    if api == "varlen_attn":
        return lambda q, k, v: _varlen(q, k, v, cu, s)
    if api == "flex_attention":
        return _flex_factory(total, s, device)
    return lambda q, k, v: _sdpa_per_document(q, k, v, s)


def _time_once(fn, q, k, v, device: str) -> float:
    for t in (q, k, v):
        t.grad = None
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn(q, k, v)
        out = out[0] if isinstance(out, tuple) else out
        out.backward(torch.ones_like(out))
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3
    began = time.perf_counter()
    out = fn(q, k, v)
    out = out[0] if isinstance(out, tuple) else out
    out.backward(torch.ones_like(out))
    return time.perf_counter() - began


def measure(api: str, shape: tuple, s: int, pack: int, device: str, warmup: int, reps: int):
    _, hq, hkv, d = shape
    total = max(s, pack // s * s)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    make = lambda h: torch.randn(total, h, d, device=device, dtype=dtype, requires_grad=True)  # noqa: E731
    q, k, v = make(hq), make(hkv), make(hkv)
    fn = attention_runner(api, total, s, device)
    for _ in range(warmup):
        _time_once(fn, q, k, v, device)
    times = sorted(_time_once(fn, q, k, v, device) for _ in range(reps))
    return {
        "seq_len": s,
        "docs": total // s,
        "tokens": total,
        "median_s": times[len(times) // 2],
        "p10_s": times[max(0, len(times) // 10)],
        "p90_s": times[min(len(times) - 1, (9 * len(times)) // 10)],
    }


def pick_api(device: str, requested: str | None) -> str:
    """The first API that runs a small GQA document-masked case."""
    order = [requested] if requested else ["varlen_attn", "flex_attention", "sdpa_per_document"]
    if device != "cuda" and not requested:
        order = ["sdpa_per_document"]
    for api in order:
        try:
            measure(api, ("probe", 8, 2, 64), 128, 512, device, 1, 1)
            return api
        except Exception as error:  # try the next API, say why
            print(f"{api} unavailable: {type(error).__name__}: {error}", file=sys.stderr)
    raise SystemExit("no attention API ran")


def provenance(device: str, command: str) -> dict:
    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        try:
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
        except (OSError, subprocess.CalledProcessError):
            info["driver"] = "unknown"
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--pack-tokens", type=int, default=32768)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--api", choices=["varlen_attn", "flex_attention", "sdpa_per_document"])
    parser.add_argument("--budget-s", type=float, default=150.0, help="stop adding points after")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    shapes, lengths = SHAPES, LENGTHS
    if args.smoke:
        shapes = (("smoke", 4, 2, 16),)
        lengths = (16, 32, 64, 128)
        args.pack_tokens, args.warmup, args.reps = 256, 1, 3
    started = time.perf_counter()
    api = pick_api(device, args.api)
    result = {
        "kind": "varlen_attention",
        "api": api,
        "pack_tokens": args.pack_tokens,
        "dtype": "bf16" if device == "cuda" else "fp32",
        "causal": True,
        "provenance": provenance(device, " ".join(sys.argv)),
        "shapes": [],
    }
    for label, hq, hkv, d in shapes:
        points = []
        for s in lengths:
            if time.perf_counter() - started > args.budget_s:
                print(f"budget reached at {label} s={s}", file=sys.stderr)
                break
            try:
                points.append(measure(api, (label, hq, hkv, d), s, args.pack_tokens, device,
                                      args.warmup, args.reps))  # fmt: skip
            except Exception as error:  # keep the other points, say why
                print(f"{label} s={s} failed: {type(error).__name__}: {error}", file=sys.stderr)
                continue
            print(label, points[-1], flush=True)
        result["shapes"].append(
            {"model": label, "q_heads": hq, "kv_heads": hkv, "head_dim": d, "points": points}
        )
        if device == "cuda":
            torch.cuda.empty_cache()
    result["wall_s"] = round(time.perf_counter() - started, 1)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "varlen_attention.json"), "w") as f:
        json.dump(result, f, indent=1)
    print("api", api, "wall", result["wall_s"])


if __name__ == "__main__":
    main()
