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
repeat. The per-node view of a virtual stage and a rank's parameter counts are cached by
what they read (the graph object, the stage's layer range, the layout fields involved);
the cache holds the graph itself, so an id in a key cannot be reused while the entry
lives. The moments are scanned without building their labels; only the peak's is named.
The arithmetic is unchanged, operation for operation. (Past ~400 lines: the caches and
the lower bound the planner prunes with sit next to the sums they mirror.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from planner.cost.frameworks import StateLayout
from planner.cost.schedule import peak_in_flight
from planner.graph.ops import EdgeNode, LayerNode, ModelGraph, SavedBytes
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


@dataclass(frozen=True)
class _Node:
    """A graph node as one GPU of a stage sees it, for one micro-batch."""

    saved: float
    grads: float
    workspace: float
    forward_only: float = 0.0
    """Alive until the end of the chunk's forward but not saved for backward: autocast's
    weight casts of recomputed layers stay in the autocast cache until the autocast
    region (the whole forward) ends."""


def stage_memory(ctx: MemoryContext) -> list[StageMemory]:
    """Memory of one GPU of every pipeline stage, first stage first."""
    chunks = virtual_stages(ctx.model, ctx.layout)
    return [_rank_memory(ctx, rank, chunks) for rank in range(ctx.layout.pp)]


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
    dense, expert = _cached_stage_params(ctx, rank, virtual_stages(ctx.model, ctx.layout))
    return dense + expert


_CACHE_LIMIT = 20_000
_node_cache: dict[tuple, tuple[ModelGraph, tuple[_Node, ...]]] = {}
_param_cache: dict[tuple, tuple[ModelGraph, tuple[float, float]]] = {}


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
    grads_accumulate = ctx.states.grads_persistent or ctx.microbatches > 1
    largest = 0.0
    for rank in range(layout.pp):
        mine = [chunk * layout.pp + rank for chunk in range(vpp)]
        dense, expert = _cached_stage_params(ctx, rank, chunks)
        weights, grads_full, optimizer = _states(ctx, dense, expert)
        extra = _extra_buffers(ctx, chunks, mine, grads_full)
        held = weights + optimizer + (grads_full if grads_accumulate else 0.0) + extra
        total = held + held * ctx.reserve.fragmentation + ctx.reserve.non_allocator_bytes
        largest = max(largest, total)
    return largest


def _extra_buffers(
    ctx: MemoryContext, chunks: list[list[int]], mine: list[int], grads_full: float
) -> float:
    """Buffers present at every moment of a rank's step besides the model states: gathered
    weights (full sharding), the DDP bucket copy, communication buckets and buffers the
    implementation keeps (Megatron's score buffer of its local attention)."""
    return (
        _gathered_weights(ctx, chunks, mine)
        + (grads_full if ctx.ddp_bucket_copy else 0.0)
        + ctx.communication_buckets
        + ctx.layout.mbs * ctx.graph.persistent_bytes_per_sequence / ctx.layout.tp
    )


def layer_footprint(ctx: MemoryContext, layer_id: int) -> tuple[float, float]:
    """(model states, saved activations of one micro-batch) of one layer on one GPU, bytes,
    under ``ctx.layout``'s sharding and recomputation (full recomputation as groups of
    ``recompute_num_layers``, the layer first in its group: it keeps its input).

    A read-only view of the terms ``stage_memory`` adds up, for the stage-partition solver.
    """
    node = _chunk_nodes(ctx, [[], [layer_id], []], 1)[0]
    layer = ctx.graph.layers[layer_id]
    expert = layer.params.expert / _expert_shards(ctx)
    dense = layer.params.per_gpu(tp=ctx.layout.tp, expert_shards=1) - layer.params.expert
    weights, grads, optimizer = _states(ctx, dense, expert)
    return weights + grads + optimizer, node.saved


_shape_cache: dict[int, tuple[ModelGraph, list[int]]] = {}


def _layer_classes(graph: ModelGraph) -> list[int]:
    """For each layer, the first layer equal to it in everything but its index: the nodes
    of a virtual stage depend on its layers only through these (cached per graph)."""
    hit = _shape_cache.get(id(graph))
    if hit is not None and hit[0] is graph:
        return hit[1]
    first: dict[LayerNode, int] = {}
    classes = [
        first.setdefault(dataclasses.replace(layer, index=0), i)
        for i, layer in enumerate(graph.layers)
    ]
    if len(_shape_cache) >= _CACHE_LIMIT:
        _shape_cache.clear()
    _shape_cache[id(graph)] = (graph, classes)
    return classes


def _node_key(ctx: MemoryContext, chunks: list[list[int]], virtual: int) -> tuple:
    """What ``_chunk_nodes`` reads: the stage's layers up to equality, its ends, the layout
    fields; equal stages of different ranks and layouts share an entry. A field that
    ``_chunk_nodes`` starts reading must join the key (tests/search/test_fast_paths.py
    compares cached and uncached numbers)."""
    layout, layers = ctx.layout, chunks[virtual]
    classes = _layer_classes(ctx.graph)
    return (
        id(ctx.graph),
        tuple(classes[i] for i in layers),
        virtual == 0,
        virtual == len(chunks) - 1,
        layout.tp,
        layout.cp,
        layout.mbs,
        layout.sequence_parallel,
        layout.recompute,
        layout.recompute_method,
        layout.recompute_num_layers,
        layout.expert_tp,
        layout.ep,
    )


def _cached_chunk_nodes(
    ctx: MemoryContext, chunks: list[list[int]], virtual: int
) -> tuple[_Node, ...]:
    """``_chunk_nodes``, cached by what it reads (module docstring)."""
    key = _node_key(ctx, chunks, virtual)
    hit = _node_cache.get(key)
    if hit is not None and hit[0] is ctx.graph:
        return hit[1]
    nodes = tuple(_chunk_nodes(ctx, chunks, virtual))
    if len(_node_cache) >= _CACHE_LIMIT:
        _node_cache.clear()
    _node_cache[key] = (ctx.graph, nodes)
    return nodes


def _cached_stage_params(
    ctx: MemoryContext, rank: int, chunks: list[list[int]]
) -> tuple[float, float]:
    """``_stage_params``, cached by what it reads (module docstring)."""
    layout, vpp = ctx.layout, ctx.layout.vpp or 1
    mine = [chunk * layout.pp + rank for chunk in range(vpp)]
    classes = _layer_classes(ctx.graph)
    key = (
        id(ctx.graph),
        tuple(tuple(classes[i] for i in chunks[v]) for v in mine),
        0 in mine,
        len(chunks) - 1 in mine,
        layout.pp > 1,
        layout.tp,
        layout.expert_tp,
        layout.ep,
    )
    hit = _param_cache.get(key)
    if hit is not None and hit[0] is ctx.graph:
        return hit[1]
    value = _stage_params(ctx, rank, chunks)
    if len(_param_cache) >= _CACHE_LIMIT:
        _param_cache.clear()
    _param_cache[key] = (ctx.graph, value)
    return value


def _rank_memory(ctx: MemoryContext, rank: int, chunks: list[list[int]]) -> StageMemory:
    layout, vpp = ctx.layout, ctx.layout.vpp or 1
    last_virtual = len(chunks) - 1
    my_chunks = [chunk * layout.pp + rank for chunk in range(vpp)]
    nodes_per_chunk = [_cached_chunk_nodes(ctx, chunks, virtual) for virtual in my_chunks]
    chunk_saved = [sum(node.saved for node in nodes) for nodes in nodes_per_chunk]
    per_microbatch = chunk_saved
    in_flight = peak_in_flight(
        rank=rank,
        pp=layout.pp,
        vpp=vpp,
        microbatches=ctx.microbatches,
        chunk_bytes=per_microbatch,
    )
    weights_params, expert_params = _cached_stage_params(ctx, rank, chunks)
    weights, grads_full, optimizer = _states(ctx, weights_params, expert_params)
    grads_accumulate = ctx.states.grads_persistent or ctx.microbatches > 1
    static_grads = grads_full if grads_accumulate else 0.0
    extra = _extra_buffers(ctx, chunks, my_chunks, grads_full)

    # moments: (activations, grads, transient), scanned in order; the first largest
    # activations + grads + transient is the peak (as ``max`` over the list would pick)
    is_last = last_virtual in my_chunks
    head_transient = _head_transient(ctx, backward=False) if is_last else 0.0
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


def _tokens(ctx: MemoryContext) -> float:
    """Tokens of one micro-batch on one GPU before sequence-parallel splitting."""
    return ctx.layout.mbs * ctx.graph.seq_len / ctx.layout.cp


def _per_token(ctx: MemoryContext, saved: SavedBytes) -> float:
    layout = ctx.layout
    return saved.sharded(
        tp=layout.tp,
        sp_divisor=layout.tp if layout.sequence_parallel else 1,
        etp=layout.expert_tp,
        selective=layout.recompute == "selective",
        cp=layout.cp,
    )


def _chunk_nodes(ctx: MemoryContext, chunks: list[list[int]], virtual: int) -> list[_Node]:
    """The nodes of one virtual stage, in forward order, as one GPU holds them."""
    layout, tokens = ctx.layout, _tokens(ctx)
    sp_divisor = layout.tp if layout.sequence_parallel else 1
    nodes: list[_Node] = []
    if virtual == 0:
        nodes.append(_edge(ctx, ctx.graph.embedding))
    layer_ids = chunks[virtual]
    recomputed = _recomputed_groups(layout, len(layer_ids))
    for position, layer_id in enumerate(layer_ids):
        layer = ctx.graph.layers[layer_id]
        casts = layer.weight_cast_bytes / layout.tp
        full = tokens * _per_token(ctx, layer.saved) + _per_microbatch(ctx, layer)
        workspace = tokens * _layer_workspace(ctx, layer) / layout.tp
        if layout.recompute == "selective":
            workspace += layer.score_mask_bytes
        group = recomputed.get(position)
        forward_only = 0.0
        if group is None:
            saved = full
        else:
            forward_only = casts
            first, size = group
            stored_input = tokens * layer.input_bytes_per_token / sp_divisor
            saved = stored_input if position == first else 0.0
            group_layers = [ctx.graph.layers[layer_ids[first + k]] for k in range(size)]
            workspace += sum(
                tokens * _per_token(ctx, g.saved) + _per_microbatch(ctx, g) for g in group_layers
            )
        nodes.append(
            _Node(
                saved=saved,
                grads=_layer_param_count(ctx, layer),
                workspace=workspace,
                forward_only=forward_only,
            )
        )
    if virtual == len(chunks) - 1:
        nodes.append(_edge(ctx, ctx.graph.output, transient=_head_transient(ctx, backward=True)))
    return nodes


def _per_microbatch(ctx: MemoryContext, layer: LayerNode) -> float:
    """A block's saved bytes per micro-batch that do not scale with its tokens: autocast's
    weight copies and, unless selective recomputation rebuilds it, the score mask."""
    mask = 0.0 if ctx.layout.recompute == "selective" else layer.score_mask_bytes
    return layer.weight_cast_bytes / ctx.layout.tp + mask


def _layer_workspace(ctx: MemoryContext, layer: LayerNode) -> float:
    """Bytes per token of the largest set of temporaries in a block's backward (tp region).

    The MLP's gradient temporaries and the attention core's come one after the other;
    under selective recomputation the core's saved tensors (``attention_scores``) are
    recomputed just before its backward and live alongside its temporaries.
    """
    attention = layer.attention_workspace_per_token
    if ctx.layout.recompute == "selective":
        attention += layer.saved.recomputed(cp=ctx.layout.cp)
    return max(layer.backward_workspace_per_token, attention)


def _recomputed_groups(layout: ParallelConfig, layers: int) -> dict[int, tuple[int, int]]:
    """Position -> (first position of its recompute group, group size) for full recompute.

    ``uniform``: the chunk's layers in groups of ``recompute_num_layers``, each keeping
    only its input. ``block``: the first ``recompute_num_layers`` layers, one at a time.
    """
    if layout.recompute != "full":
        return {}
    count = layout.recompute_num_layers or 1
    groups: dict[int, tuple[int, int]] = {}
    if layout.recompute_method == "block":
        for position in range(min(count, layers)):
            groups[position] = (position, 1)
        return groups
    for first in range(0, layers, count):
        size = min(count, layers - first)
        for position in range(first, first + size):
            groups[position] = (first, size)
    return groups


def _edge(ctx: MemoryContext, node: EdgeNode, *, transient: float = 0.0) -> _Node:
    tokens = _tokens(ctx)
    return _Node(
        saved=tokens * _per_token(ctx, node.saved) + node.weight_cast_bytes / ctx.layout.tp,
        grads=node.params.per_gpu(tp=ctx.layout.tp, expert_shards=1),
        workspace=transient,
    )


def _head_transient(ctx: MemoryContext, *, backward: bool) -> float:
    output = ctx.graph.output
    per_token = (
        output.backward_transient_per_token if backward else output.forward_transient_per_token
    )
    return _tokens(ctx) * per_token / ctx.layout.tp


def _expert_shards(ctx: MemoryContext) -> int:
    return ctx.layout.ep * ctx.layout.expert_tp


def _layer_param_count(ctx: MemoryContext, layer: LayerNode) -> float:
    return layer.params.per_gpu(tp=ctx.layout.tp, expert_shards=_expert_shards(ctx))


def _stage_params(ctx: MemoryContext, rank: int, chunks: list[list[int]]) -> tuple[float, float]:
    """(non-expert, routed-expert) parameters on one GPU of pipeline rank ``rank``."""
    layout, vpp = ctx.layout, ctx.layout.vpp or 1
    dense = expert = 0.0
    for chunk in range(vpp):
        virtual = chunk * layout.pp + rank
        for layer_id in chunks[virtual]:
            params = ctx.graph.layers[layer_id].params
            dense += params.per_gpu(tp=layout.tp, expert_shards=1) - params.expert
            expert += params.expert / _expert_shards(ctx)
        if virtual == 0:
            dense += ctx.graph.embedding.params.per_gpu(tp=layout.tp, expert_shards=1)
        if virtual == len(chunks) - 1:
            dense += ctx.graph.output.params.per_gpu(tp=layout.tp, expert_shards=1)
            if ctx.graph.tied_embeddings and layout.pp > 1:
                # Megatron keeps a copy of the tied embedding on the last stage for the output
                dense += ctx.graph.embedding.params.tp / layout.tp
    return dense, expert


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
    largest = max(_layer_param_count(ctx, ctx.graph.layers[i]) for i in layer_ids)
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
