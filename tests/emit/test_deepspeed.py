"""DeepSpeed emitter: what only DeepSpeed has, and DeepSpeed's own checks of the config.

The contract every emitter keeps (golden files, determinism, round trip, refusals) is in
``test_contract.py``; the plans are ``deepspeed_cases.DEEPSPEED_CASES``. Here: the launch
command and README, the reader's batch-key arithmetic, and DeepSpeed's rules checked
twice: always against a table of DeepSpeed keys and rules kept here (DeepSpeed 0.19.6
source: ``deepspeed/runtime/config.py``, ``zero/config.py``, ``pipe/engine.py``), and,
where ``deepspeed`` is importable, by DeepSpeed's own ``DeepSpeedConfig`` (which also
checks that the table matches its models).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from deepspeed_cases import DEEPSPEED_BASE as BASE
from deepspeed_cases import DEEPSPEED_CASES
from emitter_cases import built, load_plan

from planner.emit.base import EmitError, EmitInput
from planner.emit.deepspeed import DeepSpeedEmitter, deepspeed_config, parse_deepspeed_config

DEEPSPEED_MISSING = (
    "deepspeed is not installed (CI has no torch/deepspeed); the key-table tests check its rules"
)


PLANS_TO_CHECK = built(DEEPSPEED_CASES)


# -- the launch script and README ----------------------------------------------------------


def test_emitted_files_and_launch_command() -> None:
    files = DeepSpeedEmitter().emit(load_plan(BASE)).as_dict()
    assert list(files) == ["ds_config.json", "launch_deepspeed.sh", "README.md"]
    launch = files["launch_deepspeed.sh"]
    assert launch.startswith("#!/usr/bin/env bash\n")
    for expected in (
        "autopar 0.0.0+test",
        "llama-3.1-8b",
        "step time    3.250 s",
        "throughput   80000 tokens/s",
        "MFU          0.500",
        "peak memory  60.0 GiB per GPU",
        "--num_nodes 1",
        "--num_gpus 8",
        '"$TRAIN_SCRIPT" "$@"',
        '--deepspeed_config "$HERE/ds_config.json"',
    ):
        assert expected in launch
    for variable in ("HOSTFILE", "MASTER_ADDR", "MASTER_PORT", "TRAIN_SCRIPT"):
        assert f"#   {variable}" in launch and f"${{{variable}" in launch


def test_multi_node_launch_requires_master_addr() -> None:
    plan = dataclasses.replace(load_plan(BASE, dp=16), num_gpus=16)
    launch = DeepSpeedEmitter().emit(plan).as_dict()["launch_deepspeed.sh"]
    assert "--num_nodes 2" in launch and "--num_gpus 8" in launch
    assert "${MASTER_ADDR:?" in launch


def test_readme_notes_what_the_model_code_must_do() -> None:
    readme = DeepSpeedEmitter().emit(PLANS_TO_CHECK["llama-3.1-8b-8xh100-fsdp"]).as_dict()
    text = readme["README.md"]
    assert "applied by the model code's checkpoint calls" in text
    assert "predictions were made for torchtitan" in text
    ulysses = DeepSpeedEmitter().emit(PLANS_TO_CHECK["ulysses2-zero1-overlap"]).as_dict()
    assert "sequence_parallel_size=2" in ulysses["README.md"]
    pipeline = DeepSpeedEmitter().emit(PLANS_TO_CHECK["pp2-zero1-full"]).as_dict()
    assert "num_stages=2" in pipeline["README.md"]


# -- the reader, and the file format ---------------------------------------------------------


def test_parse_derives_the_missing_batch_key_and_checks_the_identity() -> None:
    assert parse_deepspeed_config({"train_batch_size": 64}, world_size=8)["mbs"] == 8
    derived = parse_deepspeed_config(
        {"train_batch_size": 64, "train_micro_batch_size_per_gpu": 2}, world_size=8
    )
    assert derived["grad_accumulation"] == 4
    with pytest.raises(EmitError, match="must equal"):
        parse_deepspeed_config(
            {
                "train_batch_size": 64,
                "train_micro_batch_size_per_gpu": 1,
                "gradient_accumulation_steps": 4,
            },
            world_size=8,
        )


@pytest.mark.parametrize("name", sorted(PLANS_TO_CHECK))
def test_config_file_is_sorted_indented_json(name: str) -> None:
    text = DeepSpeedEmitter().emit(PLANS_TO_CHECK[name]).as_dict()["ds_config.json"]
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


# -- DeepSpeed's keys and rules, as a table (always runs) ---------------------------------

# Keys the emitter may write, each with its type (DeepSpeed 0.19.6
# deepspeed/runtime/config.py, zero/config.py, zero/offload_config.py, precision_config.py,
# activation_checkpointing/config.py). Checked against DeepSpeed's own models below.
TOP_LEVEL_KEYS = {
    "train_batch_size": int,
    "train_micro_batch_size_per_gpu": int,
    "gradient_accumulation_steps": int,
    "gradient_clipping": float,
    "steps_per_print": int,
    "wall_clock_breakdown": bool,
    "bf16": dict,
    "fp16": dict,
    "zero_optimization": dict,
    "activation_checkpointing": dict,
    "pipeline": dict,
    "sequence_parallel_size": int,
}
BLOCK_KEYS = {
    "bf16": {"enabled"},
    "fp16": {
        "enabled",
        "loss_scale",
        "initial_scale_power",
        "loss_scale_window",
        "hysteresis",
        "min_loss_scale",
    },
    "zero_optimization": {
        "stage",
        "overlap_comm",
        "contiguous_gradients",
        "reduce_bucket_size",
        "allgather_bucket_size",
        "stage3_prefetch_bucket_size",
        "stage3_param_persistence_threshold",
        "stage3_max_live_parameters",
        "offload_optimizer",
    },
    "activation_checkpointing": {
        "partition_activations",
        "contiguous_memory_optimization",
        "cpu_checkpointing",
    },
    "pipeline": {"stages", "partition", "activation_checkpoint_interval"},
}
OFFLOAD_OPTIMIZER_KEYS = {"device", "pin_memory", "ratio"}
# Source defaults (deepspeed/runtime/zero/config.py; its docs' config-json page shows other
# values for two of them, and the source is what runs)
ZERO_SOURCE_DEFAULTS = {
    "contiguous_gradients": True,
    "reduce_bucket_size": 500_000_000,
    "allgather_bucket_size": 500_000_000,
    "stage3_prefetch_bucket_size": 50_000_000,
    "stage3_param_persistence_threshold": 100_000,
    "stage3_max_live_parameters": 1_000_000_000,
}


def rule_violations(config: dict[str, Any], *, plan: EmitInput) -> list[str]:
    """DeepSpeed's rules for a config of ``plan``: the batch identity
    (``DeepSpeedConfig._batch_assertion``), the ZeRO block (``zero/config.py``, partial
    offload only at stage 3), no ZeRO-2/3 under the pipeline engine (``pipe/engine.py``),
    and one half-precision block at most."""
    problems = []
    for key, value in config.items():
        if key not in TOP_LEVEL_KEYS or type(value) is not TOP_LEVEL_KEYS[key]:
            problems.append(f"unknown key or wrong type: {key}={value!r}")
        elif key in BLOCK_KEYS and not set(value) <= BLOCK_KEYS[key]:
            problems.append(f"{key}: unknown keys {sorted(set(value) - BLOCK_KEYS[key])}")
    micro, gas = config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]
    dp = plan.num_gpus // (config.get("sequence_parallel_size", 1) * plan.layout.pp)
    if not (micro > 0 and gas > 0 and config["train_batch_size"] == micro * gas * dp):
        problems.append("batch identity train = micro x accumulation x dp")
    zero = config["zero_optimization"]
    stage = zero["stage"]
    if stage not in (0, 1, 2, 3):
        problems.append(f"stage {stage} not in 0-3")
    if zero["overlap_comm"] != (stage == 3 or plan.layout.overlap_grad_reduce):
        problems.append("overlap_comm: source default (stage 3) unless the plan overlaps")
    for key, default in ZERO_SOURCE_DEFAULTS.items():
        if key in zero and zero[key] != default:
            problems.append(f"{key} {zero[key]} is not the source default {default}")
    if (stage == 3) != ("stage3_prefetch_bucket_size" in zero):
        problems.append("stage-3 keys only (and always) with stage 3")
    offload = zero.get("offload_optimizer")
    if offload is not None:
        if set(offload) != OFFLOAD_OPTIMIZER_KEYS or stage == 0:
            problems.append("offload_optimizer keys, or offload without ZeRO")
        if offload["ratio"] < 1 and stage != 3:
            problems.append("partial offload (ratio < 1) only with stage 3")
    if "pipeline" in config and stage >= 2:
        problems.append("pipeline parallelism forbids ZeRO-2/3")
    if "bf16" in config and "fp16" in config:
        problems.append("bf16 and fp16 are mutually exclusive")
    return problems


@pytest.mark.parametrize("name", sorted(PLANS_TO_CHECK))
def test_config_keeps_deepspeeds_rules(name: str) -> None:
    plan = PLANS_TO_CHECK[name]
    assert rule_violations(deepspeed_config(plan), plan=plan) == []


def test_rule_table_catches_a_broken_config() -> None:
    plan = PLANS_TO_CHECK[BASE]
    config = deepspeed_config(plan)
    broken = {
        **config,
        "train_batch_size": 32,
        "pipeline": {"stages": 1},
        "zero_optimization": {**config["zero_optimization"], "reduce_bucket_size": 5e7},
    }
    broken["zero_optimization"]["offload_optimizer"] = {
        "device": "cpu",
        "pin_memory": True,
        "ratio": 0.5,
    }
    assert len(rule_violations(broken, plan=plan)) == 4


# -- DeepSpeed's own config class (where deepspeed is installed) --------------------------


@pytest.fixture(scope="module")
def deepspeed_runtime_config() -> Any:
    pytest.importorskip("deepspeed", reason=DEEPSPEED_MISSING)
    return importlib.import_module("deepspeed.runtime.config")


def parse_with_deepspeed(
    module: Any, config: dict[str, Any], plan: EmitInput, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """``DeepSpeedConfig`` as ``deepspeed.initialize`` builds it on one rank of the plan.

    ``DeepSpeedConfig`` reads its batch "world size" from ``deepspeed.comm`` (0.19.x,
    ``runtime/config.py``): with an mpu that has ``get_data_parallel_world_size`` (the
    pipeline engine's grid) that; with an mpu that only knows the sequence-parallel size
    (ALST's ``parallel_state_sp``) world / that size; with none, the whole world. Without
    an initialised process group it falls back to 1, so the world of ``plan.num_gpus``
    ranks is stood in for by patching the module's ``dist``, and each path is taken
    the way a real run of this layout takes it.
    """
    fake_dist = SimpleNamespace(get_rank=lambda group=None: 0)
    fake_dist.get_world_size = lambda group=None: plan.num_gpus
    monkeypatch.setattr(module, "dist", fake_dist)
    mpu = None
    if plan.layout.pp > 1:
        mpu = SimpleNamespace(get_data_parallel_world_size=lambda: plan.dp)
    elif plan.layout.cp > 1:
        mpu = SimpleNamespace(get_sequence_parallel_world_size=lambda: plan.layout.cp)
    return module.DeepSpeedConfig(json.loads(json.dumps(config)), mpu=mpu)


@pytest.mark.parametrize("name", sorted(PLANS_TO_CHECK))
def test_deepspeed_accepts_the_config(
    name: str, deepspeed_runtime_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = PLANS_TO_CHECK[name]
    config = deepspeed_config(plan)
    parsed = parse_with_deepspeed(deepspeed_runtime_config, config, plan, monkeypatch)
    assert parsed.world_size == plan.dp
    assert parsed.train_batch_size == plan.global_batch
    assert parsed.train_micro_batch_size_per_gpu == plan.layout.mbs
    assert parsed.gradient_accumulation_steps == plan.grad_accumulation
    zero = parsed.zero_config
    assert zero.stage == plan.layout.zero_stage
    assert zero.overlap_comm == config["zero_optimization"]["overlap_comm"]
    assert parsed.bfloat16_config.enabled == (plan.precision == "bf16")
    assert parsed.float16_config.enabled == (plan.precision == "fp16")
    offload = zero.offload_optimizer
    fraction = plan.layout.offload_optimizer_fraction
    assert (offload is not None and offload.device == "cpu") == (fraction > 0)
    if fraction > 0:
        assert offload.ratio == fraction
    checkpointing = parsed.activation_checkpointing_config
    assert checkpointing.partition_activations is False
    if plan.layout.pp > 1:
        interval = parsed.pipeline["activation_checkpoint_interval"]
        assert (interval > 0) == (plan.layout.recompute == "full")


def test_deepspeed_rejects_partial_offload_below_stage_3(
    deepspeed_runtime_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table's offload rule is DeepSpeed's: it refuses the config we refuse to write."""
    plan = PLANS_TO_CHECK[BASE]
    config = deepspeed_config(plan)
    config["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "ratio": 0.5}
    with pytest.raises(Exception, match="Partial offloading only supported for ZeRO Stage 3"):
        parse_with_deepspeed(deepspeed_runtime_config, config, plan, monkeypatch)


def test_key_table_matches_deepspeeds_models(deepspeed_runtime_config: Any) -> None:
    from deepspeed.runtime.activation_checkpointing.config import ACT_CHKPT_DEFAULT
    from deepspeed.runtime.precision_config import DeepSpeedBF16Config, DeepSpeedFP16Config
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from deepspeed.runtime.zero.offload_config import DeepSpeedZeroOffloadOptimizerConfig

    def names(model: Any) -> set[str]:
        fields = model.model_fields
        return set(fields) | {field.alias for field in fields.values() if field.alias}

    assert BLOCK_KEYS["zero_optimization"] <= names(DeepSpeedZeroConfig)
    assert names(DeepSpeedZeroOffloadOptimizerConfig) >= OFFLOAD_OPTIMIZER_KEYS
    assert BLOCK_KEYS["bf16"] <= names(DeepSpeedBF16Config)
    assert BLOCK_KEYS["fp16"] <= names(DeepSpeedFP16Config)
    assert BLOCK_KEYS["activation_checkpointing"] <= set(ACT_CHKPT_DEFAULT)
    assert BLOCK_KEYS["pipeline"] <= set(deepspeed_runtime_config.get_pipeline_config({}))
    defaults = DeepSpeedZeroConfig().model_dump(by_alias=True)
    for key, value in ZERO_SOURCE_DEFAULTS.items():
        assert defaults[key] == value, key


def test_launch_script_runs_the_deepspeed_launcher(tmp_path: Path) -> None:
    """Run the script with a stand-in ``deepspeed`` on PATH that records its arguments."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    for name, text in DeepSpeedEmitter().emit(load_plan(BASE)).as_dict().items():
        (tmp_path / name).write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "deepspeed"
    stand_in.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    stand_in.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TRAIN_SCRIPT": "train.py", "MASTER_PORT": "6000"}
    script = str(tmp_path / "launch_deepspeed.sh")
    done = subprocess.run([bash, script, "--lr", "3e-4"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "--hostfile", "/job/hostfile", "--num_nodes", "1", "--num_gpus", "8",
        "--master_addr", "127.0.0.1", "--master_port", "6000",
        "train.py", "--lr", "3e-4", "--deepspeed", "--deepspeed_config",
        f"{tmp_path}/ds_config.json",
    ]  # fmt: skip
    missing = subprocess.run([bash, script], env={"PATH": env["PATH"]}, capture_output=True)
    assert missing.returncode != 0 and b"TRAIN_SCRIPT" in missing.stderr
