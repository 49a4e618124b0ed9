"""torchtitan's own checks on the settings, restated, and the gaps of each version."""

from __future__ import annotations

import math

from planner.emit.base import (
    EmitError,
    EmitInput,
)
from planner.emit.torchtitan._fields import (
    CURRENT_VERSION,
    SINGLE_STAGE_SCHEDULES,
    TOML_VERSION,
    Settings,
    Version,
)


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
    option = settings.get("activation_checkpoint", {}).get("selective_ac_option")
    if option is not None and option != "op":
        problems.append(
            f"every {option}th block recomputed: torchtitan {CURRENT_VERSION}'s SelectiveAC is "
            "op-level only: use --torchtitan-version 0.2 (selective_ac_option) or full"
        )
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
    if version == "0.2":  # ParallelDims.seq_len_divisor = tp x 2cp
        divisor = tp * 2 * cp
    else:  # 0.3.0 Trainer.__init__: (tp if sequence parallel) x (2cp if cp > 1)
        sequence_parallel = par.get("enable_sequence_parallel", True)
        divisor = (tp if sequence_parallel else 1) * (2 * cp if cp > 1 else 1)
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
    problems = version_problems(settings, version=version) + rule_violations(
        settings, version=version, world_size=plan.num_gpus, num_layers=plan.model.num_layers
    )
    if problems:
        label = CURRENT_VERSION if version == "current" else TOML_VERSION
        raise EmitError(f"torchtitan {label} cannot express this plan: " + "; ".join(problems))
