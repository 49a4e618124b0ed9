"""The layout rules, each a named member with its words and the upstream check it mirrors.

A layout breaks a rule when the framework would stop (an assert, a ``ValueError``, a
``RuntimeError`` at start-up or in the first step) or would silently run something else.
:func:`planner.specs.layout.layout_violations` returns :class:`LayoutViolation` records
(the rule and a message that shows the arithmetic); the search counts the layouts it drops
per :class:`Rule`, never by parsing message text.

Each rule cites the code that imposes it at a pinned version, as torchtitan links its
divisibility checks: Megatron-LM ``core_v0.16.1`` unless the rule changed between
releases, where the strict, older form autopar applies is cited (``core_v0.13.0``: KV
heads divisible by tp, and sequence parallelism with tp and ep together). A rule with no
upstream check says why it exists in ``origin`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Source:
    """Where a framework checks a rule: project, pinned version, file and function."""

    project: str
    version: str
    file: str
    function: str

    def __str__(self) -> str:
        return f"{self.project} {self.version} {self.file} {self.function}"


def _megatron(file: str, function: str, version: str = "core_v0.16.1") -> Source:
    return Source("Megatron-LM", version, file, function)


_ARGUMENTS = "megatron/training/arguments.py"
_TRANSFORMER_CONFIG = "megatron/core/transformer/transformer_config.py"
_PARALLEL_CONFIG = "megatron/core/model_parallel_config.py"


@dataclass(frozen=True)
class RuleInfo:
    """A rule in words (the label used in drop counts) and where it comes from."""

    text: str
    source: Source | None
    origin: str = ""
    """Why the rule exists when no framework checks it (``source`` is then ``None``)."""


class Rule(Enum):
    """Every rule a layout must pass; the value holds its words and its source."""

    WORLD_DIVISIBLE = RuleInfo(
        "the GPU count divisible by tp x cp x pp",
        _megatron(_ARGUMENTS, "validate_args"),
    )
    EXPERT_GRID_DIVISIBLE = RuleInfo(
        "the GPU count divisible by etp x ep x pp",
        _megatron("megatron/core/parallel_state.py", "initialize_model_parallel"),
    )
    HEADS_DIVISIBLE_BY_TP = RuleInfo(
        "attention heads divisible by tp",
        _megatron(_TRANSFORMER_CONFIG, "TransformerConfig.__post_init__"),
    )
    KV_HEADS_DIVISIBLE_BY_TP = RuleInfo(
        "KV heads divisible by tp",
        _megatron(_TRANSFORMER_CONFIG, "TransformerConfig.__post_init__", "core_v0.13.0"),
        origin="core_v0.16.1 also accepts tp divisible by the KV heads (replicated KV); "
        "autopar applies the strict form every release accepts",
    )
    FFN_DIVISIBLE_BY_TP = RuleInfo(
        "ffn_hidden_size divisible by tp",
        _megatron("megatron/core/utils.py", "divide"),
    )
    EXPERT_FFN_DIVISIBLE_BY_ETP = RuleInfo(
        "expert ffn_hidden_size divisible by etp",
        _megatron("megatron/core/utils.py", "divide"),
    )
    SEQUENCE_DIVISIBLE_BY_2CP = RuleInfo(
        "seq_len divisible by 2 x cp",
        _megatron(_ARGUMENTS, "validate_args"),
    )
    A2A_HEADS_DIVISIBLE_BY_CP = RuleInfo(
        "heads per TP rank divisible by the all-to-all's CP ranks (cp under a2a, the a2a "
        "group under a2a+p2p, which scatters the KV heads too)",
        Source(
            "TransformerEngine",
            "as called by Megatron-LM core_v0.16.1",
            "transformer_engine/pytorch/attention/dot_product_attention/context_parallel.py",
            "flash_attn_a2a_communicate",
        ),
        origin="implied, not asserted: the all-to-all reshapes the heads into cp groups",
    )
    HIERARCHICAL_CP_SIZES = RuleInfo(
        "a2a+p2p with its a2a and p2p group sizes, their product cp (and the sizes only "
        "with a2a+p2p)",
        _megatron(_ARGUMENTS, "validate_args"),
    )
    SEQUENCE_PARALLEL_NEEDS_TP = RuleInfo(
        "sequence parallelism only with tp > 1",
        _megatron(_PARALLEL_CONFIG, "ModelParallelConfig.__post_init__"),
    )
    TP_COMM_OVERLAP_NEEDS_SEQUENCE_PARALLEL = RuleInfo(
        "TP communication overlap only with sequence parallelism",
        _megatron(_ARGUMENTS, "validate_args"),
    )
    EXPERT_TP_NEEDS_SEQUENCE_PARALLEL = RuleInfo(
        "sequence parallelism on when tp > 1 and ep > 1",
        _megatron(_PARALLEL_CONFIG, "ModelParallelConfig.__post_init__", "core_v0.13.0"),
        origin="a warning only from core_v0.15.0 on; the documentation still requires it",
    )
    DISTRIBUTED_OPTIMIZER_IS_ZERO1 = RuleInfo(
        "the distributed optimizer not combined with ZeRO-2/3",
        None,
        origin="autopar: distributed_optimizer is Megatron's spelling of ZeRO-1 sharding",
    )
    OVERLAP_PARAM_GATHER_NEEDS_SHARDING = RuleInfo(
        "overlapped parameter gather only with a sharded optimizer and overlapped gradient reduce",
        _megatron(_ARGUMENTS, "validate_args"),
    )
    RECOMPUTE_OPTIONS_NEED_FULL = RuleInfo(
        "recompute method and layer count only with full recomputation",
        _megatron(_ARGUMENTS, "validate_args"),
    )
    RECOMPUTE_LAYERS_WITHIN_STAGE = RuleInfo(
        "recomputed layers per group at most the layers per pipeline stage",
        _megatron(_ARGUMENTS, "_add_training_args"),
        origin="the documented range of --recompute-num-layers",
    )
    VPP_NEEDS_PP = RuleInfo(
        "virtual pipeline stages only with pp > 1",
        _megatron(_ARGUMENTS, "validate_args"),
    )
    GPIPE_NOT_INTERLEAVED = RuleInfo(
        "the GPipe schedule only without virtual stages",
        Source("PyTorch", "2.11", "torch/distributed/pipelining/schedules.py", "ScheduleGPipe"),
    )
    ONE_WAY_OF_SPLITTING = RuleInfo(
        "account-for-embedding/loss splits not combined with first/last stage sizes",
        _megatron(_ARGUMENTS, "validate_args"),
    )
    ACCOUNTED_SLOTS_DIVISIBLE = RuleInfo(
        "layers plus the accounted embedding/output layer divisible by pp (and vpp)",
        _megatron("megatron/core/transformer/transformer_block.py", "get_num_layers_to_build"),
    )
    STAGE_SIZES_NEED_PP = RuleInfo(
        "first/last stage sizes only with pp > 1",
        None,
        origin="autopar: an uneven split needs more than one pipeline stage",
    )
    LAYERS_DIVISIBLE_BY_PP = RuleInfo(
        "layers divisible by pp",
        _megatron(_ARGUMENTS, "validate_args"),
    )
    LAYERS_PER_RANK_DIVISIBLE_BY_VPP = RuleInfo(
        "layers per pipeline rank divisible by vpp",
        _megatron(_ARGUMENTS, "validate_args"),
    )
    UNEVEN_SPLIT = RuleInfo(
        "first/last stage sizes leaving an even split of the middle stages",
        _megatron(_TRANSFORMER_CONFIG, "TransformerConfig.__post_init__"),
    )
    INTERLEAVED_MICROBATCHES = RuleInfo(
        "micro-batches a multiple of pp with interleaved stages",
        _megatron(
            "megatron/core/pipeline_parallel/schedules.py",
            "forward_backward_pipelining_with_interleaving",
        ),
    )
    MICROBATCH_GROUP_NEEDS_INTERLEAVING = RuleInfo(
        "a micro-batch group size only with interleaved stages",
        None,
        origin="Megatron-LM reads microbatch_group_size_per_vp_stage only in the interleaved "
        "schedule; set without vpp > 1 it would change nothing, so autopar refuses it",
    )
    MICROBATCH_GROUP_WITHIN_PP_AND_MICROBATCHES = RuleInfo(
        "a micro-batch group size from pp to the micro-batches, its last group none or at least pp",
        _megatron(
            "megatron/core/pipeline_parallel/schedules.py",
            "forward_backward_pipelining_with_interleaving",
        ),
    )
    BATCH_DIVISIBLE = RuleInfo(
        "global batch divisible by mbs x dp",
        _megatron(
            "megatron/core/num_microbatches_calculator.py",
            "ConstantNumMicroBatchesCalculator.__init__",
        ),
    )
    EXPERT_PARALLEL_NEEDS_MOE = RuleInfo(
        "expert parallelism only with an MoE model",
        _megatron(_ARGUMENTS, "validate_args"),
    )
    EXPERT_TP_NEEDS_MOE = RuleInfo(
        "etp only with an MoE model",
        None,
        origin="autopar: expert tensor parallelism has no experts to split on a dense model",
    )
    EXPERTS_DIVISIBLE_BY_EP = RuleInfo(
        "experts divisible by ep",
        _megatron(_ARGUMENTS, "validate_args"),
    )
    SEQUENCE_WITHIN_POSITIONS = RuleInfo(
        "seq_len within the learned position table",
        _megatron(_ARGUMENTS, "validate_args"),
    )
    FRAMEWORK_CANNOT_EXPRESS = RuleInfo(
        "a layout the framework's launch files can express",
        None,
        origin="autopar: what the framework's emitter refuses "
        "(planner.frameworks.refusals, each refusal citing its framework source) is no plan "
        "for that framework",
    )

    @property
    def text(self) -> str:
        return self.value.text

    @property
    def source(self) -> Source | None:
        return self.value.source

    def __str__(self) -> str:
        return self.value.text


@dataclass(frozen=True)
class LayoutViolation:
    """One broken rule: which rule, and a message that shows the numbers."""

    rule: Rule
    message: str

    def __str__(self) -> str:
        return self.message


class LayoutRuleError(ValueError):
    """The rules a ``ParallelConfig`` breaks on its own (pydantic keeps it in the error)."""

    def __init__(self, violations: list[LayoutViolation]) -> None:
        super().__init__("; ".join(v.message for v in violations))
        self.violations = violations
