"""Record PyTorch caching-allocator snapshots of a few training steps on one GPU.

Eight runs: a Llama-style dense decoder (``llama.Llama``) and a small token-choice MoE
decoder, each with and without activation checkpointing, each with and without
``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``. Every run is its own process (the
allocator reads its configuration once, at CUDA initialisation), starts recording the
allocator's history before the model exists, runs ``--steps`` training steps (fp32
weights, bf16 autocast, AdamW with its default foreach implementation, gradients set
to None after each step) and writes:

* ``<run>.pickle.gz``: ``torch.cuda.memory._dump_snapshot`` (no stack frames, to stay
  small), gzip-compressed;
* one JSON record: ``torch.cuda.max_memory_reserved()`` and ``max_memory_allocated()``,
  the configuration and the provenance.

The snapshots are packed into ``snapshots.tar`` (the device tool returns few files).
``python3 allocator_snapshots.py --out DIR``; ``--cpu`` runs one tiny step of each model
on the CPU without recording, to check the script without a GPU.

``--suite megatron`` records Megatron-Core training steps instead (``megatron_step.py``'s
model, step and optimizer: ``GPTModel`` with the local layer spec, bf16 weights, the
contiguous fp32 gradient buffer and bf16 parameter buffer of megatron-core's
``DistributedDataParallel``, the ``DistributedOptimizer`` around ``torch.optim.AdamW``;
one GPU, tp = pp = cp = 1): the same dense shape and a top-2-of-8 MoE of it
(``SequentialMLP`` experts, ``allgather`` dispatcher), each with recompute none,
selective (``core_attn``) and full (uniform, 1 layer), each with and without expandable
segments (the dense runs at once, then the MoE runs); then, as a third wave, the
llama-1b shape at 4096 tokens with full recompute, both allocator settings (the
measured Megatron-Core step whose reserved peak was 21.6% over its allocated peak).
Megatron-LM's ``train_step`` order: every step zeroes the gradient buffer, runs
``grad_accum`` micro-batches through ``forward_backward_no_pipelining`` and the
optimizer step. Each record is megatron_step's
JSON record (``config`` as in ``megatron_steps.jsonl``) with the per-step allocator peaks
(``memory.steps``) and ``max_memory_reserved`` / ``max_memory_allocated`` of the whole
run added. Needs megatron-core (``PYTHONPATH`` to an unpacked wheel).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import record
from llama import Attention, Llama, LlamaConfig, RMSNorm, loss_fn

DENSE = LlamaConfig(
    num_layers=4,
    hidden_size=1024,
    num_attention_heads=16,
    num_kv_heads=4,
    ffn_hidden_size=3584,
    vocab_size=32768,
    seq_len=2048,
)
MOE_EXPERTS, MOE_TOP_K, MOE_FFN = 8, 2, 1024
BATCH = 2
RUNS = [
    (model, recompute, expandable)
    for model in ("dense", "moe")
    for recompute in (False, True)
    for expandable in (False, True)
]


def run_name(model: str, recompute: bool, expandable: bool) -> str:
    return f"{model}-{'ac' if recompute else 'noac'}-{'expandable' if expandable else 'default'}"


MEGATRON_MOE = (8, 2, 1024)
"""Experts, top-k and expert FFN width of the Megatron MoE runs (as ``MOE_*`` above)."""
MEGATRON_MBS, MEGATRON_ACCUM = 2, 2
"""Micro-batch and micro-batches per step of the small Megatron runs."""
MEGATRON_RUNS: dict[str, tuple[str, str, bool, int]] = {
    f"megatron-{model}-{recompute}-{'expandable' if expandable else 'default'}": (
        model, recompute, expandable, wave
    )
    for model, wave in (("dense", 0), ("moe", 1), ("1b", 2))
    for recompute in (("none", "selective", "full") if model != "1b" else ("full",))
    for expandable in (False, True)
}  # fmt: skip
"""name -> (model, recompute, expandable segments, wave); a wave runs once the one before
has finished (twelve processes at once ran the 139 GiB H200 out of memory: each holds
its CUDA context and NCCL buffers besides up to 9 GiB of tensors; the llama-1b runs need
about 42 GiB each)."""


def megatron_run(name: str, steps: int) -> Any:
    """The ``megatron_step.MegatronRun`` of a ``MEGATRON_RUNS`` entry."""
    from megatron_step import MegatronRun, MoeShape

    model, recompute, _expandable, _wave = MEGATRON_RUNS[name]
    if model == "1b":  # megatron_steps.jsonl's llama-1b, 4096 tokens, mbs 1, 2 micro-batches
        return MegatronRun("llama-1b", 4096, 1, 2, recompute, steps=steps, warmup=1)
    return MegatronRun(
        "snapshot", DENSE.seq_len, MEGATRON_MBS, MEGATRON_ACCUM, recompute,
        steps=steps, warmup=1, shape=DENSE,
        moe=MoeShape(*MEGATRON_MOE) if model == "moe" else None,
    )  # fmt: skip


def megatron_child(name: str, out: Path, steps: int) -> dict[str, Any]:
    """One Megatron-Core run recorded from before the model exists: every step's peaks,
    the snapshot after the last step, megatron_step's record."""
    from megatron.core import parallel_state

    import megatron_step as ms

    run = megatron_run(name, steps)
    dev = torch.device("cuda", 0)
    torch.cuda.init()
    torch.cuda.memory._record_memory_history(
        enabled="all", context=None, stacks="python", max_entries=2_000_000
    )
    started = time.perf_counter()
    progress = ms.Progress()
    memory = progress.memory
    memory["allocated_at_start"] = record.allocated(dev)
    ms.init_distributed(dev)
    parallel_state.destroy_global_memory_buffer()
    parallel_state._set_global_memory_buffer()
    _config, model, optimizer = ms.build(run)
    progress.extra["param_count_local"] = sum(p.numel() for p in model.parameters())
    stepper = ms.Stepper(run, model, optimizer, ms.make_batches(run, dev))
    record.synchronize(dev)
    memory["after_build"] = record.allocated(dev)
    memory["build_peak_allocated"] = torch.cuda.max_memory_allocated(dev)
    memory["build_peak_reserved"] = torch.cuda.max_memory_reserved(dev)
    per_step = []
    for index in range(run.steps):
        record.reset_peak(dev)
        if index < run.warmup:
            progress.losses.append(stepper.step())
        else:
            stepper.probe = index == run.steps - 1
            ms._timed(stepper, dev, progress)
        record.synchronize(dev)
        per_step.append({
            **record.peaks(dev),
            "allocated_end": torch.cuda.memory_allocated(dev),
            "reserved_end": torch.cuda.memory_reserved(dev),
        })  # fmt: skip
        progress.steps_done += 1
    memory["steps"] = per_step
    memory["first_step_peak_allocated"] = per_step[0]["peak_allocated"]
    memory["first_step_peak_reserved"] = per_step[0]["peak_reserved"]
    timed = per_step[run.warmup :]
    memory["timed_peak_allocated"] = max(s["peak_allocated"] for s in timed)
    memory["timed_peak_reserved"] = max(s["peak_reserved"] for s in timed)
    memory["retained_after_forward"] = stepper.retained_after_forward
    raw = out / f"{name}.pickle"
    torch.cuda.memory._dump_snapshot(str(raw))
    torch.cuda.memory._record_memory_history(enabled=None)
    with raw.open("rb") as src, gzip.open(f"{raw}.gz", "wb", compresslevel=9) as dst:
        shutil.copyfileobj(src, dst)
    raw.unlink()
    result = ms.build_record(run, dev, progress, None)
    result.update({
        "run": name,
        "expandable_segments": MEGATRON_RUNS[name][2],
        "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
        "max_memory_reserved": max(
            [memory["build_peak_reserved"]] + [s["peak_reserved"] for s in per_step]
        ),
        "max_memory_allocated": max(
            [memory["build_peak_allocated"]] + [s["peak_allocated"] for s in per_step]
        ),
        "memory_reserved_end": torch.cuda.memory_reserved(dev),
        "seconds": round(time.perf_counter() - started, 3),
        "snapshot": f"{name}.pickle.gz",
        "snapshot_bytes": Path(f"{raw}.gz").stat().st_size,
    })  # fmt: skip
    return result


class MoEFeedForward(nn.Module):
    """Token-choice top-k routing over SwiGLU experts, one expert at a time (as simple
    PyTorch MoE code does: gather the expert's tokens, run it, scatter-add back)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.router = nn.Linear(hidden, MOE_EXPERTS, bias=False)
        self.w1 = nn.Parameter(torch.randn(MOE_EXPERTS, hidden, MOE_FFN) * 0.02)
        self.w3 = nn.Parameter(torch.randn(MOE_EXPERTS, hidden, MOE_FFN) * 0.02)
        self.w2 = nn.Parameter(torch.randn(MOE_EXPERTS, MOE_FFN, hidden) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        weights, chosen = torch.topk(F.softmax(self.router(flat).float(), dim=-1), MOE_TOP_K)
        out = torch.zeros_like(flat)
        for expert in range(MOE_EXPERTS):
            token, slot = torch.nonzero(chosen == expert, as_tuple=True)
            tokens = flat[token]
            hidden = F.silu(tokens @ self.w1[expert]) * (tokens @ self.w3[expert])
            scaled = (hidden @ self.w2[expert]) * weights[token, slot].unsqueeze(-1).to(
                hidden.dtype
            )
            out = out.index_add(0, token, scaled.to(out.dtype))
        return out.reshape(shape)


class MoEBlock(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.attention = Attention(cfg, None)
        self.ffn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.feed_forward = MoEFeedForward(cfg.hidden_size)
        self.recompute = False

    def _forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin)
        return x + self.feed_forward(self.ffn_norm(x))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.recompute:
            out: torch.Tensor = checkpoint(self._forward, x, cos, sin, use_reentrant=False)
            return out
        return self._forward(x, cos, sin)


def build(model: str, cfg: LlamaConfig, device: torch.device) -> Llama:
    net = Llama(cfg)
    if model == "moe":
        net.layers = nn.ModuleDict({str(i): MoEBlock(cfg) for i in range(cfg.num_layers)})
    net.init_weights(seed=0)
    return net.to(device)


def train(net: Llama, cfg: LlamaConfig, device: torch.device, steps: int, batch: int) -> None:
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    generator = torch.Generator(device="cpu").manual_seed(0)
    for _ in range(steps):
        tokens = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len + 1), generator=generator)
        tokens = tokens.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = net(tokens[:, :-1])
        loss = loss_fn(logits, tokens[:, 1:].contiguous())
        loss.backward()
        del logits, loss
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def child(name: str, out: Path, steps: int) -> dict[str, Any]:
    model, recompute, expandable = next(r for r in RUNS if run_name(*r) == name)
    device = torch.device("cuda")
    torch.cuda.init()
    torch.cuda.memory._record_memory_history(
        enabled="all", context=None, stacks="python", max_entries=1_000_000
    )
    started = time.perf_counter()
    net = build(model, DENSE, device)
    net.set_recompute(recompute)
    train(net, DENSE, device, steps, BATCH)
    torch.cuda.synchronize()
    raw = out / f"{name}.pickle"
    torch.cuda.memory._dump_snapshot(str(raw))
    torch.cuda.memory._record_memory_history(enabled=None)
    with raw.open("rb") as src, gzip.open(f"{raw}.gz", "wb", compresslevel=9) as dst:
        shutil.copyfileobj(src, dst)
    raw.unlink()
    return {
        "run": name,
        "model": model,
        "recompute": recompute,
        "expandable_segments": expandable,
        "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
        "steps": steps,
        "batch": BATCH,
        "config": DENSE.__dict__,
        "moe": {"experts": MOE_EXPERTS, "top_k": MOE_TOP_K, "ffn": MOE_FFN}
        if model == "moe"
        else None,
        "max_memory_reserved": torch.cuda.max_memory_reserved(),
        "max_memory_allocated": torch.cuda.max_memory_allocated(),
        "memory_reserved_end": torch.cuda.memory_reserved(),
        "seconds": round(time.perf_counter() - started, 3),
        "snapshot": f"{name}.pickle.gz",
        "snapshot_bytes": Path(f"{raw}.gz").stat().st_size,
    }


def provenance() -> dict[str, Any]:
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "nvidia_smi": smi,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "megatron_core": _version("megatron-core"),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv),
    }


def _version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def parent(out: Path, steps: int, budget_s: float, suite: str, only: str | None) -> None:
    """Every run of a wave at once, one process each (on one GPU they share only its
    time), wave after wave; ``only``: just the runs whose name contains it."""
    waves: dict[int, list[tuple[str, bool]]] = {}
    if suite == "megatron":
        for name, (_m, _r, expandable, wave) in MEGATRON_RUNS.items():
            if only is None or only in name:
                waves.setdefault(wave, []).append((name, expandable))
    else:
        waves[0] = [(run_name(*r), r[2]) for r in RUNS if only is None or only in run_name(*r)]
    started, records = time.perf_counter(), []
    for wave in sorted(waves):
        records += _wave(waves[wave], out, steps, suite, started + budget_s)
    with tarfile.open(out / "snapshots.tar", "w") as tar:
        for path in sorted(out.glob("*.pickle.gz")):
            tar.add(path, arcname=path.name)
            path.unlink()
    result = {"provenance": provenance(), "runs": records}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps([_brief(r) for r in records], indent=1))


def _brief(record_: dict[str, Any]) -> dict[str, Any]:
    keys = ("run", "error", "max_memory_reserved", "max_memory_allocated", "seconds")
    return {k: record_[k] for k in keys if k in record_}


def _wave(
    runs: list[tuple[str, bool]], out: Path, steps: int, suite: str, deadline: float
) -> list[dict[str, Any]]:
    procs = {}
    for port, (name, expandable) in enumerate(runs):
        env = dict(os.environ)
        env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
        if expandable:
            env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
        env["MASTER_PORT"] = str(29600 + port)
        args = [sys.executable, __file__, "--child", name, "--out", str(out),
                "--steps", str(steps), "--suite", suite]  # fmt: skip
        procs[name] = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    records: list[dict[str, Any]] = []
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            proc.kill()
            records.append({"run": name, "error": "timed out (--budget-s)"})
            continue
        if proc.returncode != 0:
            records.append({"run": name, "error": stderr[-2000:]})
            continue
        records.append(json.loads(stdout.strip().splitlines()[-1]))
    return records


def cpu_check() -> None:
    tiny = LlamaConfig(2, 64, 4, 2, 128, 256, 32)
    for model in ("dense", "moe"):
        for recompute in (False, True):
            net = build(model, tiny, torch.device("cpu"))
            net.set_recompute(recompute)
            train(net, tiny, torch.device("cpu"), 1, 2)
    print("cpu check passed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--child", default=None)
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--budget-s", type=float, default=200.0)
    parser.add_argument("--suite", choices=["pytorch", "megatron"], default="pytorch")
    parser.add_argument("--list", action="store_true", help="print the runs and exit")
    parser.add_argument("--only", default=None, help="only the runs whose name contains this")
    args = parser.parse_args()
    if args.list:
        names = MEGATRON_RUNS if args.suite == "megatron" else [run_name(*r) for r in RUNS]
        for name in names:
            print(name, megatron_run(name, args.steps) if args.suite == "megatron" else "")
        return
    if args.cpu:
        cpu_check()
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if args.child:
        make = megatron_child if args.suite == "megatron" else child
        print(json.dumps(make(args.child, args.out, args.steps)))
        return
    parent(args.out, args.steps, args.budget_s, args.suite, args.only)


if __name__ == "__main__":
    main()
