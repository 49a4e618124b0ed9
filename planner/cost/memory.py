"""Per-stage, per-GPU memory: model states, activations in flight, transients, reserve.

For every pipeline rank the model walks one training step as a sequence of moments and
keeps the largest total:

* forward peak: every in-flight micro-batch's saved activations (the count comes from
  simulating the schedule, ``planner.cost.schedule``), plus, on the last stage, the
  transient fp32 logits;
* each moment of the backward of the last in-flight micro-batch, node by node from the
  output layer down: activations of the nodes not yet back-propagated, gradients
  allocated so far (when gradients are not a persistent buffer and there is no gradient
  accumulation), and the node's own temporaries (gradient workspace, the recomputed
  activations of a full-recompute group, the logits' gradient on the last stage);
* the optimizer step: states, gradients and the optimizer's temporaries.

Weights, optimizer states and persistent gradients are there at every moment. The largest
moment is what ``torch.cuda.max_memory_allocated`` reports; on top of it come the memory
the caching allocator cannot reuse (fragmentation) and what lives outside it (CUDA
context, communication buffers), from ``MemoryReserve``. Fragmentation is the measured
share of the peak, but on a stage that holds the output layer at least one fp32 logits
tensor (``LOGITS_BLOCK_BYTES`` per token and vocabulary entry): the allocator keeps a
freed block of that size in its segment and splits it for smaller requests, so the next
request of the same size takes a new segment (2026-11-23, one H200: Llama-3.2-1B shape at
32K tokens reserved 15.9 GiB over its allocated peak, one 15.66 GiB logits tensor; the
same step ran out of memory on an H100 asking for that block with 15.4 GiB reserved but
free).

Speed: the planner costs thousands of layouts of one model graph, whose virtual stages
repeat. The per-node view of a virtual stage and a rank's parameter counts are pure
functions cached on frozen inputs holding exactly what they read
(``planner.cost.memory_nodes``). The moments are scanned without building their labels;
only the peak's is named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from planner.cost import memory_nodes
from planner.cost.frameworks import StateLayout
from planner.cost.memory_nodes import (
    GraphView,
    Node,
    NodeLayout,
    StageNodesInput,
    StageParamsInput,
    graph_view,
    stage_nodes,
    stage_params,
)
from planner.cost.schedule import peak_in_flight
from planner.graph.ops import ModelGraph
from planner.specs.layout import ParallelConfig, stage_layer_counts
from planner.specs.model import ModelSpec

OptimizerKind = Literal["fused", "foreach", "per_tensor"]
"""How the optimizer step allocates temporaries: ``fused`` multi-tensor kernels (Apex /
Transformer Engine / DeepSpeed FusedAdam) none; PyTorch's ``foreach`` AdamW one copy of
every local parameter in the moment dtype (``_foreach_sqrt`` of the second moment);
``per_tensor`` (``foreach=False``) two copies of the largest tensor (``sqrt`` and the
division by the bias correction)."""


LOGITS_BLOCK_BYTES = 4
"""Bytes per token and vocabulary entry of the largest block a training step allocates on
the last stage: the fp32 logits (their copy for ``log_softmax``, or the gradient)."""


@dataclass(frozen=True)
class MemoryReserve:
    """Memory beyond the allocator's peak: a fragmentation share and a fixed reserve."""

    fragmentation: float
    """Extra reserved (unusable) memory as a fraction of the allocated peak."""
    non_allocator_bytes: float
    """CUDA context, library workspaces and NCCL buffers, allocated outside PyTorch."""
    source: str


@dataclass(frozen=True)
class StageMemory:
    """One GPU of one pipeline stage at its peak moment (bytes)."""

    stage: int
    weights: float
    gradients: float
    optimizer: float
    activations: float
    transient: float
    reserve: float
    peak_moment: str
    activations_in_flight: float
    """Saved activations of every in-flight micro-batch at the forward peak (the number
    Korthikanti et al. and Megatron's estimator report), whatever moment is the peak."""

    @property
    def allocated(self) -> float:
        """What ``torch.cuda.max_memory_allocated`` would report."""
        return self.weights + self.gradients + self.optimizer + self.activations + self.transient

    @property
    def total(self) -> float:
        return self.allocated + self.reserve


@dataclass(frozen=True)
class MemoryContext:
    """The slice of a request the memory model reads."""

    model: ModelSpec
    graph: ModelGraph
    layout: ParallelConfig
    states: StateLayout
    num_gpus: int
    microbatches: int
    ddp_bucket_copy: bool
    communication_buckets: float
    """Bytes of framework communication buffers outside the gradient buffer (DeepSpeed's
    ZeRO reduce and all-gather buckets), present at every moment of the step."""
    optimizer_kind: OptimizerKind
    reserve: MemoryReserve


def stage_memory(ctx: MemoryContext) -> list[StageMemory]:
    """Memory of one GPU of every pipeline stage, first stage first."""
    chunks = virtual_stages(ctx.model, ctx.layout)
    view, layout = graph_view(ctx.graph), NodeLayout.of(ctx.layout)
    return [_rank_memory(ctx, rank, chunks, view, layout) for rank in range(ctx.layout.pp)]


def virtual_stages(model: ModelSpec, layout: ParallelConfig) -> list[list[int]]:
    """Layer indices of each virtual stage, in pipeline order (chunk-major: c * pp + rank)."""
    counts = stage_layer_counts(model, layout)
    vpp = layout.vpp or 1
    stages: list[list[int]] = []
    next_layer = 0
    for _chunk in range(vpp):
        for rank in range(layout.pp):
            size = counts[rank] // vpp
            stages.append(list(range(next_layer, next_layer + size)))
            next_layer += size
    return stages


def rank_parameters(ctx: MemoryContext, rank: int) -> float:
    """Parameters one GPU of pipeline rank ``rank`` holds (before data-parallel sharding)."""
    chunks = virtual_stages(ctx.model, ctx.layout)
    dense, expert = _rank_params(ctx, rank, chunks, graph_view(ctx.graph))
    return dense + expert


def static_lower_bound(ctx: MemoryContext) -> float:
    """A lower bound on the largest ``StageMemory.total`` of ``stage_memory(ctx)``, bytes.

    Every moment of ``_rank_memory`` holds the weights, optimizer states and the extra
    buffers, at least the persistent gradients (the optimizer moment holds all of them),
    and activations and transients that are never negative, so the peak of each rank is
    at least (weights + optimizer + persistent gradients + extra) x (1 + fragmentation)
    + the non-allocator reserve. The planner rejects layouts whose bound already exceeds
    the capacity without computing their activations; the floating-point sums are in
    another order than ``_rank_memory``'s, so callers compare with a relative margin.
    """
    layout, vpp = ctx.layout, ctx.layout.vpp or 1
    chunks = virtual_stages(ctx.model, layout)
    view = graph_view(ctx.graph)
    grads_accumulate = ctx.states.grads_persistent or ctx.microbatches > 1
    largest = 0.0
    for rank in range(layout.pp):
        mine = [chunk * layout.pp + rank for chunk in range(vpp)]
        dense, expert = _rank_params(ctx, rank, chunks, view)
        weights, grads_full, optimizer = _states(ctx, dense, expert)
        extra = (
            _gathered_weights(ctx, chunks, mine)
            + (grads_full if ctx.ddp_bucket_copy else 0.0)
            + ctx.communication_buckets
        )
        held = weights + optimizer + (grads_full if grads_accumulate else 0.0) + extra
        total = held + held * ctx.reserve.fragmentation + ctx.reserve.non_allocator_bytes
        largest = max(largest, total)
    return largest


def layer_footprint(ctx: MemoryContext, layer_id: int) -> tuple[float, float]:
    """(model states, saved activations of one micro-batch) of one layer on one GPU, bytes,
    under ``ctx.layout``'s sharding and recomputation (full recomputation as groups of
    ``recompute_num_layers``, the layer first in its group: it keeps its input).

    A read-only view of the terms ``stage_memory`` adds up, for the stage-partition solver.
    """
    view, layout = graph_view(ctx.graph), NodeLayout.of(ctx.layout)
    node = _stage_nodes(ctx, [[], [layer_id], []], 1, view, layout)[0]
    layer = ctx.graph.layers[layer_id]
    expert = layer.params.expert / _expert_shards(ctx)
    dense = layer.params.per_gpu(tp=ctx.layout.tp, expert_shards=1) - layer.params.expert
    weights, grads, optimizer = _states(ctx, dense, expert)
    return weights + grads + optimizer, node.saved


def _rank_memory(
    ctx: MemoryContext,
    rank: int,
    chunks: list[list[int]],
    view: GraphView,
    node_layout: NodeLayout,
) -> StageMemory:
    layout, vpp = ctx.layout, ctx.layout.vpp or 1
    last_virtual = len(chunks) - 1
    my_chunks = [chunk * layout.pp + rank for chunk in range(vpp)]
    nodes_per_chunk = [
        _stage_nodes(ctx, chunks, virtual, view, node_layout) for virtual in my_chunks
    ]
    chunk_saved = [sum(node.saved for node in nodes) for nodes in nodes_per_chunk]
    per_microbatch = chunk_saved
    in_flight = peak_in_flight(
        rank=rank,
        pp=layout.pp,
        vpp=vpp,
        microbatches=ctx.microbatches,
        chunk_bytes=per_microbatch,
    )
    weights_params, expert_params = _rank_params(ctx, rank, chunks, view)
    weights, grads_full, optimizer = _states(ctx, weights_params, expert_params)
    grads_accumulate = ctx.states.grads_persistent or ctx.microbatches > 1
    static_grads = grads_full if grads_accumulate else 0.0
    extra = (
        _gathered_weights(ctx, chunks, my_chunks)
        + (grads_full if ctx.ddp_bucket_copy else 0.0)
        + ctx.communication_buckets
    )

    # moments: (activations, grads, transient), scanned in order; the first largest
    # activations + grads + transient is the peak (as ``max`` over the list would pick)
    is_last = last_virtual in my_chunks
    head_transient = (
        memory_nodes.head_transient(
            ctx.graph.output, tokens=_tokens(ctx), tp=layout.tp, backward=False
        )
        if is_last
        else 0.0
    )
    # backward of the last in-flight micro-batch through the chunk with the most activations
    busiest = max(range(vpp), key=lambda c: per_microbatch[c])
    cached_casts = sum(node.forward_only for node in nodes_per_chunk[busiest])
    best = (in_flight, static_grads, head_transient + cached_casts)
    best_total, name = best[0] + best[1] + best[2], "forward"
    others = in_flight - per_microbatch[busiest]
    nodes = nodes_per_chunk[busiest]
    grad_scale = 0.0 if grads_accumulate else grads_full / max(sum(n.grads for n in nodes), 1.0)
    held = sum(node.saved for node in nodes)  # activations of nodes not yet back-propagated
    earlier = 0.0  # gradients of the nodes already back-propagated
    for position in range(len(nodes) - 1, -1, -1):
        if position < len(nodes) - 1:
            held -= nodes[position + 1].saved
            earlier += nodes[position + 1].grads * grad_scale
        own = nodes[position].grads * grad_scale
        # a node's temporaries (its activation gradients) peak before its weight
        # gradients exist; once those are written, the temporaries are gone
        acts, grads = others + held, static_grads + earlier
        for moment in ((acts, grads, nodes[position].workspace), (acts, grads + own, 0.0)):
            total = moment[0] + moment[1] + moment[2]
            if total > best_total:
                best, best_total, name = moment, total, f"backward:{position}"
    moment = (0.0, grads_full, _optimizer_temporaries(ctx, weights_params + expert_params))
    total = moment[0] + moment[1] + moment[2]
    if total > best_total:
        best, best_total, name = moment, total, "optimizer"
    activations, gradients, transient = best
    allocated = weights + optimizer + activations + gradients + transient + extra
    unusable = allocated * ctx.reserve.fragmentation
    if is_last and ctx.reserve.fragmentation > 0:
        logits = _tokens(ctx) * ctx.model.vocab_size / ctx.layout.tp * LOGITS_BLOCK_BYTES
        unusable = max(unusable, logits)
    reserve = unusable + ctx.reserve.non_allocator_bytes
    return StageMemory(
        stage=rank,
        weights=weights,
        gradients=gradients,
        optimizer=optimizer,
        activations=activations,
        transient=transient + extra,
        reserve=reserve,
        peak_moment=name,
        activations_in_flight=in_flight,
    )


def _stage_nodes(
    ctx: MemoryContext, chunks: list[list[int]], virtual: int, view: GraphView, layout: NodeLayout
) -> tuple[Node, ...]:
    """The nodes of virtual stage ``virtual`` as one GPU holds them (cached on what they
    read: ``memory_nodes.stage_nodes``); ``view`` and ``layout`` are ``ctx``'s."""
    return stage_nodes(
        StageNodesInput(
            layers=tuple(map(view.layers.__getitem__, chunks[virtual])),
            embedding=view.embedding if virtual == 0 else None,
            output=view.output if virtual == len(chunks) - 1 else None,
            seq_len=ctx.graph.seq_len,
            layout=layout,
        )
    )


def _rank_params(
    ctx: MemoryContext, rank: int, chunks: list[list[int]], view: GraphView
) -> tuple[float, float]:
    """(non-expert, routed-expert) parameters on one GPU of pipeline rank ``rank`` (cached
    on what they read: ``memory_nodes.stage_params``); ``view`` is ``ctx``'s graph's."""
    layout, vpp = ctx.layout, ctx.layout.vpp or 1
    mine = [chunk * layout.pp + rank for chunk in range(vpp)]
    holds_output = mine[-1] == len(chunks) - 1
    tied = holds_output and ctx.graph.tied_embeddings and layout.pp > 1
    layer = view.layers.__getitem__
    return stage_params(
        StageParamsInput(
            chunks=tuple(tuple(map(layer, chunks[v])) for v in mine),
            embedding=view.embedding if mine[0] == 0 else None,
            output=view.output if holds_output else None,
            tied_embedding=view.embedding if tied else None,
            tp=layout.tp,
            expert_shards=_expert_shards(ctx),
        )
    )


def _tokens(ctx: MemoryContext) -> float:
    return memory_nodes.tokens(mbs=ctx.layout.mbs, seq_len=ctx.graph.seq_len, cp=ctx.layout.cp)


def _expert_shards(ctx: MemoryContext) -> int:
    return ctx.layout.ep * ctx.layout.expert_tp


def effective_zero_stage(ctx: MemoryContext) -> int:
    """The ZeRO stage the states follow: FSDP2 (``fsdp`` layout) always shards everything."""
    return 3 if ctx.states.name == "fsdp" else ctx.layout.zero_stage


def _states(ctx: MemoryContext, dense: float, expert: float) -> tuple[float, float, float]:
    """(weights, gradients, optimizer states) in bytes on one GPU."""
    layout, states = ctx.layout, ctx.states
    dense_shards = (layout.dp or 1) * layout.cp
    expert_shards = ctx.num_gpus // (layout.expert_tp * layout.ep * layout.pp)

    def sharded(bytes_per_param: float, *, when: bool) -> float:
        if not when:
            return bytes_per_param * (dense + expert)
        return bytes_per_param * (dense / dense_shards + expert / max(expert_shards, 1))

    zero = effective_zero_stage(ctx)
    weights = sharded(states.weight_bytes, when=zero >= 3)
    grads = sharded(states.grad_bytes, when=zero >= 2)
    optimizer = sharded(states.master_bytes + states.moment_bytes, when=layout.shards_optimizer)
    return weights, grads, optimizer * (1.0 - layout.offload_optimizer_fraction)


def _gathered_weights(ctx: MemoryContext, chunks: list[list[int]], mine: list[int]) -> float:
    """Under ZeRO-3 / FSDP: the unsharded copy of the running layer and the prefetched next."""
    if effective_zero_stage(ctx) < 3:
        return 0.0
    layer_ids = [i for virtual in mine for i in chunks[virtual]]
    if not layer_ids:
        return 0.0
    expert_shards = _expert_shards(ctx)
    largest = max(
        ctx.graph.layers[i].params.per_gpu(tp=ctx.layout.tp, expert_shards=expert_shards)
        for i in layer_ids
    )
    gathered = 2 * largest * ctx.states.gathered_weight_bytes
    unsharded_grads = largest * ctx.states.grad_bytes
    return gathered + unsharded_grads


def _optimizer_temporaries(ctx: MemoryContext, local_params: float) -> float:
    bytes_per_element = ctx.states.moment_bytes / 2
    if ctx.optimizer_kind == "fused":
        return 0.0
    if ctx.optimizer_kind == "foreach":
        return bytes_per_element * local_params
    return 2 * bytes_per_element * _largest_tensor(ctx)


def _largest_tensor(ctx: MemoryContext) -> float:
    """Elements of the largest single parameter tensor on one GPU."""
    model, tp = ctx.model, ctx.layout.tp
    candidates = [model.vocab_size * model.hidden_size / tp]
    candidates.append(model.ffn_hidden_size * model.hidden_size / tp)
    if model.moe is not None:
        candidates.append(
            model.moe.expert_ffn_hidden_size * model.hidden_size / ctx.layout.expert_tp
        )
    return max(candidates)


def gib(value: float) -> float:
    """Bytes to GiB (2^30), rounded for reports."""
    return round(value / 2**30, 3)


def fits(capacity_bytes: float, stages: list[StageMemory]) -> bool:
    return all(stage.total <= capacity_bytes for stage in stages)
