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

from collections.abc import Iterator
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
from planner.graph.ops import LayerNode, ModelGraph
from planner.specs.layout import ParallelConfig, virtual_stage_layer_counts
from planner.specs.model import ModelSpec

OptimizerKind = Literal["fused", "foreach", "per_tensor", "chunked"]
"""How the optimizer step allocates temporaries: ``fused`` multi-tensor kernels (Apex /
Transformer Engine / DeepSpeed FusedAdam) none; PyTorch's ``foreach`` AdamW one copy of
every local parameter in the moment dtype (``_foreach_sqrt`` of the second moment);
``per_tensor`` (``foreach=False``) two copies of the largest tensor (``sqrt`` and the
division by the bias correction); ``chunked``: a fused AdamW over fp32 master weights run
one chunk at a time (a layer, the embedding, the final norm with the output layer), each
chunk's low-precision gradients up-cast to a transient fp32 copy: one fp32 copy of the
largest local chunk."""


LOGITS_BLOCK_BYTES = 4
FP32_BYTES = 4
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
    logits_floor: bool = True
    """The last stage reserves at least one fp32 logits block: the default caching
    allocator splits a freed block of that size for smaller requests, so the next one
    opens a new segment. False where the share was measured with expandable segments,
    which grow the segment instead (the measured steps reserved 0.01-0.46% over their
    allocated peaks with 2-4 GiB logits blocks: ``cost.reserve``)."""


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
    grads_bucket_view: bool = False
    """DDP ``gradient_as_bucket_view``: the gradients are views into its persistent buckets,
    so they exist at every moment (and there is no second copy)."""
    reshard_after_forward: bool = True
    """FSDP2 / ZeRO-3: False keeps every unit's gathered parameters from its forward until
    its backward (ZeRO-2-like)."""
    kept_output_bytes: float = 0.0
    """Bytes per token and vocabulary entry of the last stage's output (the logits) that the
    pipeline runtime keeps for every micro-batch until the step returns
    (``torch.distributed.pipelining``); 0: none kept (Megatron, DeepSpeed)."""
    loop_logits_bytes: float = 0.0
    """Bytes per token and vocabulary entry of the logits the training loop holds through
    the backward of its micro-batch (0: released when the loss is formed)."""


def stage_memory(ctx: MemoryContext) -> list[StageMemory]:
    """Memory of one GPU of every pipeline stage, first stage first."""
    return list(iter_stage_memory(ctx))


def iter_stage_memory(ctx: MemoryContext) -> Iterator[StageMemory]:
    """``stage_memory``'s stages one at a time, first stage first (the same computation
    per stage): a caller that only needs to know whether every stage fits can stop at the
    first that does not."""
    chunks = virtual_stages(ctx.model, ctx.layout)
    view, layout = graph_view(ctx.graph), NodeLayout.of(ctx.layout)
    for rank in range(ctx.layout.pp):
        yield _rank_memory(ctx, rank, chunks, view, layout)


def virtual_stages(model: ModelSpec, layout: ParallelConfig) -> list[list[int]]:
    """Layer indices of each virtual stage, in pipeline order (chunk-major: c * pp + rank)."""
    stages: list[list[int]] = []
    next_layer = 0
    for size in virtual_stage_layer_counts(model, layout):
        stages.append(list(range(next_layer, next_layer + size)))
        next_layer += size
    return stages


def rank_parameters(ctx: MemoryContext, rank: int) -> float:
    """Parameters one GPU of pipeline rank ``rank`` holds (before data-parallel sharding)."""
    chunks = virtual_stages(ctx.model, ctx.layout)
    dense, expert = _rank_params(ctx, rank, chunks, graph_view(ctx.graph))
    return dense + expert


def parameters_per_rank(ctx: MemoryContext) -> list[float]:
    """``rank_parameters`` of every pipeline rank, first first (the stages split once)."""
    chunks, view = virtual_stages(ctx.model, ctx.layout), graph_view(ctx.graph)
    held = (_rank_params(ctx, rank, chunks, view) for rank in range(ctx.layout.pp))
    return [dense + expert for dense, expert in held]


def static_lower_bound(ctx: MemoryContext) -> float:
    """A lower bound on the largest ``StageMemory.total`` of ``stage_memory(ctx)``, bytes.

    Every moment of ``_rank_memory`` holds the weights, optimizer states and the static
    buffers, and activations and transients that are never negative; the optimizer
    moment holds every gradient, the forward moment the gathered weights and the
    persistent gradients. So the peak of each rank is at least (weights + optimizer +
    static buffers + the larger of those two) x (1 + fragmentation) + the non-allocator
    reserve. The planner rejects layouts whose bound already exceeds
    the capacity without computing their activations; the floating-point sums are in
    another order than ``_rank_memory``'s, so callers compare with a relative margin.
    """
    layout, vpp = ctx.layout, ctx.layout.vpp or 1
    chunks = virtual_stages(ctx.model, layout)
    view = graph_view(ctx.graph)
    persistent = ctx.states.grads_persistent or ctx.grads_bucket_view
    largest = 0.0
    for rank in range(layout.pp):
        mine = [chunk * layout.pp + rank for chunk in range(vpp)]
        dense, expert = _rank_params(ctx, rank, chunks, view)
        weights, grads_full, optimizer = _states(ctx, dense, expert)
        extra = (
            (grads_full if ctx.ddp_bucket_copy else 0.0)
            + ctx.communication_buckets
            + _persistent_buffers(ctx)
        )
        # the optimizer moment holds every gradient; the forward moment the gathered
        # weights and the persistent gradients
        during = _gathered_weights(ctx, chunks, mine) + (grads_full if persistent else 0.0)
        held = weights + optimizer + max(grads_full, during) + extra
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
    if layout.pipeline_schedule == "gpipe":
        # every forward before any backward: all micro-batches in flight on every stage
        in_flight = ctx.microbatches * sum(per_microbatch)
    else:
        in_flight = peak_in_flight(
            rank=rank,
            pp=layout.pp,
            vpp=vpp,
            microbatches=ctx.microbatches,
            chunk_bytes=per_microbatch,
            group=layout.microbatch_group_size_per_vp_stage,
        )
    weights_params, expert_params = _rank_params(ctx, rank, chunks, view)
    weights, grads_full, optimizer = _states(ctx, weights_params, expert_params)
    grads_accumulate = _grads_before_peak(ctx, rank)
    static_grads = grads_full if grads_accumulate else 0.0
    # buffers alive at every moment of the step, the optimizer's included
    static_extra = (
        (grads_full if ctx.ddp_bucket_copy else 0.0)
        + ctx.communication_buckets
        + _persistent_buffers(ctx)
    )
    # alive through the forward and backward passes only: gathered weights (resharded
    # before the optimizer step) and the outputs a pipeline runtime keeps
    is_last = last_virtual in my_chunks
    during = _gathered_weights(ctx, chunks, my_chunks)
    if ctx.grads_bucket_view and ctx.microbatches > 1:
        # DDP accumulates under ``no_sync`` into ordinary gradient tensors, which the last
        # micro-batch's backward copies into the buckets: both exist until then
        during += grads_full
    # logits held past their loss: every micro-batch's by a pipeline runtime, the running
    # one's by the training loop
    logits = _tokens(ctx) * ctx.model.vocab_size / layout.tp if is_last else 0.0
    per_logit = max(ctx.kept_output_bytes, ctx.loop_logits_bytes)
    kept_count = ctx.microbatches if layout.pp > 1 and ctx.kept_output_bytes else 1
    kept = kept_count * per_logit * logits

    # moments: (activations, grads, transient), scanned in order; the first largest
    # activations + grads + transient is the peak (as ``max`` over the list would pick)
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
    # the forward's logits are among the kept ones (the head's transient counts them too)
    forward_kept = kept - logits * per_logit
    best = (in_flight, static_grads, head_transient + cached_casts + during + forward_kept)
    during += kept
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
        for moment in (
            (acts, grads, nodes[position].workspace + during),
            (acts, grads + own, during),
        ):
            total = moment[0] + moment[1] + moment[2]
            if total > best_total:
                best, best_total, name = moment, total, f"backward:{position}"
    moment = (
        0.0,
        grads_full,
        _optimizer_temporaries(ctx, weights_params + expert_params, rank, chunks),
    )
    total = moment[0] + moment[1] + moment[2]
    if total > best_total:
        best, best_total, name = moment, total, "optimizer"
    activations, gradients, transient = best
    extra = static_extra
    allocated = weights + optimizer + activations + gradients + transient + extra
    unusable = allocated * ctx.reserve.fragmentation
    if is_last and ctx.reserve.fragmentation > 0 and ctx.reserve.logits_floor:
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


def _persistent_buffers(ctx: MemoryContext) -> float:
    """Buffers the implementation keeps for the whole run on one GPU: Megatron's global
    score buffer of its local attention (``ModelGraph.persistent_bytes_per_sequence``)."""
    return ctx.layout.mbs * ctx.graph.persistent_bytes_per_sequence / ctx.layout.tp


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


def _layer_param_count(ctx: MemoryContext, layer: LayerNode) -> float:
    return layer.params.per_gpu(tp=ctx.layout.tp, expert_shards=_expert_shards(ctx))


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
    """Under ZeRO-3 / FSDP, while the forward and backward run: the unsharded copy of the
    running unit and the prefetched next (every unit of the rank when units are not
    resharded after their forward), and the running unit's unsharded gradients. The
    units are the layers and, on the end stages, the embedding and the output layer
    (FSDP2 and torchtitan wrap each on its own)."""
    if effective_zero_stage(ctx) < 3:
        return 0.0
    units = _unit_param_counts(ctx, chunks, mine)
    if not units:
        return 0.0
    largest = max(units)
    if ctx.reshard_after_forward:
        gathered = 2 * largest * ctx.states.gathered_weight_bytes
    else:
        gathered = sum(units) * ctx.states.gathered_weight_bytes
    unsharded_grads = largest * ctx.states.grad_bytes
    return gathered + unsharded_grads


def _unit_param_counts(ctx: MemoryContext, chunks: list[list[int]], mine: list[int]) -> list[float]:
    """Parameters on one GPU (before data-parallel sharding) of each layer, and of the
    embedding and the output layer with the final norm where this rank holds them."""
    layout = ctx.layout
    units = [
        _layer_param_count(ctx, ctx.graph.layers[i]) for virtual in mine for i in chunks[virtual]
    ]
    if 0 in mine:
        units.append(ctx.graph.embedding.params.per_gpu(tp=layout.tp, expert_shards=1))
    if len(chunks) - 1 in mine:
        units.append(ctx.graph.output.params.per_gpu(tp=layout.tp, expert_shards=1))
    return units


def _grads_before_peak(ctx: MemoryContext, rank: int) -> bool:
    """Whether every gradient of the rank exists at its forward peak and through the
    backward of its last in-flight micro-batch.

    Persistent gradient buffers (and DDP's bucket views) always exist. Gradients
    allocated in backward exist once an earlier micro-batch's backward has run on this
    rank: in 1F1B, rank r reaches its peak of min(p - r, m) micro-batches in flight before
    its first backward, and again after it while m is larger; GPipe runs every forward
    before any backward; the interleaved schedule (not walked here) and gradient
    accumulation without a pipeline: whenever there is more than one micro-batch.
    """
    if ctx.states.grads_persistent or ctx.grads_bucket_view:
        return True
    layout, m = ctx.layout, ctx.microbatches
    if layout.pipeline_schedule == "gpipe":
        return False
    if (layout.vpp or 1) > 1:
        return m > 1
    return m > min(layout.pp - rank, m)


def _optimizer_temporaries(
    ctx: MemoryContext, local_params: float, rank: int, chunks: list[list[int]]
) -> float:
    bytes_per_element = ctx.states.moment_bytes / 2
    if ctx.optimizer_kind == "fused":
        return 0.0
    if ctx.optimizer_kind == "foreach":
        return bytes_per_element * local_params
    if ctx.optimizer_kind == "chunked":
        vpp = ctx.layout.vpp or 1
        mine = [chunk * ctx.layout.pp + rank for chunk in range(vpp)]
        units = _unit_param_counts(ctx, chunks, mine)
        shards = (ctx.layout.dp or 1) * ctx.layout.cp if effective_zero_stage(ctx) >= 2 else 1
        return FP32_BYTES * max(units, default=0.0) / shards
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
