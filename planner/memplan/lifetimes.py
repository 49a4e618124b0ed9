"""Tensor lifetimes of one pipeline stage's training step, from the model graph and schedule.

One GPU of pipeline rank r runs its schedule's ops in order (``planner.cost.schedule``:
the forward and backward of every in-flight micro-batch through each of its model
chunks), then the optimizer step. Each op becomes allocations and frees, with the sizes
the memory model uses (``planner.cost.memory_view``), so the live-bytes peak of the trace
is the memory model's allocated peak:

* at the start: weights, optimizer states, the extra buffers (gathered ZeRO-3 weights,
  bucket copies, Megatron's global score buffer) and, when gradients accumulate, all
  gradients; never freed;
* forward of a chunk for a micro-batch, node by node: each node's saved activations
  (freed by its backward), its forward-only tensors (autocast weight casts of recomputed
  layers: freed when the chunk's forward ends); on the last stage the fp32 logits,
  allocated and freed around the output layer, and the logits held past the loss where
  the runtime holds them (``Runtime.loop_keeps_logits``: the training loop, freed after
  that micro-batch's backward; ``pipeline_keeps_outputs``: every micro-batch's, freed
  before the optimizer step);
* backward, node by node from the last: the node's gradient workspace (allocated, then
  freed), its weight gradients when they do not accumulate (kept until the optimizer
  step), then its saved activations freed;
* the optimizer step's temporaries, allocated and freed; then the gradients that did not
  accumulate are freed.

Micro-batches beyond the first 2p repeat the steady state (``planner.cost.schedule``:
its pattern repeats, so the peak and every distinct moment occur within the first
period), so the trace holds min(m, 2p) of the m micro-batches; ``microbatches_total``
keeps m for the time the recompute/offload choice adds. The logits a pipeline runtime
keeps of the other micro-batches do not repeat but accumulate: one block from the start.

Also recorded, for the placement and the recompute/offload choice: the saved tensors of
one chunk's forward for one micro-batch form a chain (a stack, first node lowest), and
each chain gets a slot per chunk (the lowest slot whose previous chain is already freed);
chains in one slot are tied to one address.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.cost.memory import virtual_stages
from planner.cost.memory_view import chunk_node_bytes, rank_states
from planner.cost.schedule import rank_ops
from planner.memplan.trace import TraceEvent
from planner.predict import Prepared


@dataclass(frozen=True)
class SavedRecord:
    """One node's saved activations for one micro-batch."""

    key: int
    microbatch: int
    virtual: int
    node: int
    layer: int | None
    """The model's layer index; None for the embedding and the output layer."""
    size: int
    alloc_at: int
    free_at: int


@dataclass(frozen=True)
class StageTrace:
    events: tuple[TraceEvent, ...]
    saved: tuple[SavedRecord, ...]
    chains: tuple[tuple[int, ...], ...]
    """Keys of one chunk's saved tensors for one micro-batch, first node first."""
    ties: tuple[tuple[int, int], ...]
    """Pairs of keys (chain heads) placed at the same address."""
    forward_at: dict[int, tuple[int, int]]
    """Position of each node's forward -> (virtual stage, node)."""
    backward_at: dict[int, tuple[int, int]]
    microbatches_simulated: int
    microbatches_total: int


class _Builder:
    def __init__(self) -> None:
        self.events: list[TraceEvent] = []
        self.next_key = 0

    def alloc(self, size: float, label: str) -> int | None:
        if size <= 0:
            return None
        key = self.next_key
        self.next_key += 1
        self.events.append(TraceEvent("alloc", key, round(size), label=label))
        return key

    def free(self, key: int | None) -> None:
        if key is not None:
            self.events.append(TraceEvent("free", key))


def stage_trace(prepared: Prepared, *, stage: int) -> StageTrace:
    """The allocation trace of one GPU of pipeline rank ``stage`` (module docstring)."""
    ctx, layout = prepared.ctx, prepared.layout
    pp, vpp = layout.pp, layout.vpp or 1
    states = rank_states(ctx, stage)
    chunks = dict(chunk_node_bytes(ctx, stage))
    first_layer = _first_layers(prepared)
    group = layout.microbatch_group_size_per_vp_stage if vpp > 1 else None
    # two groups of micro-batches (Megatron's groups of pp unless told otherwise)
    simulated = min(ctx.microbatches, 2 * (group or pp))
    build = _Builder()
    for name, size in (
        ("weights", states.weights),
        ("optimizer states", states.optimizer),
        ("buffers", states.extra),
        ("gradients", states.gradients if states.grads_accumulate else 0.0),
    ):
        build.alloc(size, name)
    kept_rest = None
    if states.kept_until_step_end:
        # the logits the pipeline runtime keeps of the micro-batches the trace does not
        # simulate accumulate before its last period: held from the start (the late
        # moments, the peak among them, then hold every micro-batch's)
        kept_rest = build.alloc((ctx.microbatches - simulated) * states.kept_logits, "kept logits")
    grad_scale = 0.0
    if not states.grads_accumulate:
        params = sum(n.grads_params for nodes in chunks.values() for n in nodes)
        grad_scale = states.gradients / max(params, 1.0)
    saved: dict[tuple[int, int, int], SavedRecord] = {}
    chains: list[tuple[int, ...]] = []
    chain_span: list[tuple[int, int, int]] = []  # (virtual, start, end) per chain
    late_grads: list[int | None] = []
    kept: dict[int, int | None] = {}  # micro-batch -> its logits held past the loss
    forward_at: dict[int, tuple[int, int]] = {}
    backward_at: dict[int, tuple[int, int]] = {}
    last_virtual = len(_all_virtual(prepared)) - 1
    for op in rank_ops(rank=stage, pp=pp, vpp=vpp, microbatches=simulated, group=group):
        virtual = op.chunk * pp + stage
        nodes = chunks[virtual]
        if op.phase == "F":
            casts, chain = [], []
            for i, node in enumerate(nodes):
                layer = _layer_of(first_layer, virtual, i, len(nodes), last_virtual)
                forward_at[len(build.events)] = (virtual, i)
                key = build.alloc(node.saved, f"activations mb{op.microbatch} v{virtual} n{i}")
                if key is not None:
                    saved[op.microbatch, virtual, i] = SavedRecord(
                        key, op.microbatch, virtual, i, layer, round(node.saved),
                        len(build.events) - 1, -1,
                    )  # fmt: skip
                    chain.append(key)
                casts.append(build.alloc(node.forward_only, "weight casts"))
                if virtual == last_virtual and i == len(nodes) - 1:
                    kept[op.microbatch] = build.alloc(
                        states.kept_logits, f"kept logits mb{op.microbatch}"
                    )
                    transient = states.head_forward_transient - states.kept_logits
                    build.free(build.alloc(max(transient, 0.0), "logits"))
            for key in casts:
                build.free(key)
            if chain:
                chains.append(tuple(chain))
                chain_span.append((virtual, saved[op.microbatch, virtual, 0].alloc_at, -1))
            continue
        for i in range(len(nodes) - 1, -1, -1):
            node = nodes[i]
            backward_at[len(build.events)] = (virtual, i)
            build.free(build.alloc(node.workspace, "gradient workspace"))
            late_grads.append(build.alloc(node.grads_params * grad_scale, "gradients"))
            record = saved.get((op.microbatch, virtual, i))
            if record is not None:
                build.free(record.key)
                saved[op.microbatch, virtual, i] = _freed(record, len(build.events) - 1)
        if virtual == last_virtual and not states.kept_until_step_end:
            build.free(kept.pop(op.microbatch, None))
    for key in (*kept.values(), kept_rest):
        build.free(key)
    build.free(build.alloc(states.optimizer_temporaries, "optimizer temporaries"))
    for key in late_grads:
        build.free(key)
    records = tuple(sorted(saved.values(), key=lambda r: r.alloc_at))
    return StageTrace(
        events=tuple(build.events),
        saved=records,
        chains=tuple(chains),
        ties=_slot_ties(chains, records, chain_span),
        forward_at=forward_at,
        backward_at=backward_at,
        microbatches_simulated=simulated,
        microbatches_total=ctx.microbatches,
    )


def _freed(record: SavedRecord, position: int) -> SavedRecord:
    return SavedRecord(
        record.key, record.microbatch, record.virtual, record.node, record.layer, record.size,
        record.alloc_at, position,
    )  # fmt: skip


def _all_virtual(prepared: Prepared) -> list[list[int]]:
    return virtual_stages(prepared.model, prepared.layout)


def _first_layers(prepared: Prepared) -> dict[int, list[int]]:
    """Layer indices of each virtual stage."""
    return dict(enumerate(_all_virtual(prepared)))


def _layer_of(
    layers: dict[int, list[int]], virtual: int, node: int, count: int, last_virtual: int
) -> int | None:
    """The model layer of node ``node`` of ``virtual`` (None for embedding/output)."""
    offset = 1 if virtual == 0 else 0
    index = node - offset
    if virtual == last_virtual and node == count - 1:
        return None
    ids = layers[virtual]
    return ids[index] if 0 <= index < len(ids) else None


def _slot_ties(
    chains: list[tuple[int, ...]],
    records: tuple[SavedRecord, ...],
    spans: list[tuple[int, int, int]],
) -> tuple[tuple[int, int], ...]:
    """Tie each chain's head to the previous occupant of the lowest free slot of its chunk."""
    by_key = {r.key: r for r in records}
    slots: dict[int, list[tuple[int, int]]] = {}  # virtual -> [(head key, end of chain)]
    ties = []
    for chain, (virtual, start, _) in zip(chains, spans, strict=True):
        end = max(by_key[k].free_at for k in chain)
        head = chain[0]
        occupants = slots.setdefault(virtual, [])
        for s, (other, other_end) in enumerate(occupants):
            if other_end < start and _same_sizes(chain, _chain_of(chains, other), by_key):
                ties.append((other, head))
                occupants[s] = (head, end)
                break
        else:
            occupants.append((head, end))
    return tuple(ties)


def _chain_of(chains: list[tuple[int, ...]], head: int) -> tuple[int, ...]:
    return next(c for c in chains if c[0] == head)


def _same_sizes(a: tuple[int, ...], b: tuple[int, ...], by_key: dict[int, SavedRecord]) -> bool:
    return [by_key[k].size for k in a] == [by_key[k].size for k in b]
