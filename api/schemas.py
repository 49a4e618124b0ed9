"""Request and response bodies of the REST service.

Requests use the CLI's option names in snake_case (``--seq-len`` -> ``seq_len``, ``--fix
tp=8`` -> ``"fix": {"tp": 8}``, ``--max`` -> ``max``, ``--time-limit`` -> ``time_limit``,
``--zero`` -> ``zero``, ``--recompute-layers`` -> ``recompute_layers``). ``model`` and
``cluster`` are a catalogue name or an inline spec (:mod:`api.spec_inputs`); ``gpus`` or
``nodes`` sizes the cluster as on the command line. Responses reuse the planner's own
models: ``Estimate`` (``autopar estimate --json``) and ``PlanResult`` (``autopar plan
--json``). Every size has an upper bound (:mod:`api.limits`), stated in the schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from api.problems import Problem
from api.spec_inputs import GPUInput, LinkInput, ModelInput
from planner.cost.frameworks import AttentionBackend, BuiltinFramework, LayerSpec, StateLayoutName
from planner.plan import DEFAULT_TIME_LIMIT_S, PlanResult
from planner.specs import limits as L
from planner.specs.hardware import GPUSpec, LinkSpec
from planner.specs.layout import (
    CpCommType,
    ParallelConfig,
    PipelineSchedule,
    Recompute,
    RecomputeMethod,
)
from planner.specs.model import ModelSpec
from planner.specs.workload import Precision

Name = Annotated[str, Field(pattern=L.NAME_PATTERN, description="a catalogue name")]


def _name_or_inline(value: Any) -> str:
    return "name" if isinstance(value, str) else "inline"


def _either(inline: Any, what: str) -> Any:
    """A catalogue name or an inline spec (the tag, 'name' or 'inline', shows in error paths)."""
    return Annotated[
        Annotated[Name, Tag("name")] | Annotated[inline, Tag("inline")],
        Discriminator(_name_or_inline),
        Field(description=f"{what}: a catalogue name, or an inline spec"),
    ]


class Body(BaseModel):
    """A request body: strict JSON types (``true`` or ``"8"`` is not a number), finite numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class ClusterInput(Body):
    """An inline cluster: the keys of a cluster preset file, GPU and links by id or inline."""

    name: str = Field(default="custom", pattern=L.NAME_PATTERN)
    gpu: _either(GPUInput, "GPU")  # type: ignore[valid-type]
    gpus_per_node: int = Field(ge=1, le=L.MAX_GPUS_PER_NODE)
    intra_node: _either(LinkInput, "link inside a node")  # type: ignore[valid-type]
    inter_node: _either(LinkInput, "link between nodes")  # type: ignore[valid-type]
    nics_per_node: int | None = Field(
        default=None, ge=1, le=L.MAX_GPUS_PER_NODE, description="default: gpus_per_node"
    )


class WorkloadRequest(Body):
    """What every estimate and plan names: model, cluster and its size, workload, framework."""

    model: _either(ModelInput, "the model")  # type: ignore[valid-type]
    cluster: _either(ClusterInput, "the cluster")  # type: ignore[valid-type]
    gpus: int | None = Field(
        default=None,
        ge=1,
        le=L.MAX_GPUS,
        description=f"total GPUs (a partial node is fine); at most {L.MAX_GPUS}",
    )
    nodes: int | None = Field(
        default=None,
        ge=1,
        le=L.MAX_NODES,
        description=f"whole nodes; nodes x gpus_per_node at most {L.MAX_GPUS} GPUs",
    )
    seq_len: int = Field(ge=1, le=L.MAX_SEQ_LEN, description="tokens per sequence")
    global_batch: int | None = Field(
        default=None, ge=1, le=L.MAX_GLOBAL_BATCH, description="sequences per step"
    )
    global_batch_tokens: int | None = Field(
        default=None,
        ge=1,
        le=L.MAX_GLOBAL_BATCH_TOKENS,
        description=f"tokens per step; at most {L.MAX_GLOBAL_BATCH} sequences",
    )
    precision: Precision = "bf16"
    framework: BuiltinFramework = "megatron"


class RunSettingsRequest(WorkloadRequest):
    """The launch's run-time settings (``cost.frameworks.Runtime`` and Megatron's layer
    spec), as ``autopar estimate`` and ``autopar plan`` take them: absent, the defaults."""

    layer_spec: LayerSpec | None = Field(
        default=None,
        description="Megatron-LM's layer spec (--transformer-impl; --layer-spec): "
        "transformer_engine (default) or local (Megatron-Core's unfused attention with an "
        "fp32 softmax; turns flash_attention off); megatron only",
    )
    expandable_segments: bool = Field(
        default=False,
        description="the launch sets PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "
        "(--expandable-segments): Megatron's fragmentation share is the one measured with it",
    )
    grad_reduce_in_bf16: bool = Field(
        default=False,
        description="Megatron-LM's --grad-reduce-in-bf16: the gradient buffer in bf16",
    )
    cross_entropy_loss_fusion: bool | None = Field(
        default=None,
        description="Megatron-LM's --cross-entropy-loss-fusion (--cross-entropy-loss-fusion); "
        "absent: the framework's default (off); megatron only",
    )
    gradient_accumulation_fusion: bool | None = Field(
        default=None,
        description="Megatron-LM's gradient accumulation fusion (false: "
        "--no-gradient-accumulation-fusion); absent: the framework's default (on); megatron only",
    )


class EstimateRequest(RunSettingsRequest):
    """``autopar estimate``: one layout's memory per stage and step time."""

    tp: int = Field(default=1, ge=1, le=L.MAX_DEGREE)
    pp: int = Field(default=1, ge=1, le=L.MAX_DEGREE)
    cp: int = Field(default=1, ge=1, le=L.MAX_DEGREE)
    ep: int = Field(default=1, ge=1, le=L.MAX_DEGREE)
    etp: int | None = Field(default=None, ge=1, le=L.MAX_DEGREE)
    vpp: int | None = Field(default=None, ge=1, le=64)
    mbs: int = Field(default=1, ge=1, le=L.MAX_MBS)
    zero: Literal[0, 1, 2, 3] | None = Field(default=None, description="ZeRO stage")
    distributed_optimizer: bool = False
    sequence_parallel: bool = False
    offload_optimizer: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="share of the optimizer step kept on the host (--offload-optimizer)",
    )  # fmt: skip
    recompute: Recompute = "none"
    recompute_method: RecomputeMethod | None = None
    recompute_layers: int | None = Field(default=None, ge=1, le=L.MAX_LAYERS)
    first_stage_layers: int | None = Field(
        default=None, ge=1, le=L.MAX_LAYERS,
        description="transformer layers on the first pipeline stage (uneven split; the "
        "middle stages share the rest evenly); needs pp > 1",
    )  # fmt: skip
    last_stage_layers: int | None = Field(
        default=None, ge=1, le=L.MAX_LAYERS,
        description="transformer layers on the last pipeline stage (uneven split); needs pp > 1",
    )  # fmt: skip
    account_for_embedding_in_pipeline_split: bool = Field(
        default=False, description="count the embedding as one layer when splitting over stages"
    )
    account_for_loss_in_pipeline_split: bool = Field(
        default=False, description="count the output layer and loss as one layer when splitting"
    )
    microbatch_group_size_per_virtual_pipeline_stage: int | None = Field(
        default=None, ge=1, le=L.MAX_GLOBAL_BATCH,
        description="interleaved schedule (vpp > 1): consecutive micro-batches run through "
        "one model chunk before the next; from pp to the micro-batches per step; default pp",
    )  # fmt: skip
    pipeline_schedule: PipelineSchedule = Field(
        default="1f1b", description="1f1b (interleaved with vpp) or gpipe"
    )
    cp_comm_type: CpCommType | None = Field(
        default=None,
        description="the context-parallel algorithm (--cp-comm-type); default: the "
        "framework's own (p2p; DeepSpeed a2a), or a2a+p2p when hierarchical_cp_sizes is given",
    )
    hierarchical_cp_sizes: list[Annotated[int, Field(ge=1, le=L.MAX_DEGREE)]] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="a2a+p2p's [a2a group, p2p group] sizes, product cp (--hierarchical-cp-sizes)",
    )
    attention_backend: AttentionBackend | None = Field(
        default=None, description="the attention kernel timed; default: flash"
    )
    state_layout: StateLayoutName | None = Field(default=None, description="default: per framework")
    flash_attention: bool = True
    memplan: bool = Field(
        default=False,
        description=(
            "also replay each stage's tensor lifetimes through the simulated caching allocator "
            "and autopar's planned placement (autopar estimate --memplan; seconds per stage): "
            "memory.simulated (planned and simulated peaks per stage) and memory.fits_basis"
        ),
    )


MAX_LENGTH_BATCHES = 16
"""Batches of lengths a plan request may give (``seq_lengths``) or sample (``length_samples``)."""
MAX_SEQUENCES_PER_BATCH = 20_000
MAX_DOCUMENT_TOKENS = 1 << 24
"""Tokens of one document accepted in a request (documents are cut at ``seq_len``)."""
DocumentLength = Annotated[int, Field(ge=1, le=MAX_DOCUMENT_TOKENS)]
LengthBatch = Annotated[
    list[DocumentLength], Field(min_length=1, max_length=MAX_SEQUENCES_PER_BATCH)
]

KnobName = Literal[tuple(ParallelConfig.model_fields)]  # type: ignore[valid-type]
IntKnobName = Literal[
    "tp", "pp", "dp", "cp", "ep", "etp", "vpp", "mbs",
    "recompute_num_layers", "first_stage_layers", "last_stage_layers",
]  # fmt: skip
KnobValue = int | float | bool | str | None


MEMPLAN_SEARCH_SHARE = 0.6
"""With ``memplan``, the share of a plan job's ``time_limit`` its search gets; the
simulation of the best plans has the rest, so the job stays within the time limit its
hard deadline is counted from (``api.jobs.hard_deadline_s``)."""


class PlanRequest(RunSettingsRequest):
    """``autopar plan``: the fastest layouts that fit, ranked."""

    framework_version: str | None = Field(
        default=None,
        pattern=L.NAME_PATTERN,
        description="the framework release planned for (autopar plan --torchtitan-version): "
        "torchtitan current or 0.2; only for a framework with versions. Default: the newest",
    )
    objective: Literal["throughput", "cost", "min-gpus"] = "throughput"
    fix: dict[KnobName, KnobValue] | None = Field(  # type: ignore[valid-type]
        default=None, description='pin knobs, e.g. {"tp": 8, "cp": 2}'
    )
    max: dict[IntKnobName, Annotated[int, Field(ge=1, le=65536)]] | None = Field(
        default=None, description='bound knobs, e.g. {"tp": 8, "pp": 4}'
    )
    headroom_gib: float | None = Field(
        default=None,
        ge=0.0,
        le=L.MAX_HEADROOM_GIB,
        description="GiB kept free on every GPU; absent: the framework's default margin "
        "(its worst validated peak-memory error of the capacity); 0 keeps none",
    )
    risk: Literal["averse", "neutral"] = Field(
        default="averse",
        description="averse: plans inside the best one's step-time band ordered by "
        "robustness; neutral: by the prediction alone",
    )
    price_per_gpu_hour: float | None = Field(
        default=None,
        ge=0.0,
        le=L.MAX_PRICE_PER_GPU_HOUR,
        description="objective cost: price of one GPU-hour",
    )
    token_budget: float | None = Field(
        default=None,
        gt=0.0,
        le=L.MAX_TOKEN_BUDGET,
        description="objective cost or min-gpus: tokens to train",
    )
    deadline_hours: float | None = Field(
        default=None,
        gt=0.0,
        le=L.MAX_DEADLINE_HOURS,
        description="objective min-gpus: hours for the budget",
    )
    top_k: int = Field(default=5, ge=1, le=L.MAX_TOP_K)
    memplan: bool = Field(
        default=False,
        description=(
            "simulate the memory of the best plans as autopar plan --memplan does "
            "(memory.simulated and memory.fits_basis in their entries); the search then has "
            f"{MEMPLAN_SEARCH_SHARE:.0%} of time_limit and the simulation the rest"
        ),
    )
    time_limit: float = Field(
        default=DEFAULT_TIME_LIMIT_S,
        ge=L.MIN_TIME_LIMIT_S,
        le=L.MAX_TIME_LIMIT_S,
        description=(
            "seconds for the whole search (a wall-clock deadline: past it the best plans "
            "found are returned, labelled not proven optimal); at most this server's "
            "AUTOPAR_MAX_TIME_LIMIT_S, the maximum stated here (a larger value is refused "
            "with 422, not cut)"
        ),
    )
    length_dist: str | None = Field(
        default=None,
        pattern=L.NAME_PATTERN,
        description="price the layouts over a shipped length distribution (--length-dist)",
    )
    seq_lengths: (
        Annotated[list[LengthBatch], Field(min_length=1, max_length=MAX_LENGTH_BATCHES)]
        | LengthBatch
        | None
    ) = Field(
        default=None,
        description="price the layouts over these document lengths (--seq-lengths): one batch "
        "(a list of token counts) or a list of batches",
    )
    length_samples: int = Field(
        default=2, ge=1, le=MAX_LENGTH_BATCHES, description="batches sampled from length_dist"
    )
    length_seed: int = Field(default=0, ge=0, le=2**31 - 1, description="seed of that sampling")


JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
PlanPhase = Literal["tabulate", "time", "split", "solve", "done"]
"""``planner.search.progress.PHASES``."""


class JobProgress(BaseModel):
    queue_position: int | None = Field(
        default=None, description="queued jobs ahead of this one (queued only)"
    )
    elapsed_s: float | None = Field(default=None, description="since the job started running")
    time_limit_s: float = Field(description="the job's time limit after the server's cap")
    fraction_of_time_limit: float | None = Field(
        default=None, ge=0, le=1, description="elapsed_s / time_limit_s (running only)"
    )
    layouts: int = Field(description="candidate layouts the search evaluates")
    phase: PlanPhase | None = Field(
        default=None,
        description=(
            "the planner's phase, once it reported (running, and kept when done): tabulate "
            "(costing the memory of every candidate), time (simulating the contenders' "
            "steps), split (stage-partition solver), solve (CP-SAT), done"
        ),
    )
    layouts_evaluated: int | None = Field(
        default=None, ge=0, description="candidate layouts costed so far (never decreases)"
    )
    layouts_total: int | None = Field(
        default=None,
        ge=0,
        description=(
            "candidate layouts of the cluster sizes enumerated so far (the cost and min-gpus "
            "objectives add sizes as they go)"
        ),
    )
    layouts_timed: int | None = Field(
        default=None, ge=0, description="layouts whose step time was simulated so far"
    )
    fraction_evaluated: float | None = Field(
        default=None, ge=0, le=1, description="layouts_evaluated / layouts_total"
    )
    cancel_requested: bool = False


class Job(BaseModel):
    """A planning job; ``result`` is exactly ``autopar plan --json`` once ``done``."""

    id: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    inputs_hash: str = Field(description="sha256 of the canonical inputs")
    progress: JobProgress
    request: dict[str, Any] = Field(description="the body as it was first submitted")
    result: PlanResult | None = None
    error: Problem | None = None
    reused: bool = Field(
        default=False, description="this answer is a stored job with the same canonical inputs"
    )


class JobSummary(BaseModel):
    """One stored plan job in a listing: its request and, once done, its best plan."""

    id: str
    status: JobStatus
    created_at: datetime
    request: dict[str, Any] = Field(description="the body as it was first submitted")
    best_layout: str | None = Field(default=None, description="the best plan's layout")
    best_step_time_s: float | None = None


class ModelEntry(BaseModel):
    """A model and its size (``autopar models show --json``), with where it comes from."""

    name: str
    display_name: str | None = None
    origin: Literal["catalogue", "imported"]
    spec: ModelSpec
    params_total: int
    params_active: int
    flops_per_token: float
    flops_seq_len: int
    not_modelled: list[str] = Field(
        default_factory=list,
        description="config.json keys the importer does not model (e.g. rope_scaling), with "
        "their values: the estimates ignore them",
    )


class ClusterEntry(BaseModel):
    """A cluster preset (one node; size it with ``gpus`` or ``nodes`` in a request)."""

    id: str
    gpu: GPUSpec
    gpus_per_node: int
    intra_node: LinkSpec
    inter_node: LinkSpec
    nics_per_node: int
    inter_node_bandwidth_per_gpu_gbps: float


class LaunchFiles(BaseModel):
    job_id: str
    format: str
    plan_rank: int = Field(description="1 = the best plan")
    files: dict[str, str] = Field(description="file name -> contents")


class Limits(BaseModel):
    max_gpus: int = L.MAX_GPUS
    max_global_batch: int = L.MAX_GLOBAL_BATCH
    max_seq_len: int = L.MAX_SEQ_LEN
    max_pipeline_ops: int = L.MAX_PIPELINE_OPS
    max_time_limit_s: float
    max_body_bytes: int
    max_search_layouts: int
    max_queued_jobs: int


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    database: str = Field(description="sqlite or postgresql")
    job_workers: int
    job_workers_ready: int = Field(description="planning processes started and warmed up")
    queued_jobs: int
    limits: Limits
