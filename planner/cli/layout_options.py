"""The layout flags of one given layout, shared by ``estimate`` and ``memplan``.

Each flag is an ``Annotated`` alias, so every command that takes a layout declares it the
same way; :func:`layout_from_options` turns their values into a ``ParallelConfig`` with
one-line errors.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from planner.cli.inputs import build_spec
from planner.cost.frameworks import (
    ATTENTION_BACKENDS,
    AttentionBackend,
    LayerSpec,
    Runtime,
    grad_reduce_in_bf16_refusal,
    layer_spec_choice,
)
from planner.errors import SpecError
from planner.frameworks import get_profile
from planner.specs.layout import ParallelConfig

TpOption = Annotated[int, typer.Option(min=1, help="Tensor parallel size.")]
PpOption = Annotated[int, typer.Option(min=1, help="Pipeline parallel size.")]
CpOption = Annotated[int, typer.Option(min=1, help="Context parallel size.")]
EpOption = Annotated[int, typer.Option(min=1, help="Expert parallel size.")]
EtpOption = Annotated[int | None, typer.Option(min=1, help="Expert tensor parallel size.")]
VppOption = Annotated[int | None, typer.Option(min=1, help="Virtual stages per pipeline rank.")]
MbsOption = Annotated[int, typer.Option(min=1, help="Micro-batch size (sequences).")]
ZeroOption = Annotated[int | None, typer.Option(min=0, max=3, help="ZeRO stage 0-3.")]
DistributedOptimizerOption = Annotated[
    bool,
    typer.Option(
        "--distributed-optimizer/--no-distributed-optimizer",
        help="Megatron's sharded optimizer.",
        show_default=False,
    ),
]
SequenceParallelOption = Annotated[
    bool,
    typer.Option(
        "--sequence-parallel/--no-sequence-parallel",
        show_default=False,
        help="Megatron sequence parallelism: norms and dropout split along the sequence "
        "over the tp ranks (needs tp > 1).",
    ),
]
OffloadOptimizerOption = Annotated[
    float,
    typer.Option(
        "--offload-optimizer",
        min=0.0,
        max=1.0,
        help="Share of the optimizer states and step kept on the host (DeepSpeed "
        "offload_optimizer, Megatron --optimizer-cpu-offload): 0 to 1.",
    ),
]
RecomputeOption = Annotated[str, typer.Option(help="none | selective | full.")]
RecomputeMethodOption = Annotated[
    str | None, typer.Option("--recompute-method", help="uniform | block (full only).")
]
RecomputeLayersOption = Annotated[
    int | None, typer.Option("--recompute-layers", min=1, help="Layers per recompute group.")
]
StateLayoutOption = Annotated[
    str | None,
    typer.Option(
        help="megatron | zero | fsdp | autocast | bf16 | master [default: per framework]; "
        "megatron, zero and fsdp keep the gradients in a buffer across steps, the others "
        "allocate them in the backward and free them after the step."
    ),
]
TpCommOverlapOption = Annotated[
    bool | None,
    typer.Option(
        "--tp-comm-overlap/--no-tp-comm-overlap",
        help="Megatron --tp-comm-overlap (Transformer Engine userbuffers; torchtitan async "
        "TP): tensor-parallel collectives hidden behind the adjacent GEMMs; needs "
        "--sequence-parallel and tp > 1. [default: off]",
        show_default=False,
    ),
]
OverlapGradReduceOption = Annotated[
    bool | None,
    typer.Option(
        "--overlap-grad-reduce/--no-overlap-grad-reduce",
        help="Megatron --overlap-grad-reduce (DeepSpeed overlap_comm): the data-parallel "
        "gradient reduction runs bucket by bucket during the backward. [default: off]",
        show_default=False,
    ),
]
OverlapParamGatherOption = Annotated[
    bool | None,
    typer.Option(
        "--overlap-param-gather/--no-overlap-param-gather",
        help="Megatron --overlap-param-gather: the distributed optimizer's parameter "
        "all-gather runs during the next forward; needs a sharded optimizer and "
        "--overlap-grad-reduce. [default: off]",
        show_default=False,
    ),
]
CpCommTypeOption = Annotated[
    str | None,
    typer.Option(
        "--cp-comm-type",
        help="Context-parallel algorithm (Megatron --cp-comm-type): p2p (ring) | "
        "all_gather | a2a (Ulysses) | a2a+p2p. [default: the framework's: p2p, DeepSpeed a2a]",
        show_default=False,
    ),
]
HierarchicalCpSizesOption = Annotated[
    str | None,
    typer.Option(
        "--hierarchical-cp-sizes",
        "--hierarchical-context-parallel-sizes",
        help="A,B for --cp-comm-type a2a+p2p (Megatron --hierarchical-context-parallel-sizes "
        "A B): all-to-all over A adjacent CP ranks, ring across the B groups; A x B = cp. "
        "Given alone, it sets --cp-comm-type a2a+p2p.",
        show_default=False,
    ),
]
DdpBucketViewOption = Annotated[
    bool | None,
    typer.Option(
        "--ddp-bucket-view/--no-ddp-bucket-view",
        help="Plain PyTorch DDP gradient_as_bucket_view=True: gradients are views of DDP's "
        "buckets, kept across steps (no second copy), instead of allocated in the backward "
        "and freed by zero_grad. [default: off]",
        show_default=False,
    ),
]
ExpandableSegmentsOption = Annotated[
    bool | None,
    typer.Option(
        "--expandable-segments/--no-expandable-segments",
        help="The launch sets PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True: the reserve "
        "uses the fragmentation share measured with it (Megatron-Core steps), not the "
        "default allocator's. [default: off]",
        show_default=False,
    ),
]
GradReduceInBf16Option = Annotated[
    bool | None,
    typer.Option(
        "--grad-reduce-in-bf16/--no-grad-reduce-in-bf16",
        help="Megatron-LM's --grad-reduce-in-bf16 (NeMo: grad_reduce_in_fp32=False): the "
        "contiguous gradient buffer in bf16, 2 bytes per parameter instead of fp32's 4. "
        "[default: off]",
        show_default=False,
    ),
]
CrossEntropyLossFusionOption = Annotated[
    bool | None,
    typer.Option(
        "--cross-entropy-loss-fusion/--no-cross-entropy-loss-fusion",
        help="Megatron-LM's --cross-entropy-loss-fusion: one fused cross-entropy kernel "
        "each way instead of the vocab-parallel cross entropy's eager ops. "
        "[default: off, as in Megatron-LM]",
        show_default=False,
    ),
]
GradientAccumulationFusionOption = Annotated[
    bool | None,
    typer.Option(
        "--gradient-accumulation-fusion/--no-gradient-accumulation-fusion",
        help="Megatron-LM's gradient accumulation fusion (off: --no-gradient-accumulation-"
        "fusion): the weight-gradient GEMMs add into the fp32 main gradient themselves; "
        "off, a hook adds each one per micro-batch. [default: on, as in Megatron-LM]",
        show_default=False,
    ),
]
KERNEL_SWITCH_FLAGS = {
    "cross_entropy_loss_fusion": "--cross-entropy-loss-fusion",
    "gradient_accumulation_fusion": "--gradient-accumulation-fusion",
}
"""The framework kernel switches the command line sets (``FrameworkProfile.kernel_switches``)."""
FlashAttentionOption = Annotated[
    bool,
    typer.Option(
        "--flash-attention/--no-flash-attention",
        help="Fused attention (no s x s scores kept) or an unfused softmax.",
    ),
]


FirstStageLayersOption = Annotated[
    int | None,
    typer.Option(
        "--first-stage-layers",
        "--decoder-first-pipeline-num-layers",
        min=1,
        help="Transformer layers on the first pipeline stage (uneven split; the middle "
        "stages share the rest evenly).",
    ),
]
LastStageLayersOption = Annotated[
    int | None,
    typer.Option(
        "--last-stage-layers",
        "--decoder-last-pipeline-num-layers",
        min=1,
        help="Transformer layers on the last pipeline stage (uneven split).",
    ),
]
AccountForEmbeddingOption = Annotated[
    bool,
    typer.Option(
        "--account-for-embedding-in-pipeline-split",
        help="Count the embedding as one layer when splitting layers over stages.",
    ),
]
AccountForLossOption = Annotated[
    bool,
    typer.Option(
        "--account-for-loss-in-pipeline-split",
        help="Count the output layer and loss as one layer when splitting.",
    ),
]
MicrobatchGroupOption = Annotated[
    int | None,
    typer.Option(
        "--microbatch-group-size-per-virtual-pipeline-stage",
        min=1,
        help="Interleaved schedule (--vpp > 1): consecutive micro-batches each rank runs "
        "through one model chunk before the next (Megatron-LM's flag); from pp to the "
        "micro-batches per step, the last group empty or at least pp. Larger groups warm "
        "up more micro-batches (more activation memory). [default: pp]",
        show_default=False,
    ),
]
PipelineScheduleOption = Annotated[
    str, typer.Option("--pipeline-schedule", help="1f1b (interleaved with --vpp) | gpipe.")
]
AttentionBackendOption = Annotated[
    str | None,
    typer.Option(
        "--attention-backend",
        help="flash | cudnn | efficient | unfused: the attention kernel timed [default: flash].",
    ),
]
LayerSpecOption = Annotated[
    str | None,
    typer.Option(
        "--layer-spec",
        help="Megatron-LM's layer spec (--transformer-impl): transformer_engine | local "
        "(Megatron-Core's local modules, what Megatron runs without Transformer Engine: "
        "unfused DotProductAttention with an fp32 softmax, torch norms; turns "
        "--flash-attention off). Megatron only. [default: transformer_engine]",
        show_default=False,
    ),
]


def attention_backend(name: str | None) -> AttentionBackend | None:
    """``--attention-backend``'s value, checked (None: the default kernel)."""
    if name is not None and name not in ATTENTION_BACKENDS:
        raise SpecError(
            f"--attention-backend: unknown '{name}'; known: {', '.join(ATTENTION_BACKENDS)}"
        )
    return name  # type: ignore[return-value]


def hierarchical_cp_sizes(text: str | None) -> tuple[int, int] | None:
    """``--hierarchical-cp-sizes``'s value 'A,B' (or 'A B') as a pair of whole numbers."""
    if text is None:
        return None
    parts = text.replace(",", " ").split()
    if len(parts) != 2 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise SpecError(
            f"--hierarchical-cp-sizes: {text!r} is not two positive whole numbers 'A,B' "
            "(the a2a group size, then the p2p group size)"
        )
    return int(parts[0]), int(parts[1])


def layout_from_options(
    *,
    tp: int,
    pp: int,
    cp: int,
    ep: int,
    etp: int | None,
    vpp: int | None,
    mbs: int,
    zero: int | None,
    distributed_optimizer: bool,
    sequence_parallel: bool,
    offload_optimizer: float,
    recompute: str,
    recompute_method: str | None,
    recompute_layers: int | None,
    first_stage_layers: int | None = None,
    last_stage_layers: int | None = None,
    account_for_embedding: bool = False,
    account_for_loss: bool = False,
    pipeline_schedule: str = "1f1b",
    tp_comm_overlap: bool | None = None,
    overlap_grad_reduce: bool | None = None,
    overlap_param_gather: bool | None = None,
    cp_comm_type: str | None = None,
    hierarchical_cp_sizes: tuple[int, int] | None = None,
    microbatch_group_size: int | None = None,
) -> ParallelConfig:
    """The layout the flags describe (ZeRO, the overlaps and the CP algorithm left unset
    keep the layout's defaults: off, p2p; a2a+p2p where only its group sizes are given)."""
    if hierarchical_cp_sizes is not None and cp_comm_type is None:
        cp_comm_type = "a2a+p2p"
    fields: dict[str, Any] = {
        "tp": tp,
        "pp": pp,
        "cp": cp,
        "ep": ep,
        "etp": etp,
        "vpp": vpp,
        "mbs": mbs,
        "distributed_optimizer": distributed_optimizer,
        "sequence_parallel": sequence_parallel,
        "offload_optimizer_fraction": offload_optimizer,
        "recompute": recompute,
        "recompute_method": recompute_method,
        "recompute_num_layers": recompute_layers,
        "first_stage_layers": first_stage_layers,
        "last_stage_layers": last_stage_layers,
        "account_for_embedding_in_pipeline_split": account_for_embedding,
        "account_for_loss_in_pipeline_split": account_for_loss,
        "pipeline_schedule": pipeline_schedule,
    }
    if zero is not None:
        fields["zero_stage"] = zero
    optional = {
        "tp_comm_overlap": tp_comm_overlap,
        "overlap_grad_reduce": overlap_grad_reduce,
        "overlap_param_gather": overlap_param_gather,
        "cp_comm_type": cp_comm_type,
        "hierarchical_cp_sizes": hierarchical_cp_sizes,
        "microbatch_group_size_per_vp_stage": microbatch_group_size,
    }
    fields.update({key: value for key, value in optional.items() if value is not None})
    layout: ParallelConfig = build_spec(ParallelConfig, "layout", **fields)
    return layout


_OVERLAP_FLAGS = {
    "tp_comm": ("tp_comm_overlap", "--tp-comm-overlap", "TP communication overlap"),
    "grad_reduce": ("overlap_grad_reduce", "--overlap-grad-reduce", "gradient-reduce switch"),
    "param_gather": ("overlap_param_gather", "--overlap-param-gather", "param-gather switch"),
}


def framework_knob_refusals(
    layout: ParallelConfig,
    *,
    framework: str,
    ddp_bucket_view: bool = False,
    switches: dict[str, bool | None] | None = None,
) -> list[str]:
    """The knobs of ``layout`` (and DDP's bucket view) that ``framework`` does not run.

    Each is a one-line reason naming the flag: an overlap the framework has no switch for
    (its profile's ``overlaps``: DeepSpeed has no TP overlap nor parameter-gather switch
    below ZeRO-3's prefetch; torchtitan's FSDP2 always overlaps its collectives), a
    context-parallel algorithm it does not implement (``cp_algorithms``), and
    ``gradient_as_bucket_view``, which only plain PyTorch DDP has (Megatron's gradients
    are always views of its contiguous buffer, DeepSpeed and FSDP2 keep their own), and
    a kernel switch (``switches``, set or None) the framework does not declare.
    """
    profile = get_profile(framework)
    reasons = [
        f"{flag}: {framework} has no {words}"
        for overlap, (field, flag, words) in _OVERLAP_FLAGS.items()
        if getattr(layout, field) and overlap not in profile.overlaps
    ]
    if layout.cp > 1 and layout.cp_comm_type not in profile.cp_algorithms:
        reasons.append(
            f"--cp-comm-type {layout.cp_comm_type}: {framework} runs "
            + ", ".join(profile.cp_algorithms)
        )
    group = layout.microbatch_group_size_per_vp_stage
    if group is not None and framework != "megatron":
        reasons.append(
            f"--microbatch-group-size-per-virtual-pipeline-stage: Megatron-LM's interleaved "
            f"schedule; {framework} has no such setting"
        )
    if ddp_bucket_view and profile.allocator_pattern != "ddp-buckets":
        reasons.append(
            f"--ddp-bucket-view: {framework} does not run PyTorch DDP's buckets (only "
            "--framework pytorch does)"
        )
    reasons += switch_refusals(framework, switches or {})
    return reasons


def switch_refusals(
    framework: str, switches: dict[str, bool | None], *, fields: bool = False
) -> list[str]:
    """The kernel switches (set, or None) that ``framework`` does not declare, each named
    by its flag (``fields``: by its REST field)."""
    profile = get_profile(framework)
    return [
        f"{name if fields else KERNEL_SWITCH_FLAGS[name]}: {framework} has no such switch"
        for name, value in switches.items()
        if value is not None and name not in profile.kernel_switches
    ]


def run_settings(
    *,
    framework: str,
    expandable_segments: bool | None,
    grad_reduce_in_bf16: bool | None,
    layer_spec: str | None,
    cross_entropy_loss_fusion: bool | None,
    gradient_accumulation_fusion: bool | None,
    fields: bool = False,
) -> tuple[Runtime, LayerSpec]:
    """The run-time settings of a search (``autopar plan``, ``POST /v1/plans``) as the
    ``Runtime`` and layer spec every layout is priced with, refused (one line) by the rules
    ``estimate`` applies: the layer spec and the kernel switches only where the framework
    has them, the bf16 gradient buffer only where it keeps a contiguous one. ``fields``
    names the REST fields in the message instead of the flags."""
    spec, _ = layer_spec_choice(
        layer_spec,
        framework=framework,
        flash_attention=True,
        attention_backend=None,
        option="layer_spec" if fields else "--layer-spec",
    )
    switches = {
        "cross_entropy_loss_fusion": cross_entropy_loss_fusion,
        "gradient_accumulation_fusion": gradient_accumulation_fusion,
    }
    reasons = switch_refusals(framework, switches, fields=fields)
    if grad_reduce_in_bf16:
        name = "grad_reduce_in_bf16" if fields else "--grad-reduce-in-bf16"
        reasons += [r for r in [grad_reduce_in_bf16_refusal(framework, option=name)] if r]
    if reasons:
        raise SpecError("; ".join(reasons))
    runtime = Runtime(
        expandable_segments=bool(expandable_segments),
        grad_reduce_in_bf16=bool(grad_reduce_in_bf16),
        **switches,
    )
    return runtime, spec


def default_cp_comm_type(framework: str) -> str:
    """The context-parallel algorithm ``framework`` runs unless told otherwise."""
    return get_profile(framework).cp_algorithms[0]
