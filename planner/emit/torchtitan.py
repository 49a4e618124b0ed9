"""torchtitan emitters: a plan to a Python recipe (torchtitan 0.3.0) or a TOML job file (0.2.x).

Two formats, one source. :func:`torchtitan_settings` turns a plan into section -> key ->
value in torchtitan's ``--section.key`` vocabulary (the JobConfig field names of v0.2.2,
which 0.3.0 keeps for nearly every field it still has). :func:`render_toml` writes them
as the v0.2.x job file; :func:`render_recipe` writes them as a 0.3.0 config function,
moving each key to its 0.3.0 home (:func:`current_home`). Versions read
(../shared/reference/frameworks.md section 3, pitfall 10): the PyPI wheels torchtitan
0.3.0 (``torchtitan/config/configs.py``, ``trainer.py``, ``models/*/config_registry.py``,
``distributed/{parallel_dims,pipeline_parallel,activation_checkpoint}.py``) and 0.2.2
(``torchtitan/config/job_config.py``, ``train.py``). ``main`` after 0.3.0 (commit
``73aed7f``, "fold batch dim") renamed the batch fields to token counts; it is not a target.

Plan -> torchtitan (both versions unless marked):

  model           ``model.name``/``flavor`` from ``TORCHTITAN_MODELS`` (catalogue name)
  zero 3 / 0      ``data_parallel_shard_degree`` = dp (FSDP) / ``data_parallel_replicate_degree``
                  = dp (DDP; 0.2.x only as the sole parallelism)
  tp, cp, pp, ep  ``tensor_/context_/pipeline_/expert_parallel_degree``
  etp (ep > 1)    0.2.x ``expert_tensor_parallel_degree`` (1 or tp); 0.3.0 has only etp 1
  cp_comm_type    0.2.x ``context_parallel_rotate_method``: p2p -> ``alltoall`` (ring),
                  all_gather -> ``allgather``; 0.3.0 always all-gathers K/V
  vpp             ``pipeline_parallel_schedule`` ``Interleaved1F1B`` (else ``1F1B``) with
                  ``pipeline_parallel_layers_per_stage`` = layers per virtual stage
  uneven stages   ``pipeline_parallel_first/last_stage_less_layers`` (0 for an even split)
  mbs, batch      pp = 1: ``local_batch_size`` = mbs and ``global_batch_size`` = the global
                  batch, so torchtitan accumulates global / (mbs x dp) micro-batches;
                  pp > 1: ``local_batch_size`` = global / dp split into
                  ``pipeline_parallel_microbatch_size`` = mbs pipeline micro-batches, no
                  accumulation (as Megatron runs them). Field docs: 0.3.0
                  ``TrainingConfig.local_batch_size`` "per data-parallel rank in one gradient
                  accumulation step. With pipeline parallelism, this is split into pipeline
                  microbatches"; ``Trainer.__init__`` sets gradient_accumulation_steps =
                  global_batch_size // (local_batch_size x dp_replicate x dp_shard).
  recompute       ``activation_checkpoint.mode`` none | selective (``selective_ac_option`` op;
                  0.3.0 ``SelectiveAC``) | full (0.3.0 ``FullAC``)
  tp_comm_overlap async TP (needs compile): 0.2.x ``parallelism.``, 0.3.0 ``compile.``
                  ``enable_async_tensor_parallel``
  precision       bf16/fp8 -> ``mixed_precision_param`` bfloat16, fp32 -> float32; fp8 adds
                  the float8 converters (rowwise, output layer skipped) and compile

Refused with ``EmitError`` naming each reason: models torchtitan does not define, Megatron's
distributed optimizer, ZeRO-1/2, fp16, optimizer offload, Ulysses CP, DDP with CP, expert
TP other than tp without EP, grouped recomputation, uneven stages with vpp or with more
layers at the ends, and the version-specific gaps above. The module is past 400 lines
because it holds both formats and the field tables and rules the tests check them against.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
import tomllib
from dataclasses import dataclass
from typing import Literal

from planner.emit.base import (
    EmitError,
    EmitInput,
    EmittedFiles,
    autopar_version,
    prediction_comment_lines,
    register,
)
from planner.specs.layout import stage_layer_counts_or_even
from planner.specs.model import ModelSpec

Settings = dict[str, dict[str, object]]
Version = Literal["current", "0.2"]

CURRENT_VERSION = "0.3.0"
TOML_VERSION = "0.2.2"
RECIPE_MODULE = "autopar_torchtitan"
RECIPE_FILE = f"{RECIPE_MODULE}.py"
TOML_FILE = "torchtitan.toml"
LAUNCH_FILE = "run_torchtitan.sh"
DEFAULT_STEPS = 1000
"""Run length written when the plan has no token budget; --training.steps N overrides it."""
DATASET = "c4"  # torchtitan's shipped recipes train on c4; JobConfig's default is c4_test
COMPILE_COMPONENTS = ["model", "loss"]  # torchtitan's default compile components


@dataclass(frozen=True)
class TorchtitanModel:
    """A catalogue model that torchtitan defines, and where its 0.3.0 recipe lives."""

    module: str  # torchtitan.models.<module>; also the 0.2.x ``model.name``
    flavor: str
    base_recipe: str  # 0.3.0 config_registry function whose dataset/optimizer we keep
    hf_repo: str  # assets downloaded to ./assets/hf/<repo name> by scripts/download_hf_assets.py
    num_layers: int
    hidden_size: int

    @property
    def hf_assets_path(self) -> str:
        return f"./assets/hf/{self.hf_repo.split('/')[-1]}"


# Flavors from torchtitan 0.3.0 models/*/__init__.py (the same names exist in 0.2.2);
# shapes checked against the catalogue and, where installed, torchtitan in the tests.
TORCHTITAN_MODELS: dict[str, TorchtitanModel] = {
    "llama-3.1-8b": TorchtitanModel(
        "llama3", "8B", "llama3_8b", "meta-llama/Llama-3.1-8B", 32, 4096
    ),
    "llama-3.1-70b": TorchtitanModel(
        "llama3", "70B", "llama3_70b", "meta-llama/Llama-3.1-70B", 80, 8192
    ),
    "llama-3.1-405b": TorchtitanModel(
        "llama3", "405B", "llama3_405b", "meta-llama/Llama-3.1-405B", 126, 16384
    ),
    # 0.3.0 ships no qwen3_8b / qwen3_235b_a22b recipe: the nearest dense / MoE one is the base
    "qwen3-8b": TorchtitanModel("qwen3", "8B", "qwen3_14b", "Qwen/Qwen3-8B", 36, 4096),
    "qwen3-32b": TorchtitanModel("qwen3", "32B", "qwen3_32b", "Qwen/Qwen3-32B", 64, 5120),
    "qwen3-30b-a3b": TorchtitanModel(
        "qwen3", "30B-A3B", "qwen3_30b_a3b", "Qwen/Qwen3-30B-A3B", 48, 2048
    ),
    "qwen3-235b-a22b": TorchtitanModel(
        "qwen3", "235B-A22B", "qwen3_30b_a3b", "Qwen/Qwen3-235B-A22B", 94, 4096
    ),
    "deepseek-v3": TorchtitanModel(
        "deepseek_v3", "671B", "deepseek_v3_671b", "deepseek-ai/DeepSeek-V3", 61, 7168
    ),
}

# Every key torchtitan_settings may write, by section: all are fields of v0.2.2's JobConfig
# (config/job_config.py) except those in V02_ABSENT, which only 0.3.0 has.
V02_FIELDS: dict[str, frozenset[str]] = {
    "model": frozenset({"name", "flavor", "hf_assets_path", "converters"}),
    "training": frozenset({
        "local_batch_size", "global_batch_size", "seq_len", "steps", "dataset",
        "mixed_precision_param",
    }),
    "parallelism": frozenset({
        "data_parallel_replicate_degree", "data_parallel_shard_degree",
        "tensor_parallel_degree", "enable_async_tensor_parallel",
        "context_parallel_degree", "context_parallel_rotate_method",
        "expert_parallel_degree", "expert_tensor_parallel_degree",
        "pipeline_parallel_degree", "pipeline_parallel_schedule",
        "pipeline_parallel_microbatch_size", "pipeline_parallel_layers_per_stage",
        "pipeline_parallel_first_stage_less_layers", "pipeline_parallel_last_stage_less_layers",
    }),
    "activation_checkpoint": frozenset({"mode", "selective_ac_option"}),
    "compile": frozenset({"enable", "components"}),
    "quantize.linear.float8": frozenset({"recipe_name", "filter_fqns"}),
    "quantize.grouped_mm.float8": frozenset({"fqns"}),
}  # fmt: skip
V02_ABSENT = frozenset({("parallelism", "enable_sequence_parallel")})

# The keys whose 0.3.0 home is not ``<section>.<key>`` on Trainer.Config: another attribute
# path, or a "(...)" note where it is no plain field and the recipe writes it by hand (or
# not at all). The tests resolve every path on torchtitan 0.3.x's Trainer.Config.
CURRENT_MOVED: dict[tuple[str, str], str] = {
    ("model", "name"): "model_spec.name",
    ("model", "flavor"): "model_spec.flavor",
    ("model", "hf_assets_path"): "hf_assets_path",
    ("model", "converters"): "(model_registry(flavor, converters=[...]))",
    ("training", "dataset"): "dataloader.dataset",  # kept from the base recipe
    ("parallelism", "enable_async_tensor_parallel"): "compile.enable_async_tensor_parallel",
    ("parallelism", "context_parallel_rotate_method"): "(none: CP all-gathers K/V)",
    ("parallelism", "expert_tensor_parallel_degree"): "(none: EP implies etp 1)",
    ("activation_checkpoint", "mode"): "(activation_checkpoint: None | SelectiveAC | FullAC)",
    ("activation_checkpoint", "selective_ac_option"): "(SelectiveAC is op-level only)",
    ("quantize.linear.float8", "recipe_name"): "(Float8LinearConverter.Config.recipe_name)",
    ("quantize.linear.float8", "filter_fqns"): "(Float8LinearConverter.Config.filter_fqns)",
    ("quantize.grouped_mm.float8", "fqns"): "(Float8GroupedExpertsConverter.Config)",
}


def current_home(section: str, key: str) -> str:
    """Where torchtitan 0.3.0 keeps the setting ``section.key`` (see ``CURRENT_MOVED``)."""
    return CURRENT_MOVED.get((section, key), f"{section}.{key}")


CURRENT_MODULE_NAMES = {"output": "lm_head"}  # 0.3.0 renamed the output projection
SINGLE_STAGE_SCHEDULES = frozenset({"1f1b", "gpipe"})  # torch.distributed.pipelining


# --- plan -> settings ---------------------------------------------------------------------


def _model_entry(model: ModelSpec) -> tuple[TorchtitanModel | None, str | None]:
    entry = TORCHTITAN_MODELS.get(model.name)
    if entry is None:
        supported = ", ".join(
            f"{name} ({e.module} {e.flavor})" for name, e in TORCHTITAN_MODELS.items()
        )
        return None, (
            f"torchtitan has no model definition for {model.family}/{model.name}; "
            f"supported: {supported}"
        )
    if (model.num_layers, model.hidden_size) != (entry.num_layers, entry.hidden_size):
        return None, (
            f"model {model.name} has {model.num_layers} layers of width {model.hidden_size} but "
            f"torchtitan's {entry.module} {entry.flavor} has {entry.num_layers} of width "
            f"{entry.hidden_size}"
        )
    return entry, None


def _refusals(plan: EmitInput) -> list[str]:
    """Every reason the plan cannot be written for any torchtitan version (empty: it can)."""
    layout, problems = plan.layout, []
    problems.extend(problem for problem in [_model_entry(plan.model)[1]] if problem)
    if layout.distributed_optimizer:
        problems.append(
            "distributed_optimizer is Megatron's; torchtitan shards optimizer states with "
            "FSDP: use FSDP (zero 3)"
        )
    elif layout.zero_stage in (1, 2):
        problems.append(
            f"ZeRO-{layout.zero_stage} has no torchtitan setting (it shards everything with "
            "FSDP or nothing): use FSDP (zero 3), or zero 0 for DDP"
        )
    if plan.precision == "fp16":
        problems.append("precision fp16: torchtitan trains in bf16 or fp32 (mixed_precision_param)")
    if layout.offload_optimizer_fraction > 0:
        problems.append(
            "optimizer offload: torchtitan offloads parameters, gradients and optimizer states "
            "together (training.enable_cpu_offload), never the optimizer alone or a fraction"
        )
    if layout.cp > 1 and layout.cp_comm_type not in ("p2p", "all_gather"):
        problems.append(
            f"cp_comm_type {layout.cp_comm_type}: torchtitan's context parallelism exchanges "
            "K/V (ring or all-gather); it has no Ulysses all-to-all: use p2p or all_gather"
        )
    if layout.cp > 1 and layout.zero_stage == 0:
        problems.append(
            "zero 0 with cp > 1: torchtitan always shards parameters over the CP ranks "
            "(FSDP over dp_shard x cp): use FSDP (zero 3)"
        )
    if plan.model.moe is not None and layout.ep == 1 and layout.expert_tp != layout.tp:
        problems.append(
            f"etp {layout.expert_tp} with ep 1: without expert parallelism torchtitan shards "
            f"the experts over the TP ranks (etp = tp = {layout.tp})"
        )
    if layout.recompute == "full" and layout.recompute_num_layers is not None:
        per_chunk = max(stage_layer_counts_or_even(plan.model, layout)) // (layout.vpp or 1)
        if layout.recompute_method == "uniform" and layout.recompute_num_layers > 1:
            problems.append(
                f"recompute uniform with {layout.recompute_num_layers} layers per checkpoint: "
                "torchtitan checkpoints each transformer block on its own"
            )
        if layout.recompute_method == "block" and layout.recompute_num_layers < per_chunk:
            problems.append(
                f"recompute block with {layout.recompute_num_layers} of {per_chunk} layers per "
                "stage: torchtitan recomputes every block or none (no first-N-layers setting)"
            )
    problems.extend(_stage_split_problems(plan))
    return problems


def _stage_split_problems(plan: EmitInput) -> list[str]:
    layout = plan.layout
    if layout.first_stage_layers is None and layout.last_stage_layers is None:
        return []
    if layout.interleaved:
        return ["uneven first/last stage layers with vpp > 1: not emitted for torchtitan"]
    less = _less_layers(plan)
    if less is None:
        return [
            f"stage layers {stage_layer_counts_or_even(plan.model, layout)}: torchtitan's split "
            "(pipeline_parallel_first/last_stage_less_layers) gives the first and last stages "
            "at most as many layers as the others; write module_fqns_per_model_part by hand"
        ]
    return []


def _less_layers(plan: EmitInput) -> tuple[int, int, int] | None:
    """(layers_per_stage, first_less, last_less) reproducing the plan's split, or None."""
    counts = stage_layer_counts_or_even(plan.model, plan.layout)
    per_stage = max(counts[1:-1]) if len(counts) > 2 else max(counts)
    if any(count != per_stage for count in counts[1:-1]) or max(counts) > per_stage:
        return None
    return per_stage, per_stage - counts[0], per_stage - counts[-1]


def torchtitan_settings(plan: EmitInput) -> Settings:
    """Section -> key -> value for the plan, in torchtitan's ``--section.key`` names.

    Raises ``EmitError`` naming every reason the plan cannot be written for torchtitan.
    """
    problems = _refusals(plan)
    if problems:
        raise EmitError("torchtitan cannot express this plan: " + "; ".join(problems))
    entry, _ = _model_entry(plan.model)
    assert entry is not None
    layout, dp, fp8 = plan.layout, plan.dp, plan.precision == "fp8"
    moe = plan.model.moe is not None
    model: dict[str, object] = {
        "name": entry.module,
        "flavor": entry.flavor,
        "hf_assets_path": entry.hf_assets_path,
    }
    training: dict[str, object] = {
        "local_batch_size": plan.global_batch // dp if layout.pp > 1 else layout.mbs,
        "global_batch_size": plan.global_batch,
        "seq_len": plan.seq_len,
        "steps": DEFAULT_STEPS,
        "dataset": DATASET,
        "mixed_precision_param": "float32" if plan.precision == "fp32" else "bfloat16",
    }
    settings: Settings = {
        "model": model,
        "training": training,
        "parallelism": _parallelism(plan),
        "activation_checkpoint": {"mode": layout.recompute}
        | ({"selective_ac_option": "op"} if layout.recompute == "selective" else {}),
        "compile": {"enable": fp8 or layout.tp_comm_overlap}
        | ({"components": list(COMPILE_COMPONENTS)} if fp8 or layout.tp_comm_overlap else {}),
    }
    if fp8:
        model["converters"] = ["quantize.linear.float8"] + (
            ["quantize.grouped_mm.float8"] if moe else []
        )
        settings["quantize.linear.float8"] = {
            "recipe_name": "rowwise",
            "filter_fqns": ["output", "router.gate"] if moe else ["output"],
        }
        if moe:
            settings["quantize.grouped_mm.float8"] = {"fqns": ["experts"]}
    return settings


def _parallelism(plan: EmitInput) -> dict[str, object]:
    layout, dp = plan.layout, plan.dp
    fsdp = layout.zero_stage == 3
    section: dict[str, object] = {
        "data_parallel_replicate_degree": 1 if fsdp else dp,
        "data_parallel_shard_degree": dp if fsdp else 1,
        "tensor_parallel_degree": layout.tp,
        "context_parallel_degree": layout.cp,
        "pipeline_parallel_degree": layout.pp,
        "expert_parallel_degree": layout.ep,
    }
    if layout.tp > 1 and not layout.sequence_parallel:
        section["enable_sequence_parallel"] = False
    if layout.tp_comm_overlap:
        section["enable_async_tensor_parallel"] = True
    if layout.cp > 1:
        section["context_parallel_rotate_method"] = (
            "alltoall" if layout.cp_comm_type == "p2p" else "allgather"
        )
    if layout.ep > 1:
        section["expert_tensor_parallel_degree"] = layout.expert_tp
    if layout.pp > 1:
        less = _less_layers(plan)
        assert less is not None
        per_stage, first_less, last_less = less
        section |= {
            "pipeline_parallel_schedule": "Interleaved1F1B" if layout.interleaved else "1F1B",
            "pipeline_parallel_microbatch_size": layout.mbs,
            "pipeline_parallel_layers_per_stage": per_stage // (layout.vpp or 1),
            "pipeline_parallel_first_stage_less_layers": first_less,
            "pipeline_parallel_last_stage_less_layers": last_less,
        }
    return section


# --- torchtitan's own rules, restated -------------------------------------------------------


def _int(section: dict[str, object], key: str, default: int = 1) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise EmitError(f"torchtitan setting {key}: expected an integer, got {value!r}")
    return value


def version_problems(settings: Settings, *, version: Version) -> list[str]:
    """Settings that one torchtitan version has no field or value for."""
    par = settings.get("parallelism", {})
    problems = []
    if version == "0.2":
        if "enable_sequence_parallel" in par:
            problems.append(
                f"tp without sequence parallelism: torchtitan {TOML_VERSION} always shards "
                "norms and activations over TP (no switch); use --torchtitan-version current"
            )
        others = ("tensor", "context", "pipeline", "expert")
        if _int(par, "data_parallel_replicate_degree") > 1 and any(
            _int(par, f"{axis}_parallel_degree") > 1 for axis in others
        ):
            problems.append(
                f"DDP (zero 0) with another parallelism: torchtitan {TOML_VERSION} applies DDP "
                "only on its own ('DDP has not supported > 1D parallelism'); use FSDP (zero 3) "
                "or --torchtitan-version current"
            )
        return problems
    if par.get("context_parallel_rotate_method") == "alltoall":
        problems.append(
            f"cp_comm_type p2p: torchtitan {CURRENT_VERSION} context parallelism all-gathers "
            "K/V (no ring): use all_gather, or --torchtitan-version 0.2 for the ring"
        )
    if _int(par, "expert_tensor_parallel_degree") > 1:
        problems.append(
            f"etp > 1 with ep > 1: torchtitan {CURRENT_VERSION} does not shard experts over TP "
            "under expert parallelism (etp 1): set etp 1, or use --torchtitan-version 0.2"
        )
    return problems


def rule_violations(
    settings: Settings, *, version: Version, world_size: int, num_layers: int
) -> list[str]:
    """The checks torchtitan runs on these settings (frameworks.md 3.5), restated."""
    par, train = settings["parallelism"], settings["training"]
    rep = _int(par, "data_parallel_replicate_degree")
    shard = _int(par, "data_parallel_shard_degree")
    tp, cp = _int(par, "tensor_parallel_degree"), _int(par, "context_parallel_degree")
    pp, ep = _int(par, "pipeline_parallel_degree"), _int(par, "expert_parallel_degree")
    etp = _int(par, "expert_tensor_parallel_degree")
    seq, local = _int(train, "seq_len"), _int(train, "local_batch_size")
    total = _int(train, "global_batch_size")
    problems = []
    if rep * shard * cp * tp * pp != world_size:  # rule 1: ParallelDims._validate
        problems.append(
            f"dp_replicate x dp_shard x cp x tp x pp = {rep} x {shard} x {cp} x {tp} x {pp} "
            f"!= world size {world_size}"
        )
    if version == "0.2":  # rule 5: ParallelDims.seq_len_divisor = tp x 2cp
        divisor = tp * 2 * cp
    else:  # 0.3.0 Trainer.__init__: (tp if sequence parallel) x (2cp if cp > 1)
        sequence_parallel = par.get("enable_sequence_parallel", True)
        divisor = (tp if sequence_parallel else 1) * (2 * cp if cp > 1 else 1)
    if seq % divisor:
        problems.append(f"seq_len {seq} must be divisible by {divisor} (tp and 2 x cp)")
    if total % (local * rep * shard):  # rule 6: Trainer.__init__
        problems.append(
            f"global_batch_size {total} must be a multiple of local_batch_size x dp = "
            f"{local} x {rep * shard}"
        )
    if ep > 1:  # rule 3: EP borrows ranks from dp_shard x cp x tp
        if etp not in (1, tp):
            problems.append(f"expert_tensor_parallel_degree {etp} must be 1 or tp ({tp})")
        if (shard * cp * tp) % (ep * etp):
            problems.append(
                f"ep x etp = {ep} x {etp} must divide dp_shard x cp x tp = {shard * cp * tp}"
            )
    if pp > 1:
        problems.extend(_pipeline_rule_violations(par, pp=pp, local=local, num_layers=num_layers))
    return problems


def _pipeline_rule_violations(
    par: dict[str, object], *, pp: int, local: int, num_layers: int
) -> list[str]:
    """Rule 7: the stage arithmetic of pipeline_parallel.py (_get_pipeline_metadata)."""
    micro = _int(par, "pipeline_parallel_microbatch_size")
    first = _int(par, "pipeline_parallel_first_stage_less_layers")
    last = _int(par, "pipeline_parallel_last_stage_less_layers")
    schedule = str(par.get("pipeline_parallel_schedule", "1F1B"))
    problems = []
    if local % micro:
        problems.append(
            f"local_batch_size {local} must be divisible by pipeline_parallel_microbatch_size "
            f"{micro}"
        )
    if "pipeline_parallel_layers_per_stage" not in par:
        return problems
    stages = math.ceil(
        (num_layers + first + last) / _int(par, "pipeline_parallel_layers_per_stage")
    )
    if stages % pp:
        problems.append(f"{stages} pipeline stages must be divisible by pp ({pp})")
    elif schedule.lower() in SINGLE_STAGE_SCHEDULES and stages != pp:
        problems.append(f"schedule {schedule} needs 1 stage per rank, not {stages // pp}")
    elif schedule.lower() not in SINGLE_STAGE_SCHEDULES and stages < 2 * pp:
        problems.append(f"schedule {schedule} needs >= 2 stages per rank, not {stages // pp}")
    return problems


def _check(plan: EmitInput, settings: Settings, *, version: Version) -> None:
    problems = version_problems(settings, version=version) + rule_violations(
        settings, version=version, world_size=plan.num_gpus, num_layers=plan.model.num_layers
    )
    if problems:
        label = CURRENT_VERSION if version == "current" else TOML_VERSION
        raise EmitError(f"torchtitan {label} cannot express this plan: " + "; ".join(problems))


# --- TOML (v0.2.x) -------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def render_toml(settings: Settings) -> str:
    """The settings as a TOML job file: sections and keys sorted, one blank line between."""
    blocks = []
    for section in sorted(settings):
        if not _BARE_KEY.match(section):
            raise ValueError(f"section name {section!r} is not a bare TOML key path")
        lines = [f"[{section}]"]
        for key in sorted(settings[section]):
            if not _BARE_KEY.match(key) or "." in key:
                raise ValueError(f"key {key!r} is not a bare TOML key")
            lines.append(f"{key} = {_toml_value(settings[section][key])}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def parse_toml(text: str) -> Settings:
    """Read a job file back into section -> key -> value (nested tables as dotted sections)."""
    settings: Settings = {}

    def flatten(table: dict[str, object], prefix: str) -> None:
        values = {key: value for key, value in table.items() if not isinstance(value, dict)}
        if values:
            if not prefix:
                raise EmitError(f"torchtitan TOML: keys outside any [section]: {sorted(values)}")
            settings[prefix] = values
        for key, value in table.items():
            if isinstance(value, dict):
                flatten(value, f"{prefix}.{key}" if prefix else key)

    flatten(tomllib.loads(text), "")
    return settings


# --- Python recipe (0.3.0) -------------------------------------------------------------------

LINE_LENGTH = 100  # the emitted module is formatted as ruff/black would (tests check it)


def recipe_function_name(plan: EmitInput) -> str:
    """``autopar_<model>``: the ``--config`` name of the emitted recipe."""
    return "autopar_" + re.sub(r"[^0-9a-zA-Z]+", "_", plan.model.name).strip("_").lower()


def _py(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_py(item) for item in value) + "]"
    return repr(value)


def _kwargs(values: dict[str, object], indent: str) -> list[str]:
    return [f"{indent}{key}={_py(values[key])}," for key in sorted(values)]


def _import_lines(module: str, names: list[str]) -> list[str]:
    line = f"from {module} import {', '.join(sorted(names))}"
    if len(line) <= LINE_LENGTH:
        return [line]
    return [f"from {module} import (", *(f"    {name}," for name in sorted(names)), ")"]


def _homes(settings: Settings, prefix: str) -> dict[str, object]:
    """Settings whose 0.3.0 home is ``<prefix>.<field>``, by field name."""
    found = {}
    for section, values in settings.items():
        for key, value in values.items():
            known = key in V02_FIELDS.get(section, ()) or (section, key) in V02_ABSENT
            if not known:
                raise ValueError(f"{section}.{key} is not in the torchtitan field table")
            home = current_home(section, key)
            if home.startswith(prefix + "."):
                found[home.removeprefix(prefix + ".")] = value
    return found


def render_recipe(settings: Settings, plan: EmitInput) -> str:
    """A Python module whose function returns torchtitan 0.3.0's ``Trainer.Config``.

    The function starts from torchtitan's own recipe for the model (dataset, optimizer,
    schedule, checkpointing) and replaces the model, batch, parallelism, recomputation and
    compile settings with the plan's; ``dataclasses.replace`` re-runs the config classes'
    ``__post_init__`` checks.
    """
    model = settings["model"]
    entry = next(
        e
        for e in TORCHTITAN_MODELS.values()
        if (e.module, e.flavor) == (model["name"], model["flavor"])
    )
    ac_class = {"none": None, "selective": "SelectiveAC", "full": "FullAC"}[
        str(settings["activation_checkpoint"]["mode"])
    ]
    training, parallelism = _homes(settings, "training"), _homes(settings, "parallelism")
    if parallelism["pipeline_parallel_degree"] != 1 or parallelism["expert_parallel_degree"] != 1:
        # Trainer.Config._validate_cuda_graphs refuses CUDA graphs with PP, and with EP's
        # default token dispatcher (it synchronizes with the host)
        training["disable_cuda_graphs"] = True
    imports = {
        "torchtitan.components.loss": ["ChunkedLossWrapper", "CrossEntropyLoss"],
        "torchtitan.config": ["CompileConfig", "ParallelismConfig"],
        "torchtitan.models.common.config_utils": ["decoder_vocab_size"],
        f"torchtitan.models.{entry.module}": ["model_registry"],
        f"torchtitan.models.{entry.module}.config_registry": [entry.base_recipe],
        "torchtitan.trainer": ["Trainer"],
    }
    if ac_class:
        imports["torchtitan.distributed.activation_checkpoint"] = [ac_class]
    registry_args = _py(entry.flavor)
    if "converters" in model:
        imports["torchtitan.components.quantization"] = ["Float8LinearConverter"] + (
            ["Float8GroupedExpertsConverter"] if "quantize.grouped_mm.float8" in settings else []
        )
        registry_args += ", converters=converters"
    function = recipe_function_name(plan)
    about = (
        f"{plan.model.name} on {plan.num_gpus} GPUs: {_summary(plan)}. Launch with "
        f"{LAUNCH_FILE}, which runs torchtitan.train --module {RECIPE_MODULE} --config "
        f"{function}."
    )
    lines = [
        f'"""torchtitan {CURRENT_VERSION} recipe written by autopar {autopar_version()}.',
        "",
        *textwrap.wrap(about, width=LINE_LENGTH - 8),
        '"""',
        "",
        "import dataclasses",
        "",
        *(line for name in sorted(imports) for line in _import_lines(name, imports[name])),
        "",
        "",
        f"def {function}() -> Trainer.Config:",
        "    # torchtitan's recipe for this model supplies dataset, optimizer and schedule",
        f"    base = {entry.base_recipe}()",
        *(_float8_lines(settings) if "converters" in model else []),
        f"    model_spec = model_registry({registry_args})",
        "    return dataclasses.replace(",
        "        base,",
        "        model_spec=model_spec,",
        f"        hf_assets_path={_py(model['hf_assets_path'])},",
        "        loss=ChunkedLossWrapper.Config(",
        "            loss_fn=CrossEntropyLoss.Config(",
        "                global_vocab_size=decoder_vocab_size(model_spec),",
        "            ),",
        "        ),",
        "        training=dataclasses.replace(",
        "            base.training,",
        *_kwargs(training, " " * 12),
        "        ),",
        "        parallelism=ParallelismConfig(",
        *_kwargs(parallelism, " " * 12),
        "        ),",
        f"        activation_checkpoint={f'{ac_class}.Config()' if ac_class else 'None'},",
        "        compile=CompileConfig(",
        *_kwargs(_homes(settings, "compile"), " " * 12),
        "        ),",
        "    )",
    ]
    return "\n".join(lines) + "\n"


def _float8_lines(settings: Settings) -> list[str]:
    linear = settings["quantize.linear.float8"]
    skipped = linear["filter_fqns"]
    assert isinstance(skipped, list)
    lines = [
        "    converters = [",
        "        Float8LinearConverter.Config(",
        f"            recipe_name={_py(linear['recipe_name'])},",
        f"            filter_fqns={_py([CURRENT_MODULE_NAMES.get(n, n) for n in skipped])},",
        "            model_compile_enabled=True,",
        "        ),",
    ]
    if "quantize.grouped_mm.float8" in settings:
        lines.append("        Float8GroupedExpertsConverter.Config(model_compile_enabled=True),")
    return [*lines, "    ]"]


# --- launch script and emitters -------------------------------------------------------------


def _summary(plan: EmitInput) -> str:
    layout = plan.layout
    degrees = (
        f"dp {plan.dp} ({'FSDP' if layout.zero_stage == 3 else 'DDP'}) x tp {layout.tp} "
        f"x cp {layout.cp} x pp {layout.pp}"
    )
    if layout.interleaved:
        degrees += f" (vpp {layout.vpp})"
    if layout.ep > 1:
        degrees += f", ep {layout.ep}"
    if layout.pp > 1:
        batching = f"{plan.global_batch // (plan.dp * layout.mbs)} pipeline micro-batches"
    else:
        batching = f"gradient accumulation {plan.grad_accumulation}"
    return (
        f"{degrees}; micro-batch {layout.mbs}, {batching}; recompute {layout.recompute}; "
        f"{plan.precision}"
    )


def _launcher(plan: EmitInput, *, version: Version) -> str:
    nodes, gpus = plan.nodes, plan.nproc_per_node
    assets = TORCHTITAN_MODELS[plan.model.name].hf_assets_path
    if version == "current":
        target = f"torchtitan {CURRENT_VERSION}: recipe {RECIPE_FILE}"
        train_args = f"--module {RECIPE_MODULE} --config {recipe_function_name(plan)}"
        path_line = 'export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"'
        dry_run = f"PYTHONPATH=<this folder> python -m torchtitan.train {train_args}"
    else:
        target = f"torchtitan {TOML_VERSION} (TOML job files, v0.1.0-v0.2.2): {TOML_FILE}"
        train_args = f'--job.config_file "$HERE/{TOML_FILE}"'
        path_line = ""
        dry_run = f"python -m torchtitan.train --job.config_file <this folder>/{TOML_FILE}"
    predictions = prediction_comment_lines(plan)
    lines = [
        "#!/usr/bin/env bash",
        f"# torchtitan launch for {plan.model.name} on {plan.num_gpus} GPUs "
        f"({nodes} node{'s' if nodes > 1 else ''} x {gpus}), written by autopar "
        f"{autopar_version()}.",
        f"# Targets {target}.",
        f"# Layout: {_summary(plan)}.",
        "# Predicted by autopar (estimates, not measurements):",
        *predictions,
        *(
            [
                f"# (predicted for {plan.framework}; `autopar estimate --framework torchtitan` "
                "gives torchtitan's numbers)"
            ]
            if plan.framework != "torchtitan"
            else []
        ),
        "#",
        "# Environment:",
        "#   TORCHTITAN_PATH  torchtitan checkout to run in (default: the current directory);",
        f"#                    the tokenizer is read from {assets} there",
        f"#   NNODES           number of nodes (default {nodes}); NNODES x {gpus} must be "
        f"{plan.num_gpus}",
        "#   NODE_RANK        this node's rank, 0 .. NNODES-1 (default 0)",
        "#   MASTER_ADDR      address of node 0"
        + (" (required)" if nodes > 1 else " (default 127.0.0.1)"),
        "#   MASTER_PORT      rendezvous port on node 0 (default 29500)",
        "#   LOG_RANK         local ranks whose output is shown (default 0)",
        "# Arguments are passed to torchtitan.train, e.g. --training.steps 5000 (written here:",
        f"# {DEFAULT_STEPS} steps on the {DATASET} dataset, as torchtitan's recipes; set yours).",
        "# A config check without training:",
        f"#   NGPU={plan.num_gpus} LOCAL_RANK=0 {dry_run} \\",
        "#     --comm.mode fake_backend --training.steps 1  (in TORCHTITAN_PATH, on one GPU)",
        "set -euo pipefail",
        'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        'TORCHTITAN_PATH="${TORCHTITAN_PATH:-$PWD}"',
        f'NNODES="${{NNODES:-{nodes}}}"',
        'NODE_RANK="${NODE_RANK:-0}"',
        'MASTER_ADDR="${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"'
        if nodes > 1
        else 'MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"',
        'MASTER_PORT="${MASTER_PORT:-29500}"',
        'LOG_RANK="${LOG_RANK:-0}"',
        f'if [ "$((NNODES * {gpus}))" -ne {plan.num_gpus} ]; then',
        f'  echo "this plan is for {plan.num_gpus} GPUs: NNODES x {gpus} must equal it" >&2',
        "  exit 1",
        "fi",
        'cd "$TORCHTITAN_PATH"',
        *([path_line] if path_line else []),
        "",
        'PYTORCH_ALLOC_CONF="expandable_segments:True" exec torchrun \\',
        f'  --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node {gpus} \\',
        '  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \\',
        '  --local-ranks-filter "$LOG_RANK" --role rank --tee 3 \\',
        f'  -m torchtitan.train {train_args} "$@"',
    ]
    return "\n".join(lines) + "\n"


def _toml_header(plan: EmitInput) -> str:
    return (
        f"# torchtitan {TOML_VERSION} job file for {plan.model.name} on {plan.num_gpus} GPUs, "
        f"written by autopar {autopar_version()}.\n"
        f"# Layout: {_summary(plan)}.\n"
        "# Optimizer and learning-rate schedule are torchtitan's defaults: copy them from the\n"
        "# model's train_configs/*.toml. Launch with run_torchtitan.sh.\n\n"
    )


class TorchtitanEmitter:
    """``autopar_torchtitan.py`` (a torchtitan 0.3.0 recipe) and ``run_torchtitan.sh``."""

    name = "torchtitan"

    def emit(self, plan: EmitInput) -> EmittedFiles:
        settings = torchtitan_settings(plan)
        _check(plan, settings, version="current")
        return EmittedFiles(
            files=(
                (RECIPE_FILE, render_recipe(settings, plan)),
                (LAUNCH_FILE, _launcher(plan, version="current")),
            )
        )


class TorchtitanTomlEmitter:
    """``torchtitan.toml`` (a v0.2.x job file) and ``run_torchtitan.sh``."""

    name = "torchtitan-toml"

    def emit(self, plan: EmitInput) -> EmittedFiles:
        settings = torchtitan_settings(plan)
        _check(plan, settings, version="0.2")
        return EmittedFiles(
            files=(
                (TOML_FILE, _toml_header(plan) + render_toml(settings)),
                (LAUNCH_FILE, _launcher(plan, version="0.2")),
            )
        )


register(TorchtitanEmitter())
register(TorchtitanTomlEmitter())
