"""Train a small Mixtral-style MoE on real text, record its routing, and time two expert
placements of that routing as per-GPU grouped GEMMs on one GPU.

(a) A byte-level decoder (pre-norm attention + MoE blocks, SwiGLU experts, top-2 softmax
    router renormalised over the two chosen experts, Switch-style load-balancing loss) is
    trained from scratch on the Python standard library's own sources (every ``.py`` file
    under the directory of the ``os`` module, one file in 20 held out). Its routers'
    top-k decisions on held-out batches are saved: ``topk.npy`` ``[layers, tokens, k]``
    (uint8 expert ids) and ``loads.json`` (``[layers, experts]`` token counts).
(b) For placements of that routing (contiguous, and the warm start of autopar's solver:
    the better EPLB greedy improved by swaps, computed here with autopar's pure-numpy
    modules copied next to this script), every simulated GPU's expert work is run as the
    GEMMs of its hosted experts (Mixtral-8x7B expert shapes, 4096 -> 14336 -> 4096, bf16),
    each expert receiving its share of a step's tokens; the straggler (the slowest
    simulated GPU) is timed per layer with CUDA events and its ratio between placements is
    compared with the ratio of the predicted busiest-GPU loads.

``--tiny`` runs both parts on the CPU in seconds (a test of the script, not a result).
Writes ``loads.json``, ``topk.npy``, ``placements.json``, ``result.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent / "pkg"))


def corpus() -> tuple[bytes, bytes, int]:
    """The standard library's .py sources, split into train and held-out by file name."""
    root = Path(os.__file__).parent
    train, held = bytearray(), bytearray()
    files = sorted(root.rglob("*.py"))
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        (held if zlib.crc32(str(path.relative_to(root)).encode()) % 20 == 0 else train).extend(data)
    return bytes(train), bytes(held), len(files)


class MoE(nn.Module):
    def __init__(self, d: int, hidden: int, experts: int, top_k: int) -> None:
        super().__init__()
        self.router = nn.Linear(d, experts, bias=False)
        self.w1 = nn.Parameter(torch.randn(experts, d, hidden) / math.sqrt(d))
        self.w3 = nn.Parameter(torch.randn(experts, d, hidden) / math.sqrt(d))
        self.w2 = nn.Parameter(torch.randn(experts, hidden, d) / math.sqrt(hidden))
        self.experts, self.top_k = experts, top_k

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flat = x.reshape(-1, x.shape[-1])
        probs = F.softmax(self.router(flat).float(), dim=-1)
        weight, chosen = probs.topk(self.top_k, dim=-1)
        weight = (weight / weight.sum(dim=-1, keepdim=True)).to(flat.dtype)
        out = torch.zeros_like(flat)
        for e in range(self.experts):
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            h = flat[rows]
            y = (F.silu(h @ self.w1[e]) * (h @ self.w3[e])) @ self.w2[e]
            out.index_add_(0, rows, y * weight[rows, slot, None])
        # Switch Transformer load-balancing loss: E * sum_e (token fraction) (mean prob).
        fraction = F.one_hot(chosen, self.experts).float().sum(dim=(0, 1)) / chosen.numel()
        aux = self.experts * (fraction * probs.mean(dim=0)).sum()
        return out.reshape(x.shape), chosen, aux


class Block(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int, experts: int, top_k: int) -> None:
        super().__init__()
        self.n1, self.n2 = nn.RMSNorm(d), nn.RMSNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.moe, self.heads = MoE(d, hidden, experts, top_k), heads

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        y, chosen, aux = self.moe(self.n2(x))
        return x + y, chosen, aux


class Model(nn.Module):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, args.d)
        self.pos = nn.Embedding(args.seq, args.d)
        self.blocks = nn.ModuleList(
            Block(args.d, args.heads, args.hidden, args.experts, args.top_k)
            for _ in range(args.layers)
        )
        self.norm, self.head = nn.RMSNorm(args.d), nn.Linear(args.d, 256, bias=False)

    def forward(
        self, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        x = self.embed(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        chosen, aux = [], torch.zeros((), device=tokens.device)
        for block in self.blocks:
            x, c, a = block(x)
            chosen.append(c)
            aux = aux + a
        return self.head(self.norm(x)), chosen, aux


def batches(data: np.ndarray, batch: int, seq: int, gen: np.random.Generator) -> torch.Tensor:
    starts = gen.integers(0, len(data) - seq - 1, batch)
    return torch.from_numpy(np.stack([data[s : s + seq + 1] for s in starts]).astype(np.int64))


def train_and_trace(args: argparse.Namespace, device: str) -> dict:
    train, held, files = corpus()
    train_arr = np.frombuffer(train, dtype=np.uint8)
    held_arr = np.frombuffer(held, dtype=np.uint8)
    torch.manual_seed(0)
    gen = np.random.default_rng(0)
    model = Model(args).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda")
    losses, started = [], time.perf_counter()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / 50)
        for group in opt.param_groups:
            group["lr"] = lr
        tokens = batches(train_arr, args.batch, args.seq, gen).to(device)
        with autocast:
            logits, _, aux = model(tokens[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, 256), tokens[:, 1:].reshape(-1))
        (loss + args.aux_coef * aux).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == args.steps - 1:
            losses.append({"step": step, "loss": round(float(loss.detach()), 4)})
    train_s = time.perf_counter() - started
    model.eval()
    held_gen = np.random.default_rng(1)
    picks: list[list[np.ndarray]] = [[] for _ in range(args.layers)]
    held_loss = []
    with torch.no_grad(), autocast:
        for _ in range(args.eval_batches):
            tokens = batches(held_arr, args.batch, args.seq, held_gen).to(device)
            logits, chosen, _ = model(tokens[:, :-1])
            held_loss.append(
                float(F.cross_entropy(logits.float().reshape(-1, 256), tokens[:, 1:].reshape(-1)))
            )
            for layer, c in enumerate(chosen):
                picks[layer].append(c.cpu().numpy().astype(np.uint8))
    topk = np.stack([np.concatenate(p) for p in picks])
    loads = np.stack([np.bincount(t.ravel(), minlength=args.experts) for t in topk])
    np.save(args.out / "topk.npy", topk)
    (args.out / "loads.json").write_text(json.dumps(loads.tolist()))
    return {
        "corpus": f"{files} .py files under {Path(os.__file__).parent} ({len(train)} train bytes, "
        f"{len(held)} held-out bytes, one file in 20 held out by CRC32 of its path)",
        "train_losses": losses,
        "held_out_loss": round(float(np.mean(held_loss)), 4),
        "train_s": round(train_s, 1),
        "traced_tokens": int(topk.shape[1]),
        "loads": loads.tolist(),
    }


def time_placements(args: argparse.Namespace, device: str, loads: np.ndarray) -> dict:
    from solvers.expert_greedy import contiguous
    from solvers.expert_local_search import warm_start
    from solvers.expert_problem import ExpertPlacementProblem, gpu_loads

    d, hidden = args.sim_d, args.sim_hidden
    gen = torch.Generator(device="cpu").manual_seed(0)
    w1 = (torch.randn(args.experts, d, hidden, generator=gen) / math.sqrt(d)).to(
        device, torch.bfloat16
    )
    w3 = (torch.randn(args.experts, d, hidden, generator=gen) / math.sqrt(d)).to(
        device, torch.bfloat16
    )
    w2 = (torch.randn(args.experts, hidden, d, generator=gen) / math.sqrt(hidden)).to(
        device, torch.bfloat16
    )
    x = torch.randn(args.sim_tokens * args.top_k, d, device=device, dtype=torch.bfloat16)
    # A step of sim_tokens tokens routed like the trace: each expert's share of the
    # top-k assignments, scaled to sim_tokens * top_k rows.
    rows = np.rint(loads / loads.sum(axis=1, keepdims=True) * args.sim_tokens * args.top_k)
    rows = rows.astype(np.int64)

    def gpu_time_ms(layer: int, hosted: list[int], counts: np.ndarray) -> float:
        def work() -> None:
            for e in hosted:
                n = int(rows[layer, e] // counts[e])
                h = x[:n]
                (F.silu(h @ w1[e]) * (h @ w3[e])) @ w2[e]

        for _ in range(2):
            work()
        times = []
        for _ in range(args.reps):
            if device == "cuda":
                start, end = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
                start.record()
                work()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                work()
                times.append((time.perf_counter() - t0) * 1e3)
        return float(np.median(times))

    cases = []
    for gpus, slots in args.cases:
        problem = ExpertPlacementProblem(
            loads=rows.tolist(),
            gpus=gpus,
            slots_per_gpu=slots,
            max_replicas=max(1, gpus * slots - args.experts + 1),
        )
        placements = {"contiguous": contiguous(problem), "ours_warm_start": warm_start(problem)}
        case = {"gpus": gpus, "slots_per_gpu": slots, "placements": {}}
        for name, phy2log in placements.items():
            predicted = gpu_loads(rows, np.asarray(phy2log), gpus)
            measured = []
            for layer, row in enumerate(phy2log):
                counts = np.bincount(row, minlength=args.experts)
                per_gpu = [
                    gpu_time_ms(layer, row[g * slots : (g + 1) * slots], counts)
                    for g in range(gpus)
                ]
                measured.append(per_gpu)
            measured_arr = np.asarray(measured)
            case["placements"][name] = {
                "phy2log": [list(map(int, r)) for r in phy2log],
                "predicted_gpu_rows": predicted.round(1).tolist(),
                "measured_gpu_ms": measured_arr.round(4).tolist(),
                "predicted_straggler_rows": float(predicted.max(axis=1).sum()),
                "measured_straggler_ms": float(measured_arr.max(axis=1).sum()),
            }
        c, o = case["placements"]["contiguous"], case["placements"]["ours_warm_start"]
        case["predicted_ratio"] = c["predicted_straggler_rows"] / o["predicted_straggler_rows"]
        case["measured_ratio"] = c["measured_straggler_ms"] / o["measured_straggler_ms"]
        cases.append(case)
    return {
        "expert_shape": {
            "d": d,
            "hidden": hidden,
            "dtype": "bfloat16",
            "gemms": "x@w1, x@w3, (silu*)@w2",
        },
        "step_tokens": args.sim_tokens,
        "reps": args.reps,
        "cases": cases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test, seconds")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        sizes = dict(
            d=32,
            heads=2,
            hidden=64,
            layers=2,
            experts=8,
            steps=3,
            batch=4,
            seq=32,
            eval_batches=2,
            sim_d=64,
            sim_hidden=128,
            sim_tokens=256,
            reps=2,
            cases=[(4, 2), (4, 3)],
        )
    else:
        sizes = dict(
            d=384,
            heads=6,
            hidden=768,
            layers=4,
            experts=16,
            steps=400,
            batch=64,
            seq=256,
            eval_batches=16,
            sim_d=4096,
            sim_hidden=14336,
            sim_tokens=16384,
            reps=5,
            cases=[(8, 2), (8, 3), (4, 4), (4, 5)],
        )
    for key, value in sizes.items():
        setattr(args, key, value)
    args.top_k, args.lr, args.aux_coef = 2, 1e-3, 0.01
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    started = time.perf_counter()
    result = {
        "config": {k: v for k, v in sorted(vars(args).items()) if k != "out"},
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
        "python": platform.python_version(),
    }
    result["trace"] = train_and_trace(args, device)
    loads = np.asarray(result["trace"]["loads"], dtype=np.float64)
    result["placement_timing"] = time_placements(args, device, loads)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    (args.out / "result.json").write_text(json.dumps(result, indent=1, default=str))
    for case in result["placement_timing"]["cases"]:
        print(
            case["gpus"],
            case["slots_per_gpu"],
            round(case["predicted_ratio"], 4),
            round(case["measured_ratio"], 4),
        )
    print("held-out loss", result["trace"]["held_out_loss"], "wall", result["wall_s"])


if __name__ == "__main__":
    main()
