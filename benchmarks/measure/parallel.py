"""Build the model for one mode and return a trainer that runs one whole optimizer step.

Every mode builds the model on the meta device, applies its parallelism there, then
materialises it with ``to_empty`` and fills it (``Llama.init_weights``), so no rank ever
holds a full fp32 copy it would not hold in training. What each mode does:

- ``single``: one process, one device.
- ``ddp``: ``DistributedDataParallel(bucket_cap_mb=25)`` (torch's default), gradient
  all-reduce skipped with ``no_sync()`` on all but the last micro-batch of a step.
- ``fsdp2``: ``fully_shard`` on every block, then on the root, default
  ``reshard_after_forward`` (blocks reshard, the root does not). Under
  ``bf16-autocast`` precision the mixed precision comes from
  ``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`` and autocast is *off*
  (torchtitan does the same): fp32 sharded parameters, optimizer state and gradients,
  bf16 compute copies and a bf16 residual stream. Under ``bf16`` everything is bf16.
  Gradients are reduce-scattered after every micro-batch (FSDP2's default).
- ``tp``: ``parallelize_module`` over all ranks: q, k, v, w1, w3 ``ColwiseParallel``;
  wo, w2 ``RowwiseParallel`` (heads split across ranks, attention on local heads); the
  embedding ``RowwiseParallel`` (vocabulary-sharded, output all-reduced to replicated);
  the output projection ``ColwiseParallel(output_layouts=Replicate())`` (vocabulary-
  sharded weight, logits all-gathered, so each rank holds full logits; no loss
  parallel); norms replicated. No sequence parallelism. Every rank gets the same batch.
- ``pp``: ``torch.distributed.pipelining`` with one stage per rank, layers split in
  contiguous runs (earlier stages take the remainder), the embedding on the first
  stage, final norm, output and loss on the last; ``Schedule1F1B`` or
  ``ScheduleGPipe`` with ``grad_accum`` micro-batches (the schedule scales gradients by
  ``1 / grad_accum``). Autocast is entered inside each stage's forward and inside the
  loss, never around the backward.

In all modes the loss of a micro-batch is divided by ``grad_accum`` (pp: the schedule's
scaling), AdamW has lr 1e-4 and weight decay 0.1, and ``zero_grad(set_to_none=True)``
ends the step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.attention import SDPBackend

from llama import Llama, loss_fn
from options import DDP_BUCKET_CAP_MB, RunOptions

_BACKENDS = {
    "flash": [SDPBackend.FLASH_ATTENTION],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION],
    "cudnn": [SDPBackend.CUDNN_ATTENTION],
    "math": [SDPBackend.MATH],
}


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device


@dataclass
class Trainer:
    """``step()`` runs forward+backward over all micro-batches, optimizer step, zero_grad."""

    step: Callable[[], None]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    info: dict[str, Any]
    # bytes allocated after the forward (loss included) of a step's first micro-batch
    # minus before it; None where not measured (pp, CPU)
    retained_after_forward: list[int | None] = field(default_factory=lambda: [None])
    # the step's loss (sum over micro-batches of loss / grad_accum), detached; None on
    # pipeline stages other than the last
    last_loss: list[torch.Tensor | None] = field(default_factory=lambda: [None])
    # where a timed step has got to: (name, host perf_counter, CUDA event or None) after
    # the forward and the backward of the last micro-batch, the optimizer step and
    # zero_grad; None: off
    marks: list[tuple[str, float, Any]] | None = None

    def mark(self, name: str) -> None:
        """Note the host's time and enqueue a device event (no synchronisation)."""
        if self.marks is None:
            return
        event = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            event = torch.cuda.Event(enable_timing=True)
            event.record()
        self.marks.append((name, time.perf_counter(), event))


def _autocast(opts: RunOptions, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if opts.precision == "bf16-autocast" and opts.mode != "fsdp2":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _allocated(device: torch.device) -> int | None:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else None


def _batches(opts: RunOptions, ctx: DistContext, count: int) -> list[tuple[torch.Tensor, ...]]:
    """Fixed random token ids and targets (seed + rank; tp: same data on every rank)."""
    gen = torch.Generator().manual_seed(opts.seed + (0 if opts.mode == "tp" else ctx.rank))
    shape = (opts.mbs, opts.model.seq_len)
    v = opts.model.vocab_size
    return [
        tuple(torch.randint(0, v, shape, generator=gen).to(ctx.device) for _ in range(2))
        for _ in range(count)
    ]


def _optimizer(opts: RunOptions, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    foreach = None if opts.foreach else False
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1, foreach=foreach)


def _materialise(model: nn.Module, opts: RunOptions, device: torch.device) -> None:
    model.to_empty(device=device)
    for module in model.modules():
        if isinstance(module, Llama):
            module.tie_weights()
            module.init_weights(opts.seed)


def _new_model(opts: RunOptions, **stage: Any) -> Llama:
    dtype = torch.bfloat16 if opts.precision == "bf16" else torch.float32
    with torch.device("meta"):
        model = Llama(opts.model, sdpa_backends=_BACKENDS.get(opts.sdpa_backend), **stage)
    model.set_recompute(opts.recompute == "full")
    return model.to(dtype)


def _parallelize(
    model: Llama, opts: RunOptions, ctx: DistContext
) -> tuple[nn.Module, dict[str, Any]]:
    if opts.mode == "single":
        return model, {}
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    if opts.mode == "fsdp2":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy()
        if opts.precision == "bf16-autocast":
            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for block in model.layers.values():
            fully_shard(block, mesh=mesh, mp_policy=mp)
        fully_shard(model, mesh=mesh, mp_policy=mp)
        return model, {
            "fsdp_param_dtype": str(mp.param_dtype),
            "fsdp_reduce_dtype": str(mp.reduce_dtype),
            "reshard_after_forward": "default",
        }
    if opts.mode == "tp":
        _apply_tp(model, mesh)
        return model, {
            "tp_plan": "qkv/w1/w3 colwise, wo/w2 rowwise, embedding rowwise "
            "(vocab-sharded), output colwise with replicated logits"
        }
    if opts.mode == "ddp":
        return model, {"ddp_bucket_cap_mb": DDP_BUCKET_CAP_MB, "ddp_no_sync_accumulation": True}
    raise ValueError(f"unknown mode {opts.mode}")


def _apply_tp(model: Llama, mesh: Any) -> None:
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    plan: dict[str, Any] = {
        "tok_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()),
        "output": ColwiseParallel(output_layouts=Replicate()),
    }
    for name in (
        "attention.wq",
        "attention.wk",
        "attention.wv",
        "feed_forward.w1",
        "feed_forward.w3",
    ):
        plan.update({f"layers.{i}.{name}": ColwiseParallel() for i in model.layers})
    for name in ("attention.wo", "feed_forward.w2"):
        plan.update({f"layers.{i}.{name}": RowwiseParallel() for i in model.layers})
    parallelize_module(model, mesh, plan)


def build_local_trainer(opts: RunOptions, ctx: DistContext) -> Trainer:
    """single, ddp, fsdp2 and tp: each rank runs the micro-batch loop itself."""
    model, info = _parallelize(_new_model(opts), opts, ctx)
    _materialise(model, opts, ctx.device)
    wrapped: nn.Module = model
    if opts.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=ids, bucket_cap_mb=DDP_BUCKET_CAP_MB)
    optimizer = _optimizer(opts, wrapped.parameters())
    batches = _batches(opts, ctx, opts.grad_accum)
    trainer = Trainer(lambda: None, wrapped, optimizer, info)

    def step() -> None:
        total = torch.zeros((), device=ctx.device)
        for i, (tokens, targets) in enumerate(batches):
            last = i == len(batches) - 1
            sync = contextlib.nullcontext()
            if opts.mode == "ddp" and not last:
                sync = wrapped.no_sync()  # type: ignore[operator]
            with sync:
                before = _allocated(ctx.device)
                with _autocast(opts, ctx.device):
                    loss = loss_fn(wrapped(tokens), targets) / opts.grad_accum
                if i == 0 and before is not None:
                    trainer.retained_after_forward[0] = _allocated(ctx.device) - before  # type: ignore[operator]
                if last:
                    trainer.mark("forward")
                loss.backward()
                total += loss.detach()
        trainer.last_loss[0] = total
        trainer.mark("backward")
        optimizer.step()
        trainer.mark("optimizer")
        optimizer.zero_grad(set_to_none=True)
        trainer.mark("zero_grad")

    trainer.step = step
    return trainer


class _AutocastStage(nn.Module):
    """Runs the stage's forward under autocast, so the schedule's backward is not."""

    def __init__(self, inner: Llama, opts: RunOptions, device: torch.device) -> None:
        super().__init__()
        self.inner = inner
        self.opts = opts
        self.device_type = device.type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _autocast(self.opts, torch.device(self.device_type)):
            out: torch.Tensor = self.inner(x)
            return out


def stage_layers(num_layers: int, stages: int, stage: int) -> range:
    """Contiguous layer ids of ``stage``; the first ``num_layers % stages`` get one more."""
    base, extra = divmod(num_layers, stages)
    start = stage * base + min(stage, extra)
    return range(start, start + base + (1 if stage < extra else 0))


def build_pp_trainer(opts: RunOptions, ctx: DistContext) -> Trainer:
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    n, r = ctx.world_size, ctx.rank
    layers = stage_layers(opts.model.num_layers, n, r)
    inner = _new_model(opts, layer_ids=layers, has_embedding=r == 0, has_head=r == n - 1)
    _materialise(inner, opts, ctx.device)
    module = _AutocastStage(inner, opts, ctx.device)
    stage = PipelineStage(module, r, n, ctx.device)
    schedule_cls = Schedule1F1B if opts.pp_schedule == "1f1b" else ScheduleGPipe
    schedule = schedule_cls(stage, n_microbatches=opts.grad_accum, loss_fn=loss_fn)
    optimizer = _optimizer(opts, module.parameters())
    # One batch of mbs * grad_accum sequences, split by the schedule into micro-batches.
    gen = torch.Generator().manual_seed(opts.seed)
    shape = (opts.mbs * opts.grad_accum, opts.model.seq_len)
    tokens, targets = (
        torch.randint(0, opts.model.vocab_size, shape, generator=gen).to(ctx.device)
        for _ in range(2)
    )

    trainer = Trainer(lambda: None, module, optimizer, {})

    def step() -> None:
        losses: list[torch.Tensor] = []
        if r == 0:
            schedule.step(tokens)
        elif r == n - 1:
            schedule.step(target=targets, losses=losses)
            trainer.last_loss[0] = torch.stack([x.detach() for x in losses]).mean()
        else:
            schedule.step()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    split = [stage_layers(opts.model.num_layers, n, s) for s in range(n)]
    trainer.info = {
        "pp_stage_layers": [[s.start, s.stop - 1] for s in split],
        "pp_scale_grads": True,
        "pp_microbatches": opts.grad_accum,
    }
    trainer.step = step
    return trainer


def build_trainer(opts: RunOptions, ctx: DistContext) -> Trainer:
    if opts.mode == "pp":
        return build_pp_trainer(opts, ctx)
    return build_local_trainer(opts, ctx)


def local_param_count(model: nn.Module) -> int:
    """Elements this rank stores (DTensor parameters count their local shard)."""
    total = 0
    for p in model.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        total += local.numel()
    return total


def world_barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
