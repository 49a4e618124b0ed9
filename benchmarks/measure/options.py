"""Run options of the measuring script: presets, the argument parser and its checks.

Presets (untied output projection, as the script builds them; Llama 3.2 1B and 3B tie
theirs in HuggingFace, pass ``--tie-embeddings`` for that):

| preset   | layers | hidden | heads / kv | ffn   | vocab  | source                         |
| -------- | ------ | ------ | ---------- | ----- | ------ | ------------------------------ |
| tiny     | 2      | 64     | 4 / 2      | 128   | 256    | CPU tests only                 |
| llama-1b | 16     | 2048   | 32 / 8     | 8192  | 128256 | meta-llama/Llama-3.2-1B shape  |
| llama-3b | 28     | 3072   | 24 / 8     | 8192  | 128256 | meta-llama/Llama-3.2-3B shape  |
| llama-8b | 32     | 4096   | 32 / 8     | 14336 | 128256 | meta-llama/Llama-3.1-8B shape  |

Glossary: ``mbs`` micro-batch size (sequences per forward), ``grad_accum`` micro-batches
per optimizer step (the pipeline's micro-batch count under ``--mode pp``), ``steps``
optimizer steps in all, of which the first ``warmup`` are not timed.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from llama import LlamaConfig

PRESETS: dict[str, LlamaConfig] = {
    "tiny": LlamaConfig(2, 64, 4, 2, 128, 256, seq_len=64),
    "llama-1b": LlamaConfig(16, 2048, 32, 8, 8192, 128256, seq_len=2048),
    "llama-3b": LlamaConfig(28, 3072, 24, 8, 8192, 128256, seq_len=2048),
    "llama-8b": LlamaConfig(32, 4096, 32, 8, 14336, 128256, seq_len=2048),
    # shapes of the validation sweep, never used to calibrate the time model:
    # Qwen2.5-1.5B (config.json: 28 layers, 1536 hidden, 12/2 heads, 8960 ffn, 151936
    # vocab, tied) and Mistral-7B-v0.1 (32 layers, 4096 hidden, 32/8 heads, 14336 ffn,
    # 32000 vocab)
    "qwen-1.5b": LlamaConfig(28, 1536, 12, 2, 8960, 151936, seq_len=2048, tie_embeddings=True),
    "mistral-7b": LlamaConfig(32, 4096, 32, 8, 14336, 32000, seq_len=2048),
    # and of the device-bound validation sweep: Qwen2.5-7B (config.json: 28 layers, 3584
    # hidden, 28/4 heads, 18944 ffn, 152064 vocab, untied) and Llama-2-13B (40 layers,
    # 5120 hidden, 40/40 heads: no grouped-query attention, 13824 ffn, 32000 vocab)
    "qwen-7b": LlamaConfig(28, 3584, 28, 4, 18944, 152064, seq_len=2048),
    "llama-13b": LlamaConfig(40, 5120, 40, 40, 13824, 32000, seq_len=2048),
}
MODES = ("single", "ddp", "fsdp2", "tp", "pp")
PRECISIONS = ("bf16-autocast", "bf16")
SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math", "auto")
DDP_BUCKET_CAP_MB = 25  # torch's default for DistributedDataParallel(bucket_cap_mb=...)


@dataclass(frozen=True)
class RunOptions:
    """Everything one measurement depends on; recorded verbatim in the output."""

    preset: str | None
    model: LlamaConfig
    mbs: int
    grad_accum: int
    recompute: str  # "none" | "full"
    precision: str  # "bf16-autocast" | "bf16"
    optimizer: str  # "adamw"
    foreach: bool  # False: AdamW(foreach=False); True: torch's default implementation
    steps: int
    warmup: int
    mode: str
    pp_schedule: str  # "1f1b" | "gpipe"
    sdpa_backend: str
    device: str  # "cuda" | "cpu"
    seed: int = 0
    out: str | None = None
    census: bool = True

    @property
    def timed_steps(self) -> int:
        return self.steps - self.warmup

    def to_record(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model"] = dataclasses.asdict(self.model)
        return data


def check(opts: RunOptions, world_size: int) -> None:
    """Raise ValueError, with the numbers involved, for combinations the script cannot run."""
    cfg = opts.model
    if opts.warmup < 1 or opts.steps <= opts.warmup:
        raise ValueError(
            f"need steps > warmup >= 1 (the first step creates the optimizer state); "
            f"got steps={opts.steps}, warmup={opts.warmup}"
        )
    if opts.mbs < 1 or opts.grad_accum < 1:
        raise ValueError(f"mbs ({opts.mbs}) and grad_accum ({opts.grad_accum}) must be >= 1")
    if opts.mode == "single" and world_size != 1:
        raise ValueError(f"--mode single runs one process; WORLD_SIZE is {world_size}")
    if opts.mode != "single" and world_size < 2:
        raise ValueError(f"--mode {opts.mode} needs torchrun with 2+ processes, got {world_size}")
    if cfg.tie_embeddings and opts.mode in ("fsdp2", "tp", "pp"):
        raise ValueError(f"--tie-embeddings is supported in single and ddp modes, not {opts.mode}")
    if opts.mode == "tp":
        for name, n in (
            ("num_attention_heads", cfg.num_attention_heads),
            ("num_kv_heads", cfg.num_kv_heads),
            ("ffn_hidden_size", cfg.ffn_hidden_size),
        ):
            if n % world_size:
                raise ValueError(f"tp={world_size} must divide {name}={n}")
    if opts.mode == "pp":
        if cfg.num_layers < world_size:
            raise ValueError(f"pp={world_size} stages need >= {world_size} layers")
        if opts.grad_accum < world_size:
            raise ValueError(
                f"pipeline schedules need grad_accum (micro-batches, {opts.grad_accum}) "
                f">= stages ({world_size})"
            )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Measure memory and time of real training steps.")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None)
    for flag in (
        "num-layers",
        "hidden-size",
        "num-attention-heads",
        "num-kv-heads",
        "ffn-hidden-size",
        "vocab-size",
    ):
        p.add_argument(f"--{flag}", type=int, default=None, help="overrides the preset")
    p.add_argument("--tie-embeddings", action="store_true")
    p.add_argument("--seq-len", type=int, default=None, help="default: the preset's (2048)")
    p.add_argument("--mbs", type=int, default=1, help="micro-batch size (sequences)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step")
    p.add_argument("--recompute", choices=("none", "full"), default="none")
    p.add_argument("--precision", choices=PRECISIONS, default="bf16-autocast")
    p.add_argument("--optimizer", choices=("adamw",), default="adamw")
    p.add_argument(
        "--foreach",
        action="store_true",
        help="let AdamW pick its default (foreach) implementation; "
        "default is foreach=False (no multi-tensor temporaries)",
    )
    p.add_argument("--steps", type=int, default=6, help="optimizer steps in all")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps among --steps")
    p.add_argument("--mode", choices=MODES, default="single")
    p.add_argument("--pp-schedule", choices=("1f1b", "gpipe"), default="1f1b")
    p.add_argument(
        "--sdpa-backend",
        choices=SDPA_BACKENDS,
        default="flash",
        help="SDPA kernel; 'auto' lets torch choose",
    )
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-census",
        dest="census",
        action="store_false",
        help="skip the saved-tensor census of one block and the head",
    )
    p.add_argument("--out", default=None, help="append one JSON record per run to this file")
    return p


def options_from_args(args: argparse.Namespace) -> RunOptions:
    base = PRESETS[args.preset] if args.preset else None
    fields = {
        "num_layers": args.num_layers,
        "hidden_size": args.hidden_size,
        "num_attention_heads": args.num_attention_heads,
        "num_kv_heads": args.num_kv_heads,
        "ffn_hidden_size": args.ffn_hidden_size,
        "vocab_size": args.vocab_size,
    }
    if base is None:
        missing = [k for k, v in fields.items() if v is None]
        if missing:
            raise ValueError(f"without --preset, give every shape flag; missing: {missing}")
        base = LlamaConfig(**fields, seq_len=args.seq_len or 2048)  # type: ignore[arg-type]
    given = {k: v for k, v in fields.items() if v is not None}
    model = dataclasses.replace(
        base, **given, seq_len=args.seq_len or base.seq_len, tie_embeddings=args.tie_embeddings
    )
    return RunOptions(
        preset=args.preset,
        model=model,
        mbs=args.mbs,
        grad_accum=args.grad_accum,
        recompute=args.recompute,
        precision=args.precision,
        optimizer=args.optimizer,
        foreach=args.foreach,
        steps=args.steps,
        warmup=args.warmup,
        mode=args.mode,
        pp_schedule=args.pp_schedule,
        sdpa_backend=args.sdpa_backend,
        device=args.device,
        seed=args.seed,
        out=args.out,
        census=args.census,
    )
