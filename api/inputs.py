"""Request bodies to the planner's specs, with the checks the schema cannot express.

Names never reach the file-path branches of ``planner.catalog``: a model name is looked
up in the catalogue, then among the imported models; a cluster name must be a preset.
After resolution the checks that need the resolved specs run: the cluster's size
(``limits.MAX_GPUS``), an estimate's pipeline schedule size (``limits.MAX_PIPELINE_OPS``)
and a plan's search space (``ApiSettings.max_search_layouts``). Catalogue lookups are cached
per process (the catalogue is package data: it does not change while the server runs).

A plan's canonical inputs (:func:`plan_inputs`) are the resolved specs plus every knob
that changes the result, with defaults filled in and the batch expressed in sequences:
two requests with equal canonical inputs (by name or inline, in sequences or tokens)
get the same stored job.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

import hardware_db
from api.schemas import (
    ClusterInput,
    EstimateRequest,
    PlanRequest,
    RunSettingsRequest,
    WorkloadRequest,
)
from api.spec_inputs import plain
from api.store import ModelStore
from planner import catalog
from planner.cli.inputs import build_spec
from planner.cli.layout_options import (
    KERNEL_SWITCH_FLAGS,
    default_cp_comm_type,
    framework_knob_refusals,
    run_settings,
    switch_refusals,
)
from planner.cost.frameworks import LayerSpec, Runtime, layer_spec_choice
from planner.emit.base import autopar_version
from planner.errors import SpecError, UnknownNameError
from planner.frameworks.profile import get_profile
from planner.memplan.fits import MEMPLAN_TIME_LIMIT_S, with_simulated
from planner.plan import LengthsOption
from planner.predict import (
    Estimate,
    assemble,
    check_precision,
    estimate,
    memory_stages,
    prepare,
    time_report,
)
from planner.scattering.for_plan import check_lengths_option
from planner.search.candidates import coerce_knobs, enumerate_space
from planner.specs import limits as L
from planner.specs._base import spec_error
from planner.specs.hardware import ClusterSpec, GPUSpec, LinkSpec
from planner.specs.layout import ParallelConfig
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec


@functools.cache
def _catalogue_model(name: str) -> ModelSpec | None:
    """Catalogue files are package data: read each once per process."""
    try:
        return catalog.catalog_model(name).spec
    except UnknownNameError:
        return None


@functools.cache
def _presets() -> tuple[str, ...]:
    return tuple(hardware_db.list_clusters())


@functools.lru_cache(maxsize=1024)
def _preset_cluster(name: str, nodes: int | None, gpus: int | None) -> ClusterSpec:
    return catalog.load_cluster(name, nodes=nodes, gpus=gpus)


def resolve_model(ref: str | BaseModel, models: ModelStore) -> ModelSpec:
    """A catalogue or imported model by name, or an inline spec."""
    if not isinstance(ref, str):
        return plain(ModelSpec, ref)
    spec = _catalogue_model(ref)
    if spec is None:
        stored = models.get(ref)
        if stored is None:
            raise UnknownNameError(
                f"model: unknown '{ref}'; GET /v1/models lists the catalogue and imported models"
            )
        return ModelSpec.model_validate(stored)
    return spec


def resolve_cluster(ref: str | ClusterInput, *, gpus: int | None, nodes: int | None) -> ClusterSpec:
    """A preset by name, or an inline cluster, sized by ``gpus`` or ``nodes`` like the CLI."""
    if gpus is not None and nodes is not None:
        raise SpecError("cluster: give nodes or gpus, not both")
    if isinstance(ref, str):
        if ref not in _presets():
            raise UnknownNameError(
                f"cluster: unknown preset '{ref}'; known: {', '.join(_presets())}"
            )
        per_node = _preset_cluster(ref, None, None).gpus_per_node
        _check_size(gpus=gpus, nodes=nodes, per_node=per_node)
        return _preset_cluster(ref, nodes, gpus)
    _check_size(gpus=gpus, nodes=nodes, per_node=ref.gpus_per_node)
    num_gpus = gpus if gpus is not None else (nodes or 1) * ref.gpus_per_node
    try:
        return ClusterSpec(
            name=ref.name,
            gpu=_hardware(ref.gpu, GPUSpec, catalog.load_gpu),
            num_gpus=num_gpus,
            gpus_per_node=ref.gpus_per_node,
            intra_node=_hardware(ref.intra_node, LinkSpec, catalog.load_link),
            inter_node=_hardware(ref.inter_node, LinkSpec, catalog.load_link),
            nics_per_node=ref.nics_per_node or ref.gpus_per_node,
        )
    except ValidationError as error:
        raise spec_error(error, what="cluster") from None


def _hardware(ref: str | BaseModel, spec: type[BaseModel], load: Any) -> Any:
    return load(ref) if isinstance(ref, str) else plain(spec, ref)


def _check_size(*, gpus: int | None, nodes: int | None, per_node: int) -> None:
    if nodes is not None and nodes * per_node > L.MAX_GPUS:
        raise SpecError(
            f"nodes: {nodes} nodes x {per_node} GPUs = {nodes * per_node} GPUs exceeds this "
            f"service's bound of {L.MAX_GPUS} GPUs"
        )


def resolve_workload(body: WorkloadRequest) -> WorkloadSpec:
    """The workload, its batch counted in sequences (``WorkloadSpec`` bounds it)."""
    workload = build_spec(
        WorkloadSpec,
        "workload",
        seq_len=body.seq_len,
        global_batch=body.global_batch,
        global_batch_tokens=body.global_batch_tokens,
        precision=body.precision,
    )
    return WorkloadSpec(
        seq_len=workload.seq_len,
        global_batch=workload.sequences_per_step,
        precision=workload.precision,
    )


@dataclass(frozen=True)
class EstimateCall:
    """An estimate request resolved to the planner's specs and checked, ready to run."""

    model: ModelSpec
    cluster: ClusterSpec
    workload: WorkloadSpec
    layout: ParallelConfig
    body: EstimateRequest
    pipeline_ops: int
    """Micro-batches x pp x vpp: what the time model simulates (its cost grows with it)."""

    @property
    def layer_spec(self) -> LayerSpec:
        """The body's layer spec (checked by :func:`prepare_estimate`)."""
        return layer_spec_of(self.body)[0]

    @property
    def flash_attention(self) -> bool:
        """Fused attention: the body's, off under the local layer spec."""
        return layer_spec_of(self.body)[1]

    @property
    def runtime(self) -> Runtime:
        """The body's run-time settings (attention backend, allocator, Megatron switches)."""
        return Runtime(
            attention_backend=self.body.attention_backend,
            expandable_segments=self.body.expandable_segments,
            grad_reduce_in_bf16=self.body.grad_reduce_in_bf16,
            cross_entropy_loss_fusion=self.body.cross_entropy_loss_fusion,
            gradient_accumulation_fusion=self.body.gradient_accumulation_fusion,
        )

    def run(self) -> Estimate:
        """``planner.estimate`` on the resolved inputs; with ``memplan``, its memory
        section simulated as ``autopar estimate --memplan`` does."""
        inputs: dict[str, Any] = {
            "model": self.model,
            "cluster": self.cluster,
            "workload": self.workload,
            "layout": self.layout,
            "framework": self.body.framework,
            "state_layout_name": self.body.state_layout,
            "flash_attention": self.flash_attention,
            "runtime": self.runtime,
            "layer_spec": self.layer_spec,
        }
        if not self.body.memplan:
            return estimate(**inputs)
        prepared = prepare(**inputs)
        result = assemble(prepared, memory_stages(prepared), time_report(prepared))
        return with_simulated(result, prepared, time_limit_s=MEMPLAN_TIME_LIMIT_S)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for another process (:meth:`from_json` gives an equal call back;
        floats survive JSON exactly)."""
        return {
            "model": self.model.model_dump(mode="json"),
            "cluster": self.cluster.model_dump(mode="json"),
            "workload": self.workload.model_dump(mode="json"),
            "layout": self.layout.model_dump(mode="json"),
            "body": self.body.model_dump(mode="json"),
            "pipeline_ops": self.pipeline_ops,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EstimateCall:
        return cls(
            model=ModelSpec.model_validate(data["model"]),
            cluster=ClusterSpec.model_validate(data["cluster"]),
            workload=WorkloadSpec.model_validate(data["workload"]),
            layout=ParallelConfig.model_validate(data["layout"]),
            body=EstimateRequest.model_validate(data["body"]),
            pipeline_ops=data["pipeline_ops"],
        )


def layer_spec_of(body: EstimateRequest) -> tuple[LayerSpec, bool]:
    """(layer spec, flash attention) of a request body (``SpecError`` naming ``layer_spec``
    for a framework other than Megatron or a fused backend under the local spec)."""
    return layer_spec_choice(
        body.layer_spec,
        framework=body.framework,
        flash_attention=body.flash_attention,
        attention_backend=body.attention_backend,
        option="layer_spec",
    )


def needs_store(body: EstimateRequest) -> bool:
    """Whether resolving ``body`` reads the database (a model name outside the catalogue)."""
    return isinstance(body.model, str) and _catalogue_model(body.model) is None


def prepare_estimate(body: EstimateRequest, models: ModelStore) -> EstimateCall:
    """Resolve and check an estimate request (a SpecError names the broken rule)."""
    model = resolve_model(body.model, models)
    cluster = resolve_cluster(body.cluster, gpus=body.gpus, nodes=body.nodes)
    workload = resolve_workload(body)
    fields: dict[str, Any] = {
        "tp": body.tp,
        "pp": body.pp,
        "cp": body.cp,
        "ep": body.ep,
        "etp": body.etp,
        "vpp": body.vpp,
        "mbs": body.mbs,
        "distributed_optimizer": body.distributed_optimizer,
        "sequence_parallel": body.sequence_parallel,
        "offload_optimizer_fraction": body.offload_optimizer,
        "recompute": body.recompute,
        "recompute_method": body.recompute_method,
        "recompute_num_layers": body.recompute_layers,
    }
    if body.zero is not None:
        fields["zero_stage"] = body.zero
    split = {  # set only when given: a memory plan's stored layout (and hash) stays as it was
        "first_stage_layers": body.first_stage_layers,
        "last_stage_layers": body.last_stage_layers,
        "account_for_embedding_in_pipeline_split": body.account_for_embedding_in_pipeline_split
        or None,
        "account_for_loss_in_pipeline_split": body.account_for_loss_in_pipeline_split or None,
        "microbatch_group_size_per_vp_stage": body.microbatch_group_size_per_virtual_pipeline_stage,
        "pipeline_schedule": None if body.pipeline_schedule == "1f1b" else body.pipeline_schedule,
    }
    fields.update({key: value for key, value in split.items() if value is not None})
    fields.update(_context_parallel(body))
    layout = build_spec(ParallelConfig, "layout", **fields)
    if body.microbatch_group_size_per_virtual_pipeline_stage and body.framework != "megatron":
        raise SpecError(
            "microbatch_group_size_per_virtual_pipeline_stage: Megatron-LM's interleaved "
            f"schedule; {body.framework} has no such setting"
        )
    refused = framework_knob_refusals(layout, framework=body.framework)
    refused += switch_refusals(body.framework, _switches(body), fields=True)
    if refused:
        raise SpecError("; ".join(refused))
    _check_stage_layers(layout, model)
    layer_spec_of(body)
    ops = _pipeline_ops(layout, cluster=cluster, workload=workload)
    return EstimateCall(model, cluster, workload, layout, body, pipeline_ops=ops)


def _switches(body: RunSettingsRequest) -> dict[str, bool | None]:
    """The kernel switches of a request body (None: not given)."""
    return {
        "cross_entropy_loss_fusion": body.cross_entropy_loss_fusion,
        "gradient_accumulation_fusion": body.gradient_accumulation_fusion,
    }


def plan_run_settings(body: PlanRequest) -> tuple[Runtime, LayerSpec]:
    """The run-time settings of a plan request (``autopar plan``'s flags, checked by the
    same rules)."""
    return run_settings(
        framework=body.framework,
        expandable_segments=body.expandable_segments,
        grad_reduce_in_bf16=body.grad_reduce_in_bf16,
        layer_spec=body.layer_spec,
        fields=True,
        **_switches(body),
    )


def _context_parallel(body: EstimateRequest) -> dict[str, Any]:
    """The CP algorithm as ``autopar estimate`` resolves it: the one given, a2a+p2p where
    only its group sizes are given, else the framework's own when cp > 1 (p2p; DeepSpeed
    a2a). Set only where it is not the layout's default, so a memory plan's stored layout
    (and hash) stays as it was."""
    comm = body.cp_comm_type
    if comm is None and body.hierarchical_cp_sizes is not None:
        comm = "a2a+p2p"
    if comm is None and body.cp > 1:
        comm = default_cp_comm_type(body.framework)
    fields: dict[str, Any] = {}
    if body.cp_comm_type is not None or (comm is not None and comm != "p2p"):
        fields["cp_comm_type"] = comm
    if body.hierarchical_cp_sizes is not None:
        fields["hierarchical_cp_sizes"] = tuple(body.hierarchical_cp_sizes)
    return fields


def _check_stage_layers(layout: ParallelConfig, model: ModelSpec) -> None:
    """first/last_stage_layers within the model's layers, named by field (the planner's
    split rules, checked when the estimate runs, say the rest)."""
    given = [
        (name, value)
        for name, value in (
            ("first_stage_layers", layout.first_stage_layers),
            ("last_stage_layers", layout.last_stage_layers),
        )
        if value is not None
    ]
    for name, value in given:
        if value > model.num_layers:
            raise SpecError(f"{name}: {value} is more than the model's {model.num_layers} layers")
    if len(given) == 2 and given[0][1] + given[1][1] > model.num_layers:
        raise SpecError(
            f"first_stage_layers, last_stage_layers: {given[0][1]} + {given[1][1]} is more "
            f"than the model's {model.num_layers} layers"
        )


def run_estimate(body: EstimateRequest, models: ModelStore) -> Estimate:
    """``autopar estimate`` for a request body."""
    return prepare_estimate(body, models).run()


def _pipeline_ops(layout: ParallelConfig, *, cluster: ClusterSpec, workload: WorkloadSpec) -> int:
    """Micro-batches x pp x vpp, within ``MAX_PIPELINE_OPS`` (other rules: the planner's;
    0 where the layout does not divide the cluster, which the planner then names)."""
    model_parallel = layout.tp * layout.cp * layout.pp
    if cluster.num_gpus % model_parallel != 0:
        return 0
    dp = layout.dp or cluster.num_gpus // model_parallel
    microbatches = -(-workload.sequences_per_step // (layout.mbs * dp))
    return L.check_pipeline_ops(microbatches=microbatches, pp=layout.pp, vpp=layout.vpp or 1)


def plan_inputs(
    body: PlanRequest, models: ModelStore, *, max_time_limit_s: float, max_layouts: int
) -> tuple[dict[str, Any], int]:
    """The canonical inputs of a plan request and the size of its search space."""
    if body.time_limit > max_time_limit_s:
        raise SpecError(
            f"time_limit: {body.time_limit:g} s is more than this server allows, "
            f"{max_time_limit_s:g} s (AUTOPAR_MAX_TIME_LIMIT_S)"
        )
    model = resolve_model(body.model, models)
    cluster = resolve_cluster(body.cluster, gpus=body.gpus, nodes=body.nodes)
    workload = resolve_workload(body)
    check_precision(cluster, workload)
    version = framework_version(body)
    fixed = coerce_knobs(dict(body.fix or {}), option="fix", strict=True)
    maxima = dict(body.max or {})
    runtime, spec = plan_run_settings(body)
    space = enumerate_space(
        model, cluster, workload, framework=body.framework, fixed=fixed, maxima=maxima,
        framework_version=version, layer_spec=spec,
    )  # fmt: skip
    if len(space.layouts) > max_layouts:
        raise SpecError(
            f"max: the search space holds {len(space.layouts)} candidate layouts, more than "
            f"this server's bound of {max_layouts}; pin knobs with fix or bound them with max"
        )
    inputs = {
        "autopar": autopar_version(),
        "model": model.model_dump(mode="json"),
        "cluster": cluster.model_dump(mode="json"),
        "workload": workload.model_dump(mode="json"),
        "framework": body.framework,
        "objective": body.objective,
        "fix": fixed,
        "max": maxima,
        "headroom_gib": body.headroom_gib,
        "risk": body.risk,
        "top_k": body.top_k,
        "time_limit_s": body.time_limit,
    }
    if version is not None:  # absent unless given: older hashes stay valid
        inputs["framework_version"] = version
    if body.memplan:  # absent unless asked: older hashes stay valid
        inputs["memplan"] = True
    if spec != "transformer_engine":  # each absent unless given: older hashes stay valid
        inputs["layer_spec"] = spec
    for name in RUN_SETTINGS:  # the allocator and buffer when on; a switch when given
        value = getattr(runtime, name)
        if value is True or (value is False and name in KERNEL_SWITCH_FLAGS):
            inputs[name] = value
    for knob in ("price_per_gpu_hour", "token_budget", "deadline_hours"):
        if getattr(body, knob) is not None:  # absent unless given: older hashes stay valid
            inputs[knob] = getattr(body, knob)
    lengths = plan_lengths(body, gpus=cluster.num_gpus)
    if lengths is not None:  # absent unless given, as above
        inputs["lengths"] = lengths.model_dump(mode="json", exclude_none=True)
    return json.loads(json.dumps(inputs)), len(space.layouts)


RUN_SETTINGS = (
    "expandable_segments", "grad_reduce_in_bf16", "cross_entropy_loss_fusion",
    "gradient_accumulation_fusion",
)  # fmt: skip
"""The ``Runtime`` fields a plan job's canonical inputs carry when set (``run_plan``)."""


def framework_version(body: PlanRequest) -> str | None:
    """``framework_version`` checked against the framework's releases (the CLI's
    ``--torchtitan-version``): None when not given or when it names the default release,
    so that a request naming the default is the same job as one that does not."""
    if body.framework_version is None:
        return None
    versions = get_profile(body.framework).versions
    if not versions:
        raise SpecError(f"framework_version: {body.framework} has no versions to choose from")
    if body.framework_version not in versions:
        known = ", ".join(versions)
        raise SpecError(
            f"framework_version: unknown {body.framework} version "
            f"'{body.framework_version}'; known: {known}"
        )
    default = next(iter(versions))
    return None if body.framework_version == default else body.framework_version


def plan_lengths(body: PlanRequest, *, gpus: int) -> LengthsOption | None:
    """``length_dist`` or ``seq_lengths`` as the planner's ``LengthsOption``, checked now
    (a bad name, both or a GPU count that is not a power of two: 404/422 before queueing)."""
    if body.length_dist is None and body.seq_lengths is None:
        return None
    if body.length_dist is not None and body.seq_lengths is not None:
        raise SpecError("length_dist, seq_lengths: give one of them, not both")
    if body.length_dist is not None:
        option = LengthsOption(
            distribution=body.length_dist, samples=body.length_samples, seed=body.length_seed
        )
    else:
        raw = body.seq_lengths or []
        batches = raw if raw and isinstance(raw[0], list) else [raw]
        option = LengthsOption(batches=[list(b) for b in batches], source="request seq_lengths")
    check_lengths_option(option, gpus=gpus)
    return option


def inputs_hash(inputs: dict[str, Any]) -> str:
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
