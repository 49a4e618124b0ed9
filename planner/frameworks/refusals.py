"""What a framework's launch files cannot express for one layout: the refusals, said once.

Both the search (``planner.search.candidates``: a candidate refused here is dropped and
counted under ``Rule.FRAMEWORK_CANNOT_EXPRESS``) and the emitters (``planner.emit``: a plan
refused here is not written) call :func:`layout_refusals`, so a plan the search returns for
a framework is one that framework's emitter writes, and the words of a refusal are the
same in both places.

A refusal here depends on the layout, or on the layout with the model, sequence length,
precision and framework release (:class:`LayoutQuery`). What no layout can change is the
emitter's own business and is not a constraint of the search: a model the framework does
not define (torchtitan's model table, Megatron-LM's missing activation flags), a GPU count
that does not fill whole nodes, or a plan estimated for another framework.

:func:`layout_refusals` is the generic part, read from the profile's declarations (axes,
interleaved schedule, uneven stages, CP algorithms of the release, sharding stages,
offload), followed by the profile's ``layout_rules``: :func:`megatron_rules`,
:func:`deepspeed_rules`, :func:`torchtitan_rules`. ``release`` None asks what every
release refuses (the emitter's version-independent check); a release asks about that one.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.frameworks.profile import FrameworkProfile
from planner.specs.layout import ParallelConfig, stage_layer_counts_or_even
from planner.specs.model import ModelSpec


@dataclass(frozen=True)
class LayoutQuery:
    """One layout (``dp`` resolved) with what its refusals read besides the layout."""

    model: ModelSpec
    layout: ParallelConfig
    seq_len: int
    precision: str
    release: str | None = None
    """The framework release the files are for (``FrameworkProfile.versions``); None: any."""


_AXIS_WORDS = {
    "tp": "tensor parallelism",
    "cp": "context parallelism",
    "pp": "pipeline parallelism",
    "ep": "expert parallelism",
}


def layout_refusals(profile: FrameworkProfile, query: LayoutQuery) -> list[str]:
    """Every reason ``profile``'s launch files cannot express the layout (empty: they can)."""
    reasons = generic_refusals(profile, query)
    if profile.layout_rules is not None:
        reasons.extend(profile.layout_rules(profile, query))
    return reasons


def generic_refusals(profile: FrameworkProfile, query: LayoutQuery) -> list[str]:
    """What the layout needs that the profile does not declare (module docstring), in the
    profile's ``refusal_words`` where it has them."""
    layout, name, words = query.layout, profile.name, profile.refusal_words
    reasons = [
        f"{axis} = {getattr(layout, axis)}: "
        + words.get(axis, f"{name} runs no {_AXIS_WORDS[axis]}")
        for axis in _AXIS_WORDS
        if getattr(layout, axis) > 1 and not profile.runs(axis)  # type: ignore[arg-type]
    ]
    if layout.sequence_parallel and not profile.runs("sequence_parallel"):
        reasons.append(f"sequence_parallel: {name} runs no sequence parallelism")
    if layout.interleaved and not profile.interleaved:
        reasons.append(
            f"vpp = {layout.vpp}: "
            + words.get("vpp", f"{name} runs no interleaved (virtual) stages")
        )
    reasons.extend(_uneven_refusals(profile, query))
    group = layout.microbatch_group_size_per_vp_stage
    if group is not None and group != layout.pp and profile.name != "megatron":
        reasons.append(
            f"microbatch_group_size_per_vp_stage {group}: Megatron-LM's interleaved schedule; "
            f"{name} runs its micro-batches through each model chunk in groups of pp"
        )
    if layout.cp > 1 and layout.cp_comm_type not in profile.cp_algorithms_at(query.release):
        reasons.append(_cp_refusal(profile, layout.cp_comm_type, query.release))
    stage = 1 if layout.distributed_optimizer else layout.zero_stage
    if stage not in profile.sharding_stages:
        stages = ", ".join(str(s) for s in sorted(profile.sharding_stages))
        said = words.get("sharding", f"{name} runs stages {stages}")
        reasons.append(f"ZeRO stage {stage}: " + said.format(stage=stage))
    if layout.offload_optimizer_fraction > 0 and profile.offload == "none":
        reasons.append(
            "offload_optimizer_fraction: "
            + words.get("offload", f"{name} does not offload the optimizer")
        )
    return reasons


def _cp_refusal(profile: FrameworkProfile, algorithm: str, release: str | None) -> str:
    """The CP algorithm refused: the profile's words where no release runs it, else the
    release's algorithms and the versions that do run it."""
    if algorithm == "a2a+p2p" and algorithm not in profile.cp_algorithms:
        return (
            "cp_comm_type a2a+p2p: hierarchical context parallelism (all-to-all inside a "
            "group, ring across groups) is Megatron-LM's with Transformer Engine; "
            f"{profile.name} does not run it"
        )
    if algorithm not in profile.cp_algorithms and "cp_comm_type" in profile.refusal_words:
        return f"cp_comm_type {algorithm}: {profile.refusal_words['cp_comm_type']}"
    at = f" {release}" if release else ""
    runs = ", ".join(profile.cp_algorithms_at(release))
    reason = f"cp_comm_type {algorithm}: {profile.name}{at} runs {runs} only"
    others = [
        name
        for name, other in profile.versions.items()
        if algorithm in profile.cp_algorithms_at(other)
    ]
    if others:
        reason += f"; {algorithm} runs with version " + " or ".join(others)
    return reason


def _uneven_refusals(profile: FrameworkProfile, query: LayoutQuery) -> list[str]:
    layout = query.layout
    accounted = [
        flag
        for flag in (
            "account_for_embedding_in_pipeline_split",
            "account_for_loss_in_pipeline_split",
        )
        if getattr(layout, flag)
    ]
    if accounted and profile.name != "megatron":  # Megatron-LM's flags; no other has them
        return [f"{' and '.join(accounted)}: Megatron-LM's split; {profile.name} has no such flag"]
    if layout.first_stage_layers is None and layout.last_stage_layers is None:
        return []
    if profile.uneven_stages == "none":
        said = profile.refusal_words.get("uneven", f"{profile.name} splits the layers evenly")
        return [f"first/last stage layers: {said}"]
    if profile.uneven_stages == "ends-at-most-middle":
        counts = stage_layer_counts_or_even(query.model, layout)
        if layout.interleaved or len(counts) < 3 or max(counts[0], counts[-1]) > counts[1]:
            return [
                f"stage layers {counts}: {profile.name} gives the first and last stages at "
                "most as many layers as the others, and only without vpp"
            ]
    return []


def megatron_rules(profile: FrameworkProfile, query: LayoutQuery) -> list[str]:
    """Megatron-LM ``core_v0.16.1`` (``megatron/training/arguments.py``) beyond the profile."""
    layout, model, reasons = query.layout, query.model, []
    kv_per_rank = model.kv_heads // layout.tp
    if (
        layout.cp_comm_type == "a2a"
        and layout.cp > 1
        and model.mla is None
        and kv_per_rank % layout.cp != 0
    ):
        # Transformer Engine AttnFuncWithCPAndQKVOA2A asserts num_heads % cp_size == 0 for
        # Q, K and V (dot_product_attention/context_parallel.py); a2a+p2p's own form of it
        # is a layout rule (Rule.A2A_HEADS_DIVISIBLE_BY_CP)
        reasons.append(
            "cp_comm_type a2a: Transformer Engine's all-to-all splits the KV heads too: KV "
            f"heads per TP rank ({kv_per_rank}) must be divisible by cp ({layout.cp}); "
            "a2a+p2p with a smaller a2a group may fit"
        )
    if layout.pipeline_schedule == "gpipe":
        reasons.append(
            "pipeline_schedule gpipe: Megatron-LM runs only the 1F1B schedule (interleaved "
            "when vpp > 1); re-estimate with --pipeline-schedule 1f1b"
        )
    if layout.offload_optimizer_fraction > 0 and not layout.shards_optimizer:
        reasons.append(
            "offload_optimizer_fraction: --optimizer-cpu-offload needs "
            "--use-precision-aware-optimizer, which needs --use-distributed-optimizer"
        )
    return reasons


def deepspeed_rules(profile: FrameworkProfile, query: LayoutQuery) -> list[str]:
    """DeepSpeed 0.19.6 (``deepspeed/runtime/``) beyond the profile."""
    layout, reasons = query.layout, []
    if query.precision == "fp8":
        reasons.append(
            "precision fp8: DeepSpeed config has no fp8 training switch — use Transformer "
            "Engine/Megatron"
        )
    if layout.distributed_optimizer:
        reasons.append(
            "distributed_optimizer is Megatron-only: use zero_stage 1 for the same "
            "optimizer-state sharding in DeepSpeed"
        )
    if layout.pp > 1:
        reasons.extend(_deepspeed_pipeline(layout))
    if layout.cp > 1:
        reasons.extend(_ulysses(profile, query))
    if layout.offload_optimizer_fraction > 0 and layout.zero_stage == 0:
        reasons.append(
            "offload_optimizer needs ZeRO stage 1, 2 or 3 (DeepSpeed offloads the optimizer states "
            "ZeRO partitions); zero_stage is 0"
        )
    if 0 < layout.offload_optimizer_fraction < 1 and layout.zero_stage != 3:
        reasons.append(
            f"offload_optimizer_fraction {layout.offload_optimizer_fraction:g}: partial "
            f"offload (ratio < 1) is only supported with ZeRO stage 3, not "
            f"{layout.zero_stage} (deepspeed/runtime/zero/config.py offload_ratio_check)"
        )
    return reasons


def _deepspeed_pipeline(layout: ParallelConfig) -> list[str]:
    """``PipelineEngine`` (``runtime/pipe/engine.py``) and ``PipeModelDataParallelTopology``."""
    reasons = []
    if layout.zero_stage >= 2:
        reasons.append(
            f"pp = {layout.pp} with zero_stage {layout.zero_stage}: DeepSpeed's pipeline "
            "engine asserts ZeRO stage < 2 (ZeRO-2 and ZeRO-3 are incompatible with pipeline "
            "parallelism); use zero_stage 0 or 1, or pp = 1"
        )
    if layout.recompute == "full" and layout.recompute_method == "block":
        reasons.append(
            "recompute_method block with pp > 1: DeepSpeed's pipeline checkpoints every "
            "activation_checkpoint_interval layers, never only the first N of a stage"
        )
    if layout.cp > 1:
        reasons.append(
            f"cp = {layout.cp} with pp = {layout.pp}: DeepSpeed's pipeline topology has "
            "pipe and data axes only; Ulysses sequence parallelism cannot join it"
        )
    return reasons


def _ulysses(profile: FrameworkProfile, query: LayoutQuery) -> list[str]:
    """Ulysses (``sequence_parallel/ulysses_sp.py``): heads and KV heads split over cp ranks."""
    layout, model = query.layout, query.model
    cp, heads, kv = layout.cp, model.num_attention_heads, model.kv_heads
    if layout.cp_comm_type not in profile.cp_algorithms:
        return []  # the generic refusal, in the profile's words
    reasons = []
    if heads % cp != 0:
        reasons.append(f"Ulysses: attention heads ({heads}) must be divisible by cp ({cp})")
    if kv % cp != 0 and cp % kv != 0:
        reasons.append(f"Ulysses: KV heads ({kv}) and cp ({cp}) must divide one another")
    if query.seq_len % cp != 0:
        reasons.append(f"Ulysses: seq_len ({query.seq_len}) must be divisible by cp ({cp})")
    return reasons


TORCHTITAN_TOML_RELEASE = "0.2.2"
TORCHTITAN_CURRENT_RELEASE = "0.3.0"


def torchtitan_rules(profile: FrameworkProfile, query: LayoutQuery) -> list[str]:
    """torchtitan 0.3.0 and 0.2.2 (``torchtitan/distributed/``, ``trainer.py``, ``train.py``)
    beyond the profile: every release's, then the named release's."""
    layout, reasons = query.layout, []
    if query.precision == "fp16":
        reasons.append("precision fp16: torchtitan trains in bf16 or fp32 (mixed_precision_param)")
    if layout.cp > 1 and layout.zero_stage == 0:
        reasons.append(
            "zero 0 with cp > 1: torchtitan always shards parameters over the CP ranks "
            "(FSDP over dp_shard x cp): use FSDP (zero 3)"
        )
    if query.model.moe is not None and layout.ep == 1 and layout.expert_tp != layout.tp:
        reasons.append(
            f"etp {layout.expert_tp} with ep 1: without expert parallelism torchtitan shards "
            f"the experts over the TP ranks (etp = tp = {layout.tp})"
        )
    reasons.extend(_torchtitan_recompute(query))
    reasons.extend(_torchtitan_split(query))
    if query.release is not None:
        reasons.extend(_torchtitan_release(profile, query))
    return reasons


def _torchtitan_recompute(query: LayoutQuery) -> list[str]:
    layout = query.layout
    if layout.recompute != "full" or layout.recompute_num_layers is None:
        return []
    per_chunk = max(stage_layer_counts_or_even(query.model, layout)) // (layout.vpp or 1)
    if layout.recompute_method == "uniform" and layout.recompute_num_layers > 1:
        return [
            f"recompute uniform with {layout.recompute_num_layers} layers per checkpoint: "
            "torchtitan checkpoints each transformer block on its own"
        ]
    if layout.recompute_method == "block" and layout.recompute_num_layers < per_chunk:
        return [
            f"recompute block with {layout.recompute_num_layers} of {per_chunk} layers per "
            "stage: torchtitan recomputes every block or none (no first-N-layers setting)"
        ]
    return []


def _torchtitan_split(query: LayoutQuery) -> list[str]:
    layout = query.layout
    if layout.first_stage_layers is None and layout.last_stage_layers is None:
        return []
    if layout.interleaved:
        return ["uneven first/last stage layers with vpp > 1: not emitted for torchtitan"]
    if torchtitan_less_layers(query.model, layout) is None:
        return [
            f"stage layers {stage_layer_counts_or_even(query.model, layout)}: torchtitan's "
            "split (pipeline_parallel_first/last_stage_less_layers) gives the first and last "
            "stages at most as many layers as the others; write module_fqns_per_model_part "
            "by hand"
        ]
    return []


def torchtitan_less_layers(model: ModelSpec, layout: ParallelConfig) -> tuple[int, int, int] | None:
    """(layers_per_stage, first_less, last_less) reproducing the layout's split, or None."""
    counts = stage_layer_counts_or_even(model, layout)
    per_stage = max(counts[1:-1]) if len(counts) > 2 else max(counts)
    if any(count != per_stage for count in counts[1:-1]) or max(counts) > per_stage:
        return None
    return per_stage, per_stage - counts[0], per_stage - counts[-1]


def torchtitan_seq_len_divisor(
    release: str, *, tp: int, cp: int, sequence_parallel: bool = True
) -> int:
    """What torchtitan requires seq_len to be divisible by: 0.2.2
    ``ParallelDims.seq_len_divisor`` tp x 2cp; 0.3.0 ``Trainer.__init__`` (tp if sequence
    parallel) x (2cp if cp > 1)."""
    if release == TORCHTITAN_TOML_RELEASE:
        return tp * 2 * cp
    return (tp if sequence_parallel else 1) * (2 * cp if cp > 1 else 1)


def _torchtitan_release(profile: FrameworkProfile, query: LayoutQuery) -> list[str]:
    layout, release = query.layout, query.release
    assert release is not None
    reasons = []
    if release == TORCHTITAN_TOML_RELEASE:
        if layout.tp > 1 and not layout.sequence_parallel:
            reasons.append(
                f"tp without sequence parallelism: torchtitan {release} always shards norms "
                "and activations over TP (no switch); use --torchtitan-version current"
            )
        others = (layout.tp, layout.cp, layout.pp, layout.ep)
        if layout.zero_stage == 0 and (layout.dp or 1) > 1 and max(others) > 1:
            reasons.append(
                f"DDP (zero 0) with another parallelism: torchtitan {release} applies DDP "
                "only on its own ('DDP has not supported > 1D parallelism'); use FSDP (zero 3) "
                "or --torchtitan-version current"
            )
    if layout.ep > 1 and layout.expert_tp > 1 and not profile.runs_expert_tp_under_ep(release):
        reasons.append(
            f"etp > 1 with ep > 1: torchtitan {release} does not shard experts over TP under "
            "expert parallelism (etp 1): set etp 1, or use --torchtitan-version 0.2"
        )
    divisor = torchtitan_seq_len_divisor(
        release, tp=layout.tp, cp=layout.cp, sequence_parallel=layout.sequence_parallel
    )
    if query.seq_len % divisor:
        reasons.append(
            f"seq_len {query.seq_len} must be divisible by {divisor} (torchtitan {release}: "
            "tp and 2 x cp)"
        )
    return reasons
