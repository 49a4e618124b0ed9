"""Step time of a layout: compute per stage, exposed communication, pipeline, DP, optimizer.

One step is simulated as Megatron-LM runs it:

1. Per virtual stage, the forward and backward time of one micro-batch: the compute of
   its ops (``planner.cost.stage_work``, roofline per op with the GPU's achievable rates)
   plus the communication that stays exposed inside the layers:
   * tensor parallel: per layer two all-reduces of the layer's activations forward and
     two backward (all-gather + reduce-scatter pairs of the same volume with sequence
     parallelism; Korthikanti et al. 2022, section 4.2.2), again in the recomputed
     forward; exposed unless ``tp_comm_overlap`` hides them behind the adjacent GEMMs;
   * context parallel: the ring exchange of K and V (forward once, backward twice: the
     Megatron CP guide), hidden behind the attention kernel when the kernel is longer;
     the head-scattering all-to-alls of Ulysses (a2a) and of a2a+p2p's inner groups,
     exposed;
   * expert parallel: the dispatch and combine all-to-alls, forward and backward, exposed.
2. The pipeline schedule is simulated (``planner.cost.timeline``) from those per-stage
   times and the point-to-point transfer of a micro-batch's activations, which gives the
   pipeline time with its bubble and imbalance. Transfers overlap the sender's compute in
   the interleaved schedule only; in plain 1F1B the sender blocks on them too.
3. Data-parallel gradient reduction over the DP x CP group: with ``overlap_grad_reduce``
   hidden behind the last micro-batch's backward except its last bucket (about one
   layer's gradients); otherwise exposed. The distributed optimizer's parameter all-gather
   is exposed unless ``overlap_param_gather``. ZeRO-3 / FSDP gathers each layer's
   parameters before its forward and backward, prefetched behind the previous layer.
4. The optimizer step over the local (possibly sharded) parameters; in eager PyTorch its
   launches start while the GPU still runs the backward (``OPTIMIZER_AFTER_LEAD``). The
   share offloaded to the host (``offload_optimizer_fraction``) copies its gradients down,
   steps on the CPU and copies the weights up after the GPU's share, none of it
   overlapped (Megatron-LM's ``--overlap-cpu-optimizer-d2h-h2d`` is off by default; the
   profile's host section gives the rates).
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.cost.comm import all_to_all_time, collective_time, p2p_time
from planner.cost.compute import Rates, Work, total_time
from planner.cost.expert_load import ExpertLoadFactors
from planner.cost.frameworks import StateLayout
from planner.cost.placement import GroupPlacement, place_groups
from planner.cost.stage_work import (
    expert_times,
    optimizer_step_work,
    recomputed_positions,
    stage_times,
)
from planner.cost.timeline import PipelineTimes, simulate
from planner.errors import SpecError
from planner.graph.build import Implementation
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import ParallelConfig
from planner.specs.model import ModelSpec

OPTIMIZER_AFTER_LEAD = {"pytorch": True, "megatron": False, "deepspeed": False, "torchtitan": False}
"""Whether the optimizer step's launches can use the host's lead over the device at the
end of the backward pass. A plain PyTorch loop (``loss.backward(); optimizer.step()``, no
gradient clipping) reads nothing back on the host in between, so while the GPU is still
busy with the backward, the host already issues the optimizer's many small kernels.
Megatron-LM and DeepSpeed clip gradients by default (``--clip-grad 1.0``,
``gradient_clipping``) and check for inf/NaN, reading the norm back on the host, and
torchtitan clips by default too (``max_norm`` 1.0): the queue drains first."""

TENSORS_PER_LAYER = 9
"""Parameter tensors of a Llama-style layer (q, k, v, o, three MLP weights, two norms): the
launches of an unfused optimizer step scale with it."""


@dataclass(frozen=True)
class TimeBreakdown:
    """Seconds per step on the critical path; the parts add up to ``step_s``."""

    compute_s: float
    tp_comm_s: float
    cp_comm_s: float
    ep_comm_s: float
    pipeline_bubble_s: float
    pipeline_p2p_s: float
    dp_comm_s: float
    optimizer_s: float
    executed_flops_total_per_replica_gpu: float
    """FLOPs one GPU of each (tp, cp, dp) position executes over all pipeline stages."""
    pipeline: PipelineTimes | None = None
    """What the pipeline was simulated from (transfers included), for drawing its timeline."""

    def parts(self) -> dict[str, float]:
        return {
            "compute": self.compute_s,
            "tp_comm": self.tp_comm_s,
            "cp_comm": self.cp_comm_s,
            "ep_comm": self.ep_comm_s,
            "pipeline_bubble": self.pipeline_bubble_s,
            "pipeline_p2p": self.pipeline_p2p_s,
            "dp_comm": self.dp_comm_s,
            "optimizer": self.optimizer_s,
        }

    @property
    def step_s(self) -> float:
        return sum(self.parts().values())


@dataclass(frozen=True)
class TimeContext:
    model: ModelSpec
    cluster: ClusterSpec
    layout: ParallelConfig
    seq_len: int
    microbatches: int
    impl: Implementation
    states: StateLayout
    rates: Rates
    optimizer_kind: str
    chunks: list[list[int]]
    """Layer ids of each virtual stage, in pipeline order (``memory.virtual_stages``)."""
    local_params_per_rank: list[float]
    param_tensors_per_rank: list[int]
    expert_load: ExpertLoadFactors | None = None
    """Routing skew under an expert placement (``expert_load``); None: balanced."""


@dataclass(frozen=True)
class _StageTimes:
    forward_s: float
    backward_s: float
    compute_s: float
    tp_s: float
    cp_s: float
    ep_s: float
    flops: float
    launch_s: float


def step_time(ctx: TimeContext) -> TimeBreakdown:
    """Simulate one training step (see the module docstring)."""
    groups = place_groups(ctx.layout, ctx.cluster)
    stages = [_virtual_stage(ctx, k, groups) for k in range(len(ctx.chunks))]
    layout, vpp = ctx.layout, ctx.layout.vpp or 1
    # each TP rank sends its 1/tp slice of the boundary activations (Narayanan et al. 2021,
    # section 4.1, "scatter/gather optimization"; with sequence parallelism the tensor is
    # already split), and the receivers all-gather the slices inside their TP group
    activations = layout.mbs * ctx.seq_len / layout.cp * ctx.model.hidden_size
    p2p_bytes = activations * ctx.impl.activation_bytes / layout.tp
    pp_group = groups["pp"]
    p2p_s = p2p_time(p2p_bytes, same_node=pp_group.ranks_per_node > 1, cluster=ctx.cluster)
    if layout.tp > 1 and not layout.sequence_parallel:
        p2p_s += collective_time(
            "all_gather", activations * ctx.impl.activation_bytes, groups["tp"], ctx.cluster
        )

    last = len(stages) - 1
    # Megatron overlaps pipeline sends with compute only in the interleaved schedule; plain
    # 1F1B forces overlap_p2p_comm off (Megatron-LM validate_args), so there the sender also
    # waits for its transfer: the send is added to the op that produces it.
    blocking = vpp == 1

    def pipeline_times(p2p: float) -> PipelineTimes:
        send = p2p if blocking else 0.0
        return PipelineTimes(
            pp=layout.pp,
            vpp=vpp,
            microbatches=ctx.microbatches,
            forward_s=tuple(
                s.forward_s + (send if k < last else 0.0) for k, s in enumerate(stages)
            ),
            backward_s=tuple(s.backward_s + (send if k > 0 else 0.0) for k, s in enumerate(stages)),
            p2p_s=p2p,
            microbatch_group=layout.microbatch_group_size_per_vp_stage,
        )

    simulated = pipeline_times(p2p_s if layout.pp > 1 else 0.0)
    pipeline_s = simulate(simulated).step_s
    no_transfer_s = simulate(pipeline_times(0.0)).step_s if layout.pp > 1 else pipeline_s
    # the busiest rank's share of each kind of time, for the breakdown
    per_rank = [
        [stages[chunk * layout.pp + rank] for chunk in range(vpp)] for rank in range(layout.pp)
    ]
    busiest = max(
        range(layout.pp), key=lambda r: sum(s.forward_s + s.backward_s for s in per_rank[r])
    )
    mine = per_rank[busiest]
    m = ctx.microbatches
    compute = m * sum(s.compute_s for s in mine)
    tp = m * sum(s.tp_s for s in mine)
    cp = m * sum(s.cp_s for s in mine)
    ep = m * sum(s.ep_s for s in mine)
    bubble = max(0.0, no_transfer_s - (compute + tp + cp + ep))
    transfers = max(0.0, pipeline_s - no_transfer_s)
    last_backward = sum(s.backward_s for s in mine)
    dp = _data_parallel_exposed(ctx, groups, busiest, last_backward)
    local = _optimizer_params(ctx, busiest)
    offloaded = local * layout.offload_optimizer_fraction
    optimizer = 0.0
    if local > offloaded:
        step = optimizer_step_work(
            local_params=local - offloaded,
            param_tensors=ctx.param_tensors_per_rank[busiest],
            states=ctx.states,
            optimizer_kind=ctx.optimizer_kind,
        )
        optimizer = total_time([step], ctx.rates)
        framework = ctx.impl.name.split("-")[0]
        if OPTIMIZER_AFTER_LEAD.get(framework, False) and layout.pp == 1:
            # the host's lead at the end of the backward hides that much of the launches
            lead = max(0.0, compute - m * sum(s.launch_s for s in mine))
            optimizer = max(ctx.rates.device_time(step), ctx.rates.launch_time(step) - lead)
    if ctx.impl.main_grad_hooks:
        passes = distributed_optimizer_passes(
            local,
            ctx.local_params_per_rank[busiest],
            multi_tensor=ctx.impl.multi_tensor_optimizer_passes,
        )
        optimizer += total_time([passes], ctx.rates)
    if offloaded > 0:
        optimizer += _offload_time(ctx, offloaded)
    executed = m * sum(s.flops for s in stages)
    return TimeBreakdown(
        compute_s=compute, tp_comm_s=tp, cp_comm_s=cp, ep_comm_s=ep,
        pipeline_bubble_s=bubble, pipeline_p2p_s=transfers, dp_comm_s=dp,
        optimizer_s=optimizer, executed_flops_total_per_replica_gpu=executed,
        pipeline=simulated,
    )  # fmt: skip


def _virtual_stage(
    ctx: TimeContext, virtual: int, groups: dict[str, GroupPlacement]
) -> _StageTimes:
    layout = ctx.layout
    layer_ids = ctx.chunks[virtual]
    times = stage_times(
        ctx.model,
        layer_ids,
        first=virtual == 0,
        last=virtual == len(ctx.chunks) - 1,
        layout=layout,
        seq_len=ctx.seq_len,
        impl=ctx.impl,
        rates=ctx.rates,
    )
    forward, backward = times.forward_s, times.backward_s
    tokens = layout.mbs * ctx.seq_len / layout.cp
    act = ctx.impl.activation_bytes
    layers = len(layer_ids)
    recomputed = layers if layout.recompute == "full" else 0
    tp_fwd = tp_bwd = 0.0
    if layout.tp > 1:
        per_layer = 2 * collective_time(
            "all_reduce", tokens * ctx.model.hidden_size * act, groups["tp"], ctx.cluster
        )
        hidden = times.forward_gemm_s / max(layers, 1) if layout.tp_comm_overlap else 0.0
        exposed = max(0.0, per_layer - hidden)
        tp_fwd = layers * exposed
        tp_bwd = (layers + recomputed) * exposed
    cp_fwd = cp_bwd = 0.0
    if layout.cp > 1:
        per_layer_fwd, per_layer_bwd = _context_parallel_exposed(
            ctx, tokens, times.forward_attention_s / max(layers, 1), groups
        )
        cp_fwd, cp_bwd = layers * per_layer_fwd, layers * per_layer_bwd
    ep_fwd = ep_bwd = 0.0
    moe_layers = sum(ctx.model.is_moe_layer(i) for i in layer_ids)
    if moe_layers and layout.ep > 1 and ctx.model.moe is not None:
        routed = tokens * ctx.model.moe.top_k * ctx.model.hidden_size * act
        if ctx.expert_load is None:
            a2a = 2 * collective_time("all_to_all", routed, groups["ep"], ctx.cluster)
            ep_fwd, ep_bwd = moe_layers * a2a, moe_layers * a2a
        else:
            forward, backward, ep_fwd = _straggler(
                ctx, layer_ids, forward, backward, routed, groups
            )
            ep_bwd = ep_fwd
    flops = times.flops
    return _StageTimes(
        forward_s=forward + tp_fwd + cp_fwd + ep_fwd,
        backward_s=backward + tp_bwd + cp_bwd + ep_bwd,
        compute_s=forward + backward,
        tp_s=tp_fwd + tp_bwd, cp_s=cp_fwd + cp_bwd, ep_s=ep_fwd + ep_bwd,
        flops=flops, launch_s=times.launch_s,
    )  # fmt: skip


def _straggler(
    ctx: TimeContext,
    layer_ids: list[int],
    forward: float,
    backward: float,
    routed_bytes: float,
    groups: dict[str, GroupPlacement],
) -> tuple[float, float, float]:
    """(forward, backward, all-to-all per pass) of a stage under ``ctx.expert_load``: the
    busiest EP rank's routed-expert work (the mean rank's times the layer's imbalance;
    recomputed layers run it again in the backward), and each MoE layer's dispatch and
    combine with its placement's cross-node share of the bytes."""
    factors = ctx.expert_load
    assert factors is not None
    expert_fwd, expert_bwd = expert_times(
        ctx.model, layout=ctx.layout, seq_len=ctx.seq_len, impl=ctx.impl, rates=ctx.rates
    )
    recomputed = recomputed_positions(ctx.layout, len(layer_ids))
    a2a = 0.0
    for position, layer in enumerate(layer_ids):
        if not ctx.model.is_moe_layer(layer):
            continue
        extra = factors.layer_imbalance(layer) - 1.0
        forward += extra * expert_fwd
        backward += extra * (expert_bwd + (expert_fwd if position in recomputed else 0.0))
        a2a += 2 * all_to_all_time(
            routed_bytes, groups["ep"], ctx.cluster,
            cross_node_fraction=factors.layer_cross_node(layer),
        )  # fmt: skip
    return forward, backward, a2a


def _context_parallel_exposed(
    ctx: TimeContext, tokens: float, attention_s: float, groups: dict[str, GroupPlacement]
) -> tuple[float, float]:
    """Exposed context-parallel communication of one layer, forward and backward.

    * ``p2p`` (Megatron's default ring): cp - 1 exchanges of the local K and V chunk with
      the ring neighbour, each overlapped with attention on the chunk in hand; the ring
      moves what an all-gather of K and V moves. Backward sends K/V and their gradients
      (twice the bytes) behind 2.5x the attention work (``compute.FLASH_BACKWARD_FLOP_RATIO``).
    * ``all_gather``: K and V gathered before attention and their gradients
      reduce-scattered after it, not overlapped.
    * ``a2a`` (DeepSpeed-Ulysses): all-to-alls turn sequence-sharded Q, K, V into
      head-sharded ones before attention and the output back after it, each on the
      critical path; the backward runs the same four on the gradients.
    * ``a2a+p2p`` (hierarchical, Transformer Engine's ``AttnFuncWithCPAndKVP2P`` given an
      a2a and a p2p group): the four all-to-alls of ``a2a`` over the a2a group only (``A``
      adjacent CP ranks, ``cp_a2a``: NVLink while the group stays in a node), then the
      ring of ``p2p`` over the ``cp/A`` groups (``cp_p2p``, every ``A``-th rank: the
      cross-node hops when cp spans nodes). After the all-to-all a rank holds ``A`` times
      the tokens for ``1/A`` of the heads, so its K/V chunk has the bytes it had before and
      the ring moves ``cp/A`` chunks instead of cp; it hides behind the same attention.
    """
    model, layout, act = ctx.model, ctx.layout, ctx.impl.activation_bytes
    head_dim = model.kv_channels
    kv = 2 * tokens * model.kv_heads * head_dim * act / layout.tp
    scatter = 0.0
    if layout.cp_a2a_size > 1:
        q_and_out = 2 * tokens * model.num_attention_heads * head_dim * act / layout.tp
        scatter = sum(
            collective_time("all_to_all", size, groups["cp_a2a"], ctx.cluster)
            for size in (q_and_out / 2, kv / 2, kv / 2, q_and_out / 2)
        )
    if layout.cp_ring_size == 1:
        return scatter, scatter
    ring = groups["cp_p2p"]
    gathered = collective_time("all_gather", kv * layout.cp_ring_size, ring, ctx.cluster)
    if layout.cp_comm_type == "all_gather":
        return gathered, gathered
    forward = scatter + max(0.0, gathered - attention_s)
    return forward, scatter + max(0.0, 2 * gathered - 2.5 * attention_s)


def _offload_time(ctx: TimeContext, params: float) -> float:
    """The offloaded share of the optimizer step on the host, after the GPU's share."""
    found = ctx.rates.offload_time(
        params, grad_bytes=ctx.states.grad_bytes, weight_bytes=ctx.states.weight_bytes
    )
    if found is None:
        raise SpecError(
            "offload_optimizer_fraction: the GPU's kernel profile has no host section "
            "(device-host copies and a CPU AdamW step) to time the offloaded step with; "
            "run `autopar profile --sections host` on the machine"
        )
    return found


DISTRIBUTED_OPTIMIZER_BYTES = 4 + (4 + 4) + (4 + 4) + (4 + 2)
"""Bytes per (sharded) parameter megatron-core's ``DistributedOptimizer`` moves around the
AdamW step without Apex or Transformer Engine (``optimizer/clip_grads.py`` and the
``multi_tensor_applier`` fallbacks in ``megatron/core/utils.py``): the gradient norm (read
4), the clip's ``dst.copy_(src * scale)`` (an fp32 product, 4 + 4, and its copy, 4 + 4;
every measured step clips at 1.0) and the copy of the fp32 main parameters into the bf16
ones (4 + 2). Measured: 10.1 ms over 1.5 G parameters on one H200
(hardware_db/profiles/h200-sxm/2026-12-03-h200-megatron-core-profile, breakdown.txt)."""
MULTI_TENSOR_OPTIMIZER_BYTES = 4 + (4 + 4) + (4 + 2)
"""The same passes where Transformer Engine is installed (megatron-core 0.16.1
``optimizer/clip_grads.py`` imports its ``multi_tensor_l2norm`` and
``multi_tensor_scale`` first, Apex's ``amp_C`` second): the norm reads 4, the clip scales
the fp32 gradients in place (``[grads, grads]``: read 4, write 4), and
``DistributedOptimizer._copy_main_params_to_model_params`` copies each fp32 shard into
the bf16 parameter buffer as before (4 + 2), whatever the layer spec."""
ZERO_GRAD_BYTES = 4
"""``zero_grad_buffer()``: the fp32 gradient buffer of every local parameter filled with 0."""


def distributed_optimizer_passes(sharded: float, local: float, *, multi_tensor: bool) -> Work:
    """The element-wise passes of Megatron's distributed optimizer beside the AdamW step
    (``MULTI_TENSOR_OPTIMIZER_BYTES`` per sharded parameter with Transformer Engine's
    multi-tensor kernels, ``DISTRIBUTED_OPTIMIZER_BYTES`` with megatron-core's fallbacks)
    and the gradient buffer's zeroing (``ZERO_GRAD_BYTES`` per local parameter), streamed
    at the profile's bandwidth."""
    per_param = MULTI_TENSOR_OPTIMIZER_BYTES if multi_tensor else DISTRIBUTED_OPTIMIZER_BYTES
    return Work(
        "memory",
        bytes=sharded * per_param + local * ZERO_GRAD_BYTES,
        kernels=4,  # per-tensor loops whose launches hide behind the streaming passes
        host="plain",
    )


def _optimizer_params(ctx: TimeContext, rank: int) -> float:
    params = ctx.local_params_per_rank[rank]
    if ctx.layout.shards_optimizer or ctx.states.name == "fsdp":
        return params / ((ctx.layout.dp or 1) * ctx.layout.cp)
    return params


FSDP_COPY_PASSES = 2 * 2 + 1 + 2
"""Bytes moved per unsharded parameter byte by FSDP2's copies around its collectives, per
micro-batch (torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py): each all-gather
(forward and, resharded, backward) copies the local shards into the flat input
(``_foreach_copy_``, read and write 1/n) and splits the output into the parameters
(``split_with_sizes_copy``, read and write 1); the reduce-scatter concatenates the
unsharded gradients into its input (``chunk_cat``, read and write 1). Counted as 2 per
all-gather (the copy-out; the 1/n copy-in is left out, a 2-rank group's half) twice, and
2 for the reduce-scatter, plus 1 for accumulating the sharded gradient."""


def _sharding_copies_s(ctx: TimeContext, params: float) -> float:
    """HBM time of the parameter and gradient copies around ZeRO-3 / FSDP collectives of
    one micro-batch (``FSDP_COPY_PASSES``), at the element-wise bandwidth."""
    moved = FSDP_COPY_PASSES * params * ctx.states.gathered_weight_bytes
    return total_time([Work("memory", bytes=moved, kernels=1)], ctx.rates)


def _data_parallel_exposed(
    ctx: TimeContext, groups: dict[str, GroupPlacement], rank: int, last_backward_s: float
) -> float:
    """Exposed gradient reduction (and parameter all-gather) on the DP x CP group."""
    layout, states = ctx.layout, ctx.states
    group = groups["dp_cp"]
    if group.size == 1:
        return 0.0
    params = ctx.local_params_per_rank[rank]
    grad_bytes = params * states.grad_bytes
    if layout.zero_stage >= 3 or states.name == "fsdp":
        # per layer and micro-batch: all-gather in forward and backward, reduce-scatter in
        # backward (FSDP2 and ZeRO-3 reduce every micro-batch's gradients), prefetched
        # behind compute; only what exceeds the compute is exposed
        m = ctx.microbatches
        gathers = 2 * collective_time("all_gather", params * 2, group, ctx.cluster)
        scatter = collective_time("reduce_scatter", grad_bytes, group, ctx.cluster)
        compute = m * last_backward_s * 1.5
        exposed = max(0.0, (gathers + scatter) * m - compute)
        return exposed + m * _sharding_copies_s(ctx, params)
    if layout.shards_optimizer:
        reduce = collective_time("reduce_scatter", grad_bytes, group, ctx.cluster)
        gather = collective_time("all_gather", params * states.weight_bytes, group, ctx.cluster)
    else:
        reduce = collective_time("all_reduce", grad_bytes, group, ctx.cluster)
        gather = 0.0
    layers = max(1, sum(len(c) for c in ctx.chunks) // layout.pp)
    if layout.overlap_grad_reduce:
        reduce = max(reduce / layers, reduce - last_backward_s)
    if layout.overlap_param_gather:
        gather = gather / layers
    return reduce + gather
