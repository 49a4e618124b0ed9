"""Run a list of single-GPU measurements in one process and append their records.

    python benchmarks/measure/sweep.py --sweep single-gpu --out runs.jsonl
    python benchmarks/measure/sweep.py --sweep smoke --device cpu --out /tmp/smoke.jsonl
    python benchmarks/measure/sweep.py --sweep single-gpu --list   # print the runs only

Each run rebuilds the model from nothing; between runs the script drops every reference,
calls ``gc.collect()``, frees the allocator's cache and the cuBLAS workspaces
(``record.release_cached``) and resets the peak statistics (each record's
``memory.allocated_at_start`` shows what was left: 0). An out-of-memory run is recorded
with ``"oom": true`` and the sweep goes on.

``single-gpu`` (34 runs) covers llama-1b, llama-3b and llama-8b, sequence lengths
1024-8192, micro-batches 1-4, recomputation none/full, both precisions, gradient
accumulation and the foreach AdamW. Some runs sit near or past 80 GB on purpose, so the
memory model's "does not fit" is checked too: llama-8b with fp32 weights (128 GB of
weights, gradients and AdamW state) and llama-3b under autocast at 8192 tokens without
recomputation ran out of memory on an H100 80GB; llama-1b at 8192 x 2 tokens and
llama-8b in bf16 at 4096 tokens, both without recomputation, fit (72 and 71 GiB).
The whole sweep took 108 s on one H100 (2026-11-23); ``--list`` prints an estimate
(``estimate_s``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys

import torch

import record
from options import PRESETS, RunOptions
from parallel import DistContext
from train_step import measure

# (preset, seq_len, mbs, recompute, precision, grad_accum, foreach)
Run = tuple[str, int, int, str, str, int, bool]
A, B = "bf16-autocast", "bf16"
SWEEPS: dict[str, list[Run]] = {
    "smoke": [
        ("tiny", 64, 2, "none", A, 1, False),
        ("tiny", 64, 1, "full", B, 2, False),
    ],
    "single-gpu": [
        # llama-1b: sequence length, micro-batch, recomputation, both precisions
        *[("llama-1b", s, 1, "none", A, 1, False) for s in (1024, 2048, 4096, 8192)],
        *[("llama-1b", 4096, m, "none", A, 1, False) for m in (2, 4)],
        *[("llama-1b", 4096, m, "full", A, 1, False) for m in (1, 4)],
        ("llama-1b", 8192, 2, "full", A, 1, False),
        ("llama-1b", 8192, 2, "none", A, 1, False),  # near 80 GB
        *[("llama-1b", s, 1, "none", B, 1, False) for s in (1024, 4096, 8192)],
        ("llama-1b", 4096, 4, "none", B, 1, False),
        ("llama-1b", 4096, 4, "full", B, 1, False),
        ("llama-1b", 8192, 1, "full", B, 1, False),
        ("llama-1b", 2048, 2, "none", A, 2, False),  # accumulation: gradients persist
        ("llama-1b", 2048, 1, "none", A, 1, True),  # foreach AdamW temporaries
        # llama-3b: around the 80 GB limit under autocast (fp32 weights + Adam: 58 GB)
        *[("llama-3b", s, 1, "none", A, 1, False) for s in (1024, 2048, 4096)],
        ("llama-3b", 4096, 1, "full", A, 1, False),
        ("llama-3b", 4096, 2, "full", A, 1, False),
        ("llama-3b", 8192, 1, "full", A, 1, False),
        ("llama-3b", 8192, 1, "none", A, 1, False),  # expected OOM
        *[("llama-3b", s, 1, "none", B, 1, False) for s in (2048, 4096)],
        ("llama-3b", 8192, 1, "full", B, 1, False),
        # llama-8b: fp32 weights + Adam (128 GB) cannot fit: an OOM record, and the next
        # run's allocated_at_start shows that the sweep recovered from it
        ("llama-8b", 1024, 1, "full", A, 1, False),
        # bf16 weights + bf16 AdamW (64 GB static)
        *[("llama-8b", s, 1, "none", B, 1, False) for s in (1024, 2048)],
        *[("llama-8b", s, 1, "full", B, 1, False) for s in (4096, 8192)],
        ("llama-8b", 4096, 1, "none", B, 1, False),  # near 80 GB
    ],
    # out-of-sample check of the time and memory models: shapes, sequence lengths and
    # micro-batches the single-gpu sweep (which calibrates the launch overheads) never
    # ran; stored as validation_steps.jsonl, which nothing fits to
    "validation": [
        ("qwen-1.5b", 2048, 2, "none", A, 1, False),
        ("qwen-1.5b", 4096, 4, "full", A, 1, False),
        ("qwen-1.5b", 8192, 1, "none", B, 1, False),
        ("qwen-1.5b", 2048, 1, "none", B, 1, True),
        ("mistral-7b", 1024, 2, "none", B, 1, False),
        ("mistral-7b", 2048, 1, "full", B, 1, False),
        ("mistral-7b", 4096, 2, "full", B, 1, False),
        ("llama-1b", 16384, 1, "full", A, 1, False),
        ("llama-1b", 1024, 8, "none", B, 1, False),
        ("llama-1b", 2048, 4, "none", A, 2, False),
        ("llama-3b", 2048, 4, "full", B, 1, False),
        ("llama-3b", 16384, 1, "full", B, 1, False),
        ("llama-8b", 2048, 2, "full", B, 1, False),
        ("llama-8b", 16384, 1, "full", B, 1, False),
    ],
    # out-of-sample check of the optimizer-step model (the profile's ``optimizer``
    # section): torch's default (foreach) AdamW against the per-tensor loop on the same
    # steps, in bf16 and under autocast, and foreach temporaries near the memory limit
    # (llama-8b: 64 GB of bf16 state + a 16 GB temporary); stored as validation
    "optimizer": [
        ("qwen-1.5b", 2048, 1, "none", B, 1, True),
        ("qwen-1.5b", 2048, 1, "none", B, 1, False),
        ("llama-3b", 2048, 1, "none", B, 1, True),
        ("llama-3b", 2048, 1, "none", B, 1, False),
        ("llama-1b", 1024, 1, "none", B, 1, True),
        ("llama-1b", 1024, 2, "none", A, 1, True),
        ("qwen-1.5b", 4096, 1, "none", A, 1, True),
        ("mistral-7b", 1024, 1, "full", B, 1, True),
        ("llama-8b", 2048, 1, "full", B, 1, True),
    ],
    # out-of-sample check where training runs live: long, device-bound steps of shapes
    # the calibration never ran (Qwen2.5-7B, Llama-2-13B with full multi-head attention),
    # 8K-32K tokens; llama-13b's 104 GB of bf16 state fits an H200, not an H100 (OOM
    # record); stored as validation
    "device-bound": [
        ("qwen-7b", 4096, 1, "full", B, 1, False),
        ("qwen-7b", 1024, 2, "none", B, 1, False),
        ("mistral-7b", 8192, 1, "full", B, 1, False),
        ("llama-8b", 4096, 2, "full", B, 1, False),
        ("llama-3b", 8192, 2, "full", B, 1, False),
        ("llama-1b", 32768, 1, "full", A, 1, False),
        ("qwen-1.5b", 16384, 1, "full", A, 1, False),
        ("llama-13b", 2048, 1, "full", B, 1, False),
    ],
    # where a small step's time goes (``time.phases``: host and device clocks after the
    # forward, backward, optimizer step and zero_grad): launch-bound and device-bound
    # steps, per-tensor and foreach AdamW, bf16 and autocast; stored as validation
    "phases": [
        *[("llama-1b", 1024, 1, "none", p, 1, f) for p in (B, A) for f in (False, True)],
        *[("qwen-1.5b", 2048, 1, "none", B, 1, f) for f in (False, True)],
        ("llama-3b", 2048, 1, "none", B, 1, False),
        ("llama-3b", 1024, 1, "none", A, 1, False),
        ("llama-8b", 2048, 1, "none", B, 1, False),
        ("llama-1b", 4096, 1, "none", A, 1, False),
    ],
}
# For the time estimate only. On an H100 (torch 2.11, 2026-11-23) the runs of this sweep
# reached 95-450 TFLOP/s by this count (small batches are dominated by the optimizer
# step), and each run spent about 0.9 s outside its steps (build, census, cleanup).
ASSUMED_FLOPS = 300e12
OVERHEAD_S = 1.5


def run_options(run: Run, device: str, steps: int, warmup: int, out: str | None) -> RunOptions:
    preset, seq, mbs, recompute, precision, accum, foreach = run
    model = dataclasses.replace(PRESETS[preset], seq_len=seq)
    return RunOptions(
        preset=preset,
        model=model,
        mbs=mbs,
        grad_accum=accum,
        recompute=recompute,
        precision=precision,
        optimizer="adamw",
        foreach=foreach,
        steps=steps,
        warmup=warmup,
        mode="single",
        pp_schedule="1f1b",
        sdpa_backend="flash",
        device=device,
        out=out,
    )


def estimate_s(opts: RunOptions) -> float:
    """6·N·T (+2·N·T with recomputation) + causal attention FLOPs, at ASSUMED_FLOPS."""
    cfg, tokens = opts.model, opts.mbs * opts.grad_accum * opts.model.seq_len
    dense = (8 if opts.recompute == "full" else 6) * cfg.num_params() * tokens
    attention = 6 * cfg.num_layers * cfg.hidden_size * cfg.seq_len * tokens
    return opts.steps * (dense + attention) / ASSUMED_FLOPS + OVERHEAD_S


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", choices=sorted(SWEEPS), required=True)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default=None)
    p.add_argument("--list", action="store_true", help="print the runs and estimates only")
    args = p.parse_args(argv)
    runs = [
        run_options(r, args.device, args.steps, args.warmup, args.out) for r in SWEEPS[args.sweep]
    ]
    total = sum(estimate_s(o) for o in runs)
    print(f"{len(runs)} runs, rough estimate {total:.0f} s on one H100")
    if args.list:
        for o in runs:
            print(
                f"{o.preset} seq={o.model.seq_len} mbs={o.mbs} accum={o.grad_accum} "
                f"recompute={o.recompute} {o.precision} foreach={o.foreach} "
                f"~{estimate_s(o):.1f}s"
            )
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch sees no GPU; use --device cpu")
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    ctx = DistContext(0, 1, device)
    for i, opts in enumerate(runs, 1):
        result = measure(opts, ctx)
        if args.out:
            record.append_record(args.out, result)
        peak = result["memory"].get("timed_peak_allocated")
        print(
            f"[{i}/{len(runs)}] {opts.preset} seq={opts.model.seq_len} mbs={opts.mbs} "
            f"{opts.recompute} {opts.precision} oom={result['oom']} "
            f"median_s={result['time']['median_s']} peak={peak}",
            flush=True,
        )
        del result
        gc.collect()
        record.release_cached(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
