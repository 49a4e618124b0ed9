"""What one GPU holds of a virtual stage's nodes, and a pipeline rank's parameters: pure
functions of frozen inputs, cached on those inputs.

The planner costs thousands of layouts of one model graph whose virtual stages repeat.
``stage_nodes`` and ``stage_params`` are cached (``functools.lru_cache``) on a frozen input
holding exactly what they read: the stage's layers, its embedding or output layer where it
has one, the sequence length and the layout fields involved (``NodeLayout``). They read
nothing else, so a field they start reading has to be added to their input, which puts it
in the cache key: an entry cannot go stale.

The inputs are named tuples (frozen, and hashed and compared in C: the planner looks
them up about a hundred thousand times per search). Layers and edges enter them as
``keys.Interned`` handles, one per distinct value, which hash and compare in constant time
(hashing a layer's nested dataclasses on every lookup would cost the planner about a
quarter of its time). A layer's index is not read, so layers equal but for their index
share a handle: equal stages of different ranks, layouts and graphs share an entry.
``graph_view`` gives a graph's handles, memoised per graph object (a function of the
whole, immutable graph; the entry holds the graph, so its id is not reused while the
entry lives).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from planner.cost.keys import Interned, intern
from planner.graph.ops import EdgeNode, LayerNode, ModelGraph, SavedBytes
from planner.specs.layout import ParallelConfig, Recompute, RecomputeMethod

CACHE_LIMIT = 20_000
"""Entries each cache keeps (least recently used dropped first)."""

_views: dict[int, tuple[ModelGraph, GraphView]] = {}


@dataclass(frozen=True)
class GraphView:
    """A graph's layers (by index, their index set to 0) and edges as interned handles."""

    layers: tuple[Interned[LayerNode], ...]
    embedding: Interned[EdgeNode]
    output: Interned[EdgeNode]


def graph_view(graph: ModelGraph) -> GraphView:
    """``graph`` as interned handles, memoised per graph object (module docstring)."""
    hit = _views.get(id(graph))
    if hit is not None and hit[0] is graph:
        return hit[1]
    view = GraphView(
        layers=tuple(intern(dataclasses.replace(layer, index=0)) for layer in graph.layers),
        embedding=intern(graph.embedding),
        output=intern(graph.output),
    )
    if len(_views) >= CACHE_LIMIT:
        _views.clear()
    _views[id(graph)] = (graph, view)
    return view


class NodeLayout(NamedTuple):
    """The layout fields the per-node view of a stage reads."""

    tp: int
    cp: int
    mbs: int
    sequence_parallel: bool
    recompute: Recompute
    recompute_method: RecomputeMethod | None
    recompute_num_layers: int | None
    expert_tp: int
    ep: int

    @classmethod
    def of(cls, layout: ParallelConfig) -> NodeLayout:
        return cls(
            tp=layout.tp,
            cp=layout.cp,
            mbs=layout.mbs,
            sequence_parallel=layout.sequence_parallel,
            recompute=layout.recompute,
            recompute_method=layout.recompute_method,
            recompute_num_layers=layout.recompute_num_layers,
            expert_tp=layout.expert_tp,
            ep=layout.ep,
        )


class StageNodesInput(NamedTuple):
    """Everything ``stage_nodes`` reads about one virtual stage."""

    layers: tuple[Interned[LayerNode], ...]
    embedding: Interned[EdgeNode] | None
    """The embedding, on the first virtual stage only."""
    output: Interned[EdgeNode] | None
    """The output layer, on the last virtual stage only."""
    seq_len: int
    layout: NodeLayout


class StageParamsInput(NamedTuple):
    """Everything ``stage_params`` reads about one pipeline rank's virtual stages."""

    chunks: tuple[tuple[Interned[LayerNode], ...], ...]
    """The layers of each of the rank's virtual stages, in chunk order."""
    embedding: Interned[EdgeNode] | None
    """The embedding, where the rank holds the first virtual stage (its first chunk)."""
    output: Interned[EdgeNode] | None
    """The output layer, where the rank holds the last virtual stage (its last chunk)."""
    tied_embedding: Interned[EdgeNode] | None
    """The embedding whose copy Megatron keeps next to a tied output layer when pp > 1."""
    tp: int
    expert_shards: int


@dataclass(frozen=True)
class Node:
    """A graph node as one GPU of a stage sees it, for one micro-batch."""

    saved: float
    grads: float
    workspace: float
    forward_only: float = 0.0
    """Alive until the end of the chunk's forward but not saved for backward: autocast's
    weight casts of recomputed layers stay in the autocast cache until the autocast
    region (the whole forward) ends."""


def tokens(*, mbs: int, seq_len: int, cp: int) -> float:
    """Tokens of one micro-batch on one GPU before sequence-parallel splitting."""
    return mbs * seq_len / cp


def head_transient(output: EdgeNode, *, tokens: float, tp: int, backward: bool) -> float:
    """The output layer's transient bytes in its forward or backward, on one GPU."""
    per_token = (
        output.backward_transient_per_token if backward else output.forward_transient_per_token
    )
    return tokens * per_token / tp


@lru_cache(maxsize=CACHE_LIMIT)
def stage_nodes(stage: StageNodesInput) -> tuple[Node, ...]:
    """The nodes of one virtual stage, in forward order, as one GPU holds them."""
    layout = stage.layout
    count = tokens(mbs=layout.mbs, seq_len=stage.seq_len, cp=layout.cp)
    sp_divisor = layout.tp if layout.sequence_parallel else 1
    nodes: list[Node] = []
    if stage.embedding is not None:
        nodes.append(_edge(layout, count, stage.embedding.value))
    layers = [handle.value for handle in stage.layers]
    recomputed = _recomputed_groups(layout, len(layers))
    for position, layer in enumerate(layers):
        casts = layer.weight_cast_bytes / layout.tp
        full = count * _per_token(layout, layer.saved) + _per_microbatch(layout, layer)
        workspace = count * _layer_workspace(layout, layer) / layout.tp
        if layout.recompute == "selective":
            workspace += layer.score_mask_bytes
        group = recomputed.get(position)
        forward_only = 0.0
        if group is None:
            saved = full
        else:
            forward_only = casts
            first, size = group
            stored_input = count * layer.input_bytes_per_token / sp_divisor
            saved = stored_input if position == first else 0.0
            group_layers = [layers[first + k] for k in range(size)]
            workspace += sum(
                count * _per_token(layout, g.saved) + _per_microbatch(layout, g)
                for g in group_layers
            )
        nodes.append(
            Node(
                saved=saved,
                grads=layer.params.per_gpu(
                    tp=layout.tp, expert_shards=layout.ep * layout.expert_tp
                ),
                workspace=workspace,
                forward_only=forward_only,
            )
        )
    if stage.output is not None:
        output = stage.output.value
        transient = head_transient(output, tokens=count, tp=layout.tp, backward=True)
        nodes.append(_edge(layout, count, output, transient=transient))
    return tuple(nodes)


@lru_cache(maxsize=CACHE_LIMIT)
def stage_params(rank: StageParamsInput) -> tuple[float, float]:
    """(non-expert, routed-expert) parameters on one GPU of a pipeline rank."""
    dense = expert = 0.0
    last = len(rank.chunks) - 1
    for chunk, layers in enumerate(rank.chunks):
        for handle in layers:
            params = handle.value.params
            dense += params.per_gpu(tp=rank.tp, expert_shards=1) - params.expert
            expert += params.expert / rank.expert_shards
        if chunk == 0 and rank.embedding is not None:
            dense += rank.embedding.value.params.per_gpu(tp=rank.tp, expert_shards=1)
        if chunk == last and rank.output is not None:
            dense += rank.output.value.params.per_gpu(tp=rank.tp, expert_shards=1)
            if rank.tied_embedding is not None:
                dense += rank.tied_embedding.value.params.tp / rank.tp
    return dense, expert


def _per_token(layout: NodeLayout, saved: SavedBytes) -> float:
    return saved.sharded(
        tp=layout.tp,
        sp_divisor=layout.tp if layout.sequence_parallel else 1,
        etp=layout.expert_tp,
        selective=layout.recompute == "selective",
        cp=layout.cp,
    )


def _per_microbatch(layout: NodeLayout, layer: LayerNode) -> float:
    """A block's saved bytes per micro-batch that do not scale with its tokens: autocast's
    weight copies and, unless selective recomputation rebuilds it, the score mask."""
    mask = 0.0 if layout.recompute == "selective" else layer.score_mask_bytes
    return layer.weight_cast_bytes / layout.tp + mask


def _layer_workspace(layout: NodeLayout, layer: LayerNode) -> float:
    """Bytes per token of the largest set of temporaries in a block's backward (tp region).

    The MLP's gradient temporaries and the attention core's come one after the other;
    under selective recomputation the core's saved tensors (``attention_scores``) are
    recomputed just before its backward and live alongside its temporaries.
    """
    attention = layer.attention_workspace_per_token
    if layout.recompute == "selective":
        attention += layer.saved.recomputed(cp=layout.cp)
    return max(layer.backward_workspace_per_token, attention)


def _edge(layout: NodeLayout, count: float, node: EdgeNode, *, transient: float = 0.0) -> Node:
    return Node(
        saved=count * _per_token(layout, node.saved) + node.weight_cast_bytes / layout.tp,
        grads=node.params.per_gpu(tp=layout.tp, expert_shards=1),
        workspace=transient,
    )


def _recomputed_groups(layout: NodeLayout, layers: int) -> dict[int, tuple[int, int]]:
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
