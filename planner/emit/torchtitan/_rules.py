"""torchtitan's own checks on the settings, restated; the gaps of each version are layout
refusals (``planner.frameworks.refusals``), which the search applies too."""

from __future__ import annotations

import math

from planner.emit.base import EmitError, EmitInput, profile_refusals
from planner.emit.torchtitan._fields import (
    CURRENT_VERSION,
    SINGLE_STAGE_SCHEDULES,
    TOML_VERSION,
    Settings,
    Version,
)
from planner.frameworks import get_profile
from planner.frameworks.refusals import torchtitan_seq_len_divisor

PROFILE = get_profile("torchtitan")
RELEASES: dict[Version, str] = {"current": CURRENT_VERSION, "0.2": TOML_VERSION}
"""The emitter's version names -> the releases of torchtitan's profile."""


def _int(section: dict[str, object], key: str, default: int = 1) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise EmitError(f"torchtitan setting {key}: expected an integer, got {value!r}")
    return value


def rule_violations(
    settings: Settings, *, version: Version, world_size: int, num_layers: int
) -> list[str]:
    """The checks torchtitan runs on these settings, restated (each names where it runs)."""
    par, train = settings["parallelism"], settings["training"]
    rep = _int(par, "data_parallel_replicate_degree")
    shard = _int(par, "data_parallel_shard_degree")
    tp, cp = _int(par, "tensor_parallel_degree"), _int(par, "context_parallel_degree")
    pp, ep = _int(par, "pipeline_parallel_degree"), _int(par, "expert_parallel_degree")
    etp = _int(par, "expert_tensor_parallel_degree")
    seq, local = _int(train, "seq_len"), _int(train, "local_batch_size")
    total = _int(train, "global_batch_size")
    problems = []
    if (
        rep * shard * cp * tp * pp != world_size
    ):  # ParallelDims._validate: the degrees fill the world
        problems.append(
            f"dp_replicate x dp_shard x cp x tp x pp = {rep} x {shard} x {cp} x {tp} x {pp} "
            f"!= world size {world_size}"
        )
    divisor = torchtitan_seq_len_divisor(
        RELEASES[version],
        tp=tp,
        cp=cp,
        sequence_parallel=bool(par.get("enable_sequence_parallel", True)),
    )
    if seq % divisor:
        problems.append(f"seq_len {seq} must be divisible by {divisor} (tp and 2 x cp)")
    if total % (local * rep * shard):  # Trainer.__init__: whole accumulation steps
        problems.append(
            f"global_batch_size {total} must be a multiple of local_batch_size x dp = "
            f"{local} x {rep * shard}"
        )
    if ep > 1:  # ParallelDims: EP borrows ranks from dp_shard x cp x tp
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
    """torchtitan's pipeline stage arithmetic (pipeline_parallel.py, _get_pipeline_metadata)."""
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


def check(plan: EmitInput, settings: Settings, *, version: Version) -> None:
    """``EmitError`` naming what this version cannot run: the layout's refusals for the
    release (``planner.frameworks.refusals``, which the search applies too), else
    torchtitan's own checks on the settings written (a check of the translation)."""
    label = CURRENT_VERSION if version == "current" else TOML_VERSION
    problems = profile_refusals(PROFILE, plan, release=RELEASES[version])
    option = settings.get("activation_checkpoint", {}).get("selective_ac_option")
    if version == "current" and option not in (None, "op"):
        problems.append(
            f"every {option}th block recomputed: torchtitan {CURRENT_VERSION}'s SelectiveAC is "
            "op-level only: use --torchtitan-version 0.2 (selective_ac_option) or full"
        )
    if not problems:
        problems = rule_violations(
            settings, version=version, world_size=plan.num_gpus, num_layers=plan.model.num_layers
        )
    if problems:
        raise EmitError(f"torchtitan {label} cannot express this plan: " + "; ".join(problems))
