"""The layout flags of one given layout, shared by ``estimate`` and ``memplan``.

Each flag is an ``Annotated`` alias, so every command that takes a layout declares it the
same way; :func:`layout_from_options` turns their values into a ``ParallelConfig`` with
one-line errors.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from planner.cli.inputs import build_spec
from planner.cost.frameworks import ATTENTION_BACKENDS, AttentionBackend
from planner.errors import SpecError
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
    bool, typer.Option("--distributed-optimizer", help="Megatron's sharded optimizer.")
]
SequenceParallelOption = Annotated[
    bool,
    typer.Option(
        "--sequence-parallel",
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
    typer.Option(help="megatron | zero | fsdp | autocast | bf16 [default: per framework]."),
]
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


def attention_backend(name: str | None) -> AttentionBackend | None:
    """``--attention-backend``'s value, checked (None: the default kernel)."""
    if name is not None and name not in ATTENTION_BACKENDS:
        raise SpecError(
            f"--attention-backend: unknown '{name}'; known: {', '.join(ATTENTION_BACKENDS)}"
        )
    return name  # type: ignore[return-value]


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
) -> ParallelConfig:
    """The layout the flags describe (ZeRO left unset keeps the framework's default)."""
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
    layout: ParallelConfig = build_spec(ParallelConfig, "layout", **fields)
    return layout
