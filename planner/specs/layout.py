"""ParallelConfig: how a model is laid out over the GPUs, and every rule that makes it legal.

Glossary (Megatron-LM's terms, which autopar uses throughout):
  tp   tensor parallel: each layer's weights split over tp GPUs (innermost ranks)
  cp   context parallel: every activation's sequence split over cp GPUs
  dp   data parallel: replicas of the model; ``None`` means "whatever GPUs are left"
  pp   pipeline parallel: layers split into pp stages (outermost ranks)
  vpp  virtual pipeline stages per pipeline rank (interleaved 1F1B); ``None`` = not interleaved
  microbatch group  consecutive micro-batches the interleaved schedule runs through one
       model chunk before the next (Megatron-LM's microbatch_group_size_per_vp_stage;
       ``None`` = pp, depth-first)
  ep   expert parallel: the experts of each MoE layer spread over ep GPUs, carved out of
       the dp x cp x tp ranks ("MoE parallel folding"), so ep does not multiply the world size
  etp  tensor parallel inside the expert MLPs (Megatron default: tp)
  mbs  micro-batch size (sequences per forward/backward); gradient accumulation follows

The world is ``tp * cp * dp * pp`` GPUs. Rules that involve only the layout are checked
when a ``ParallelConfig`` is built; rules that involve the model, the cluster or the
workload are checked by :func:`layout_violations`. Each rule is a named member of
:class:`planner.specs.rules.Rule`, which cites the framework check it mirrors; a violation
is a :class:`planner.specs.rules.LayoutViolation` (the rule and a message with the numbers).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from planner.errors import SpecError
from planner.specs._base import Spec
from planner.specs.hardware import ClusterSpec
from planner.specs.model import ModelSpec
from planner.specs.rules import LayoutRuleError, LayoutViolation, Rule
from planner.specs.workload import WorkloadSpec

Recompute = Literal["none", "selective", "full"]
RecomputeMethod = Literal["uniform", "block"]
CpCommType = Literal["p2p", "all_gather", "a2a", "a2a+p2p"]
PipelineSchedule = Literal["1f1b", "gpipe"]


class ParallelConfig(Spec):
    """A parallel layout: degrees, micro-batch, sharding, recomputation, offload, overlap."""

    tp: PositiveInt = 1
    pp: PositiveInt = 1
    dp: PositiveInt | None = Field(default=None, description="None: fill the remaining GPUs")
    cp: PositiveInt = 1
    ep: PositiveInt = 1
    etp: PositiveInt | None = Field(default=None, description="expert TP; None means = tp")
    vpp: PositiveInt | None = Field(default=None, description="virtual stages per PP rank")
    mbs: PositiveInt = Field(default=1, description="micro-batch size in sequences")
    zero_stage: Literal[0, 1, 2, 3] = 0
    distributed_optimizer: bool = Field(
        default=False, description="Megatron's ZeRO-1-like sharding over DP x CP"
    )
    sequence_parallel: bool = False
    recompute: Recompute = "none"
    recompute_method: RecomputeMethod | None = None
    recompute_num_layers: PositiveInt | None = None
    offload_optimizer_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    cp_comm_type: CpCommType = "p2p"
    hierarchical_cp_sizes: tuple[PositiveInt, PositiveInt] | None = Field(
        default=None,
        description="cp_comm_type a2a+p2p only: (a2a group, p2p group), product cp; the "
        "all-to-all runs over adjacent CP ranks, the ring across those groups (Megatron-LM "
        "--hierarchical-context-parallel-sizes)",
    )
    overlap_grad_reduce: bool = False
    overlap_param_gather: bool = False
    tp_comm_overlap: bool = False
    pipeline_schedule: PipelineSchedule = Field(
        default="1f1b",
        description=(
            "1f1b (Megatron, torch.distributed.pipelining Schedule1F1B; interleaved when "
            "vpp > 1) or gpipe (every forward, then every backward: all micro-batches in "
            "flight; the same bubble as 1F1B, (p - 1) / m)"
        ),
    )
    first_stage_layers: PositiveInt | None = Field(
        default=None, description="layers on the first pipeline stage (uneven split)"
    )
    last_stage_layers: PositiveInt | None = Field(
        default=None, description="layers on the last pipeline stage (uneven split)"
    )
    account_for_embedding_in_pipeline_split: bool = Field(
        default=False,
        description="count the embedding as one layer when splitting layers over stages "
        "(Megatron-LM --account-for-embedding-in-pipeline-split)",
    )
    account_for_loss_in_pipeline_split: bool = Field(
        default=False,
        description="count the output layer and loss as one layer when splitting "
        "(Megatron-LM --account-for-loss-in-pipeline-split)",
    )
    microbatch_group_size_per_vp_stage: PositiveInt | None = Field(
        default=None,
        description="interleaved schedule: consecutive micro-batches run through one model "
        "chunk before the next; None = pp (Megatron-LM "
        "--microbatch-group-size-per-virtual-pipeline-stage)",
    )

    @model_validator(mode="after")
    def _check_own_rules(self) -> ParallelConfig:
        problems = own_rule_violations(self)
        if problems:
            raise LayoutRuleError(problems)
        return self

    @property
    def expert_tp(self) -> int:
        return self.etp if self.etp is not None else self.tp

    @property
    def model_parallel_size(self) -> int:
        """GPUs that hold one replica of the model: tp x cp x pp."""
        return self.tp * self.cp * self.pp

    @property
    def cp_a2a_size(self) -> int:
        """CP ranks each all-to-all (head scatter) spans: cp under a2a, the first
        hierarchical size under a2a+p2p, 1 under the ring and all-gather algorithms."""
        if self.cp_comm_type == "a2a":
            return self.cp
        if self.cp_comm_type == "a2a+p2p" and self.hierarchical_cp_sizes is not None:
            return self.hierarchical_cp_sizes[0]
        return 1

    @property
    def cp_ring_size(self) -> int:
        """CP ranks the K/V exchange (ring or all-gather) spans: cp divided by the
        all-to-all's ranks (1 under a2a)."""
        return self.cp // self.cp_a2a_size

    @property
    def interleaved(self) -> bool:
        return self.vpp is not None and self.vpp > 1

    @property
    def shards_optimizer(self) -> bool:
        """Optimizer states are sharded over the data-parallel ranks (ZeRO >= 1 or dist-opt)."""
        return self.distributed_optimizer or self.zero_stage >= 1


def own_rule_violations(layout: ParallelConfig) -> list[LayoutViolation]:
    """The rules that involve only the layout (checked when a ``ParallelConfig`` is built)."""
    problems: list[LayoutViolation] = []

    def broken(rule: Rule, message: str) -> None:
        problems.append(LayoutViolation(rule, message))

    if layout.sequence_parallel and layout.tp == 1:
        broken(Rule.SEQUENCE_PARALLEL_NEEDS_TP, "sequence_parallel requires tp > 1")
    if layout.tp_comm_overlap and not layout.sequence_parallel:
        broken(
            Rule.TP_COMM_OVERLAP_NEEDS_SEQUENCE_PARALLEL,
            "tp_comm_overlap requires sequence_parallel",
        )
    if layout.distributed_optimizer and layout.zero_stage >= 2:
        broken(
            Rule.DISTRIBUTED_OPTIMIZER_IS_ZERO1,
            f"distributed_optimizer is Megatron's ZeRO-1 sharding; it cannot be combined "
            f"with zero_stage {layout.zero_stage}",
        )
    if layout.overlap_param_gather and not (layout.shards_optimizer and layout.overlap_grad_reduce):
        broken(
            Rule.OVERLAP_PARAM_GATHER_NEEDS_SHARDING,
            "overlap_param_gather requires a sharded optimizer (distributed_optimizer or "
            "zero_stage >= 1) and overlap_grad_reduce",
        )
    problems.extend(_hierarchical_cp_violations(layout))
    if layout.recompute != "full" and (
        layout.recompute_method is not None or layout.recompute_num_layers is not None
    ):
        broken(
            Rule.RECOMPUTE_OPTIONS_NEED_FULL,
            "recompute_method and recompute_num_layers apply only to recompute 'full'",
        )
    if layout.vpp is not None and layout.vpp > 1 and layout.pp == 1:
        broken(Rule.VPP_NEEDS_PP, "vpp > 1 requires pp > 1")
    group = layout.microbatch_group_size_per_vp_stage
    if group is not None and not layout.interleaved:
        broken(
            Rule.MICROBATCH_GROUP_NEEDS_INTERLEAVING,
            f"microbatch_group_size_per_vp_stage ({group}) applies only to the interleaved "
            "schedule (vpp > 1)",
        )
    elif group is not None and group < layout.pp:
        broken(
            Rule.MICROBATCH_GROUP_WITHIN_PP_AND_MICROBATCHES,
            f"microbatch_group_size_per_vp_stage ({group}) must be at least pp ({layout.pp})",
        )
    if layout.pipeline_schedule == "gpipe" and layout.interleaved:
        broken(
            Rule.GPIPE_NOT_INTERLEAVED,
            "pipeline_schedule gpipe has no interleaved form: vpp must be 1",
        )
    if (layout.first_stage_layers or layout.last_stage_layers) and layout.pp == 1:
        broken(Rule.STAGE_SIZES_NEED_PP, "first_stage_layers/last_stage_layers require pp > 1")
    accounts = layout.account_for_embedding_in_pipeline_split or (
        layout.account_for_loss_in_pipeline_split
    )
    if accounts and (layout.first_stage_layers or layout.last_stage_layers):
        broken(
            Rule.ONE_WAY_OF_SPLITTING,
            "account_for_embedding/loss_in_pipeline_split cannot be combined with "
            "first_stage_layers/last_stage_layers (Megatron-LM takes one way of splitting)",
        )
    return problems


def _hierarchical_cp_violations(layout: ParallelConfig) -> list[LayoutViolation]:
    """a2a+p2p needs its two group sizes, their product the CP degree (Megatron-LM
    ``validate_args``); the sizes mean nothing to the other algorithms."""
    sizes = layout.hierarchical_cp_sizes
    if layout.cp_comm_type != "a2a+p2p":
        if sizes is None:
            return []
        message = (
            f"hierarchical_cp_sizes {list(sizes)} apply only to cp_comm_type a2a+p2p "
            f"(not {layout.cp_comm_type})"
        )
    elif sizes is None:
        message = (
            "cp_comm_type a2a+p2p needs hierarchical_cp_sizes: the a2a and p2p group sizes, "
            f"their product cp ({layout.cp}), e.g. [2, {max(1, layout.cp // 2)}]"
        )
    elif sizes[0] * sizes[1] != layout.cp:
        message = (
            f"hierarchical_cp_sizes {list(sizes)}: a2a x p2p = {sizes[0]} x {sizes[1]} = "
            f"{sizes[0] * sizes[1]} must equal cp ({layout.cp})"
        )
    else:
        return []
    return [LayoutViolation(Rule.HIERARCHICAL_CP_SIZES, message)]


def resolve_data_parallel(layout: ParallelConfig, *, num_gpus: int) -> ParallelConfig:
    """Fill ``dp`` from the GPU count, or check the given one (``Rule.WORLD_DIVISIBLE``)."""
    model_parallel = layout.model_parallel_size
    if num_gpus % model_parallel != 0:
        raise SpecError(
            f"layout: the {num_gpus} GPUs are not divisible by tp x cp x pp = "
            f"{layout.tp} x {layout.cp} x {layout.pp} = {model_parallel}"
        )
    dp = num_gpus // model_parallel
    if layout.dp is not None and layout.dp != dp:
        raise SpecError(
            f"layout: tp x cp x dp x pp = {layout.tp} x {layout.cp} x {layout.dp} x "
            f"{layout.pp} = {model_parallel * layout.dp} but the cluster has {num_gpus} GPUs"
        )
    if layout.dp == dp and "dp" in layout.model_fields_set:
        return layout  # already resolved (the planner's candidates): the copy would equal it
    return layout.model_copy(update={"dp": dp})


def stage_layer_counts(model: ModelSpec, layout: ParallelConfig) -> list[int]:
    """Transformer layers on each pipeline stage (first stage first).

    Even split unless ``first_stage_layers``/``last_stage_layers`` are given; the middle
    stages then share the rest evenly (Megatron's uneven split, ``Rule.UNEVEN_SPLIT``). With
    the account-for flags, the embedding and/or the output layer count as one layer each and
    the layer slots split evenly: the first stage holds one transformer layer fewer for the
    embedding, the last one fewer for the output layer. Raises ``SpecError`` when the
    layers do not divide.
    """
    counts = virtual_stage_layer_counts(model, layout)
    vpp = layout.vpp or 1
    return [sum(counts[c * layout.pp + rank] for c in range(vpp)) for rank in range(layout.pp)]


def virtual_stage_layer_counts(model: ModelSpec, layout: ParallelConfig) -> list[int]:
    """Transformer layers of each virtual stage, in pipeline order (chunk-major:
    chunk c of rank r is virtual stage c x pp + r). Each rank's layers divide evenly
    over its chunks, except under the account-for flags, where the embedding takes a
    layer's place in the very first chunk and the output layer in the very last
    (Megatron-LM ``get_num_layers_to_build``)."""
    problems = _split_violations(model, layout)
    if problems:
        raise SpecError("layout: " + "; ".join(v.message for v in problems))
    pp, vpp = layout.pp, layout.vpp or 1
    embedding, loss = _accounted(layout)
    if embedding or loss:
        slots = (model.num_layers + embedding + loss) // (pp * vpp)
        counts = [slots] * (pp * vpp)
        counts[0] -= embedding
        counts[-1] -= loss
        return counts
    per_rank = _rank_layer_counts(model, layout)
    return [per_rank[rank] // vpp for _chunk in range(vpp) for rank in range(pp)]


def _accounted(layout: ParallelConfig) -> tuple[int, int]:
    """(1 if the embedding counts as a layer, 1 if the output layer does)."""
    return (
        int(layout.account_for_embedding_in_pipeline_split),
        int(layout.account_for_loss_in_pipeline_split),
    )


def _rank_layer_counts(model: ModelSpec, layout: ParallelConfig) -> list[int]:
    pp, total = layout.pp, model.num_layers
    first = layout.first_stage_layers
    last = layout.last_stage_layers
    middle_stages = pp - (first is not None) - (last is not None)
    middle_layers = total - (first or 0) - (last or 0)
    per_middle = middle_layers // middle_stages if middle_stages else 0
    counts = [per_middle] * pp
    if first is not None:
        counts[0] = first
    if last is not None:
        counts[-1] = last
    return counts


def _split_violations(model: ModelSpec, layout: ParallelConfig) -> list[LayoutViolation]:
    pp, total, vpp = layout.pp, model.num_layers, layout.vpp or 1
    first, last = layout.first_stage_layers, layout.last_stage_layers
    embedding, loss = _accounted(layout)
    if (embedding or loss) and first is None and last is None:
        slots = total + embedding + loss
        counted = " + ".join(["num_layers"] + ["embedding"] * embedding + ["output layer"] * loss)
        if slots % pp != 0:
            message = (
                f"{counted} = {slots} layer slots must be divisible by pp ({pp}) when the "
                "embedding/loss are accounted for in the pipeline split"
            )
            return [LayoutViolation(Rule.ACCOUNTED_SLOTS_DIVISIBLE, message)]
        if (slots // pp) % vpp != 0:
            message = (
                f"{counted} = {slots} layer slots per pipeline rank ({slots // pp}) must be "
                f"divisible by vpp ({vpp})"
            )
            return [LayoutViolation(Rule.ACCOUNTED_SLOTS_DIVISIBLE, message)]
        return []
    if first is None and last is None:
        if total % pp != 0:
            return [
                LayoutViolation(
                    Rule.LAYERS_DIVISIBLE_BY_PP,
                    f"num_layers ({total}) must be divisible by pp ({pp})",
                )
            ]
        if (total // pp) % vpp != 0:
            return [
                LayoutViolation(
                    Rule.LAYERS_PER_RANK_DIVISIBLE_BY_VPP,
                    f"layers per pipeline rank ({total // pp}) must be divisible by vpp ({vpp})",
                )
            ]
        return []
    middle_stages = pp - (first is not None) - (last is not None)
    middle_layers = total - (first or 0) - (last or 0)
    messages = []
    if middle_layers < 0 or (middle_stages == 0) != (middle_layers == 0):
        messages.append(
            f"first/last stage layers ({first}, {last}) leave {middle_layers} layers for "
            f"{middle_stages} middle stages"
        )
    elif middle_stages and middle_layers % middle_stages != 0:
        messages.append(
            f"the {middle_layers} middle layers must divide evenly over the "
            f"{middle_stages} middle stages"
        )
    elif middle_stages and (middle_layers // middle_stages) % vpp != 0:
        messages.append(
            f"the layers per middle stage ({middle_layers // middle_stages}) must be "
            f"divisible by vpp ({vpp})"
        )
    for label, count in (("first_stage_layers", first), ("last_stage_layers", last)):
        if count is not None and count % vpp != 0:
            messages.append(f"{label} ({count}) must be divisible by vpp ({vpp})")
    return [LayoutViolation(Rule.UNEVEN_SPLIT, message) for message in messages]


def layout_violations(
    *, model: ModelSpec, cluster: ClusterSpec, workload: WorkloadSpec, layout: ParallelConfig
) -> list[LayoutViolation]:
    """Every rule the layout breaks for this model, cluster and workload (empty: legal).

    ``layout.dp`` must already be resolved (:func:`resolve_data_parallel`).
    """
    assert layout.dp is not None, "resolve_data_parallel first"
    t, c = layout.tp, layout.cp
    problems: list[LayoutViolation] = []

    def broken(rule: Rule, message: str) -> None:
        problems.append(LayoutViolation(rule, message))

    heads, groups = model.num_attention_heads, model.kv_heads
    if heads % t != 0:
        broken(
            Rule.HEADS_DIVISIBLE_BY_TP,
            f"num_attention_heads ({heads}) must be divisible by tp ({t})",
        )
    if model.mla is None and groups % t != 0:
        broken(
            Rule.KV_HEADS_DIVISIBLE_BY_TP, f"num_kv_heads ({groups}) must be divisible by tp ({t})"
        )
    if model.ffn_hidden_size % t != 0:
        broken(
            Rule.FFN_DIVISIBLE_BY_TP,
            f"ffn_hidden_size ({model.ffn_hidden_size}) must be divisible by tp ({t})",
        )
    if c > 1 and workload.seq_len % (2 * c) != 0:
        broken(
            Rule.SEQUENCE_DIVISIBLE_BY_2CP,
            f"seq_len ({workload.seq_len}) must be divisible by 2 x cp = {2 * c}",
        )
    a2a = layout.cp_a2a_size
    if a2a > 1 and (heads // t) % a2a != 0:
        over = "cp" if layout.cp_comm_type == "a2a" else "the a2a group"
        broken(
            Rule.A2A_HEADS_DIVISIBLE_BY_CP,
            f"cp_comm_type {layout.cp_comm_type} scatters heads: heads per TP rank "
            f"({heads // t}) must be divisible by {over} ({a2a})",
        )
    if (
        layout.cp_comm_type == "a2a+p2p"
        and a2a > 1
        and model.mla is None
        and (groups // t) % a2a != 0
    ):
        broken(
            Rule.A2A_HEADS_DIVISIBLE_BY_CP,
            f"cp_comm_type a2a+p2p scatters the KV heads too: KV heads per TP rank "
            f"({max(groups // t, 1)}) must be divisible by the a2a group ({a2a})",
        )
    problems.extend(_split_violations(model, layout))
    group = layout.microbatch_group_size_per_vp_stage
    if layout.interleaved and group is not None:
        microbatches = workload.sequences_per_step // (layout.mbs * layout.dp)
        last = microbatches % group
        if group > microbatches:
            broken(
                Rule.MICROBATCH_GROUP_WITHIN_PP_AND_MICROBATCHES,
                f"microbatch_group_size_per_vp_stage ({group}) must be at most the "
                f"micro-batches per step ({microbatches})",
            )
        elif 0 < last < layout.pp:
            broken(
                Rule.MICROBATCH_GROUP_WITHIN_PP_AND_MICROBATCHES,
                f"microbatch_group_size_per_vp_stage ({group}) leaves a last group of "
                f"{microbatches} mod {group} = {last} micro-batches; Megatron-LM needs it "
                f"empty or at least pp ({layout.pp})",
            )
    elif layout.interleaved:
        microbatches = workload.sequences_per_step // (layout.mbs * layout.dp)
        if microbatches < layout.pp or microbatches % layout.pp != 0:
            broken(
                Rule.INTERLEAVED_MICROBATCHES,
                f"interleaved schedule needs micro-batches per step ({microbatches}) to be a "
                f"multiple of pp ({layout.pp})",
            )
    if layout.recompute == "full" and layout.recompute_num_layers is not None:
        per_stage = max(stage_layer_counts_or_even(model, layout))
        if layout.recompute_num_layers > per_stage:
            broken(
                Rule.RECOMPUTE_LAYERS_WITHIN_STAGE,
                f"recompute_num_layers ({layout.recompute_num_layers}) exceeds the layers per "
                f"pipeline stage ({per_stage})",
            )
    problems.extend(_batch_violations(workload=workload, layout=layout))
    problems.extend(_expert_violations(model=model, cluster=cluster, layout=layout))
    if model.position_embedding == "learned" and workload.seq_len > model.max_position_embeddings:
        broken(
            Rule.SEQUENCE_WITHIN_POSITIONS,
            f"seq_len ({workload.seq_len}) exceeds the learned position table "
            f"({model.max_position_embeddings})",
        )
    return problems


def stage_layer_counts_or_even(model: ModelSpec, layout: ParallelConfig) -> list[int]:
    """Stage layer counts, or the ceiling of an even split when the split is illegal."""
    if _split_violations(model, layout):
        return [-(-model.num_layers // layout.pp)] * layout.pp
    return stage_layer_counts(model, layout)


def _batch_violations(*, workload: WorkloadSpec, layout: ParallelConfig) -> list[LayoutViolation]:
    assert layout.dp is not None
    batch, per_step = workload.sequences_per_step, layout.mbs * layout.dp
    if batch % per_step != 0:
        return [
            LayoutViolation(
                Rule.BATCH_DIVISIBLE,
                f"global batch ({batch} sequences) must be divisible by mbs x dp = "
                f"{layout.mbs} x {layout.dp} = {per_step}",
            )
        ]
    return []


def _expert_violations(
    *, model: ModelSpec, cluster: ClusterSpec, layout: ParallelConfig
) -> list[LayoutViolation]:
    e, et = layout.ep, layout.expert_tp
    problems: list[LayoutViolation] = []

    def broken(rule: Rule, message: str) -> None:
        problems.append(LayoutViolation(rule, message))

    if model.moe is None:
        if e > 1:
            broken(Rule.EXPERT_PARALLEL_NEEDS_MOE, f"ep ({e}) > 1 requires an MoE model")
        if layout.etp is not None and layout.etp != layout.tp:
            broken(Rule.EXPERT_TP_NEEDS_MOE, "etp applies only to MoE models")
        return problems
    experts = model.moe.num_experts
    if experts % e != 0:
        broken(
            Rule.EXPERTS_DIVISIBLE_BY_EP,
            f"moe.num_experts ({experts}) must be divisible by ep ({e})",
        )
    if cluster.num_gpus % (et * e * layout.pp) != 0:
        broken(
            Rule.EXPERT_GRID_DIVISIBLE,
            f"the {cluster.num_gpus} GPUs must be divisible by etp x ep x pp = {et} x {e} x "
            f"{layout.pp}",
        )
    if model.moe.expert_ffn_hidden_size % et != 0:
        broken(
            Rule.EXPERT_FFN_DIVISIBLE_BY_ETP,
            f"moe.expert_ffn_hidden_size ({model.moe.expert_ffn_hidden_size}) must be "
            f"divisible by etp ({et})",
        )
    if e > 1 and layout.tp > 1 and not layout.sequence_parallel:
        broken(
            Rule.EXPERT_TP_NEEDS_SEQUENCE_PARALLEL,
            "sequence_parallel must be on when tp > 1 and ep > 1",
        )
    return problems
