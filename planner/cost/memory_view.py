"""A read-only view of the memory model's terms, for the tensor lifetimes of
``planner.memplan``: one stage's nodes per micro-batch and the states held through the
step, exactly as ``planner.cost.memory.stage_memory`` adds them up (it reads that module's
cached helpers rather than repeating the arithmetic)."""

from __future__ import annotations

from dataclasses import dataclass

from planner.cost.memory import (
    MemoryContext,
    _gathered_weights,
    _optimizer_temporaries,
    _persistent_buffers,
    _rank_params,
    _stage_nodes,
    _states,
    _tokens,
    virtual_stages,
)
from planner.cost.memory_nodes import NodeLayout, graph_view, head_transient


@dataclass(frozen=True)
class NodeBytes:
    """One graph node of a virtual stage for one micro-batch on one GPU (bytes): a public
    view of the terms ``stage_memory`` adds up, for the tensor lifetimes of
    ``planner.memplan``."""

    saved: float
    grads_params: float
    """Parameters whose gradients the node's backward writes (a count, not bytes)."""
    workspace: float
    forward_only: float


@dataclass(frozen=True)
class RankStates:
    """What one GPU of a pipeline rank holds through the whole step (bytes)."""

    weights: float
    gradients: float
    """All of the rank's gradients (held across the step when they accumulate)."""
    optimizer: float
    extra: float
    """Gathered ZeRO-3 weights, the DDP bucket copy, communication buckets, the
    implementation's persistent buffers (Megatron's global score buffer)."""
    grads_accumulate: bool
    optimizer_temporaries: float
    head_forward_transient: float
    """The fp32 logits of the output layer's forward (0 off the last stage)."""
    kept_logits: float = 0.0
    """One micro-batch's logits held past its loss (0 off the last stage): by the training
    loop through that micro-batch's backward, or by a pipeline runtime until the step
    returns (``kept_until_step_end``). Part of ``head_forward_transient`` while the head's
    forward runs."""
    kept_until_step_end: bool = False


def chunk_node_bytes(ctx: MemoryContext, rank: int) -> list[tuple[int, tuple[NodeBytes, ...]]]:
    """(virtual stage, its nodes in forward order) for each chunk of ``rank``."""
    chunks = virtual_stages(ctx.model, ctx.layout)
    result = []
    for chunk in range(ctx.layout.vpp or 1):
        virtual = chunk * ctx.layout.pp + rank
        nodes = _stage_nodes(ctx, chunks, virtual, graph_view(ctx.graph), NodeLayout.of(ctx.layout))
        view = tuple(NodeBytes(n.saved, n.grads, n.workspace, n.forward_only) for n in nodes)
        result.append((virtual, view))
    return result


def rank_states(ctx: MemoryContext, rank: int) -> RankStates:
    """The whole-step states of one GPU of ``rank``, as ``stage_memory`` counts them."""
    layout, vpp = ctx.layout, ctx.layout.vpp or 1
    chunks = virtual_stages(ctx.model, layout)
    mine = [chunk * layout.pp + rank for chunk in range(vpp)]
    dense, expert = _rank_params(ctx, rank, chunks, graph_view(ctx.graph))
    weights, grads_full, optimizer = _states(ctx, dense, expert)
    extra = (
        _gathered_weights(ctx, chunks, mine)
        + (grads_full if ctx.ddp_bucket_copy else 0.0)
        + ctx.communication_buckets
        + _persistent_buffers(ctx)
    )
    last = len(chunks) - 1 in mine
    per_logit = max(ctx.kept_output_bytes, ctx.loop_logits_bytes)
    return RankStates(
        weights=weights,
        gradients=grads_full,
        optimizer=optimizer,
        extra=extra,
        grads_accumulate=ctx.states.grads_persistent or ctx.microbatches > 1,
        optimizer_temporaries=_optimizer_temporaries(ctx, dense + expert, rank, chunks),
        head_forward_transient=(
            head_transient(ctx.graph.output, tokens=_tokens(ctx), tp=layout.tp, backward=False)
            if last
            else 0.0
        ),
        kept_logits=per_logit * _tokens(ctx) * ctx.model.vocab_size / layout.tp if last else 0.0,
        kept_until_step_end=layout.pp > 1 and ctx.kept_output_bytes > 0,
    )
