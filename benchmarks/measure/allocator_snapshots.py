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
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv),
    }


def parent(out: Path, steps: int, budget_s: float) -> None:
    """Every run at once, one process each (on one GPU they share only its time)."""
    started, procs = time.perf_counter(), {}
    for run in RUNS:
        name = run_name(*run)
        env = dict(os.environ)
        env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
        if run[2]:
            env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
        args = [sys.executable, __file__, "--child", name, "--out", str(out), "--steps", str(steps)]
        procs[name] = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    records = []
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(
                timeout=max(1.0, budget_s - (time.perf_counter() - started))
            )
        except subprocess.TimeoutExpired:
            proc.kill()
            records.append({"run": name, "error": f"timed out after {budget_s} s"})
            continue
        if proc.returncode != 0:
            records.append({"run": name, "error": stderr[-2000:]})
            continue
        records.append(json.loads(stdout.strip().splitlines()[-1]))
    with tarfile.open(out / "snapshots.tar", "w") as tar:
        for path in sorted(out.glob("*.pickle.gz")):
            tar.add(path, arcname=path.name)
            path.unlink()
    result = {"provenance": provenance(), "runs": records}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(records, indent=1))


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
    args = parser.parse_args()
    if args.cpu:
        cpu_check()
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if args.child:
        print(json.dumps(child(args.child, args.out, args.steps)))
        return
    parent(args.out, args.steps, args.budget_s)


if __name__ == "__main__":
    main()
