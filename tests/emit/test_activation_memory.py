"""A memory plan's recompute/offload setting (``autopar memplan --budget-gib --emit``) in
torchtitan's and DeepSpeed's files: what each writes, what each refuses, and (where
torchtitan 0.2.2 is installed) its own config parser and checkpointing code reading it.
Megatron's cases are in the contract suite (``megatron_cases``)."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest
from deepspeed_cases import DEEPSPEED_CASES
from emitter_cases import load_plan
from torchtitan_cases import EIGHT_B

from planner.emit.base import ActivationMemory, EmitError, EmitInput, get_emitter
from planner.emit.torchtitan import TOML_FILE

EVERY_THIRD = ActivationMemory(budget_gib=60, peak_gib=58.2, added_time_s=0.4, every_nth_layer=3)
OFFLOAD = ActivationMemory(budget_gib=60, peak_gib=58.2, added_time_s=0.4, offload_layers=4)


def _titan(memory: ActivationMemory) -> EmitInput:
    plan = load_plan(EIGHT_B, recompute="full")
    return dataclasses.replace(plan, activation_memory=memory)


def test_torchtitan_02_checkpoints_every_kth_block() -> None:
    files = get_emitter("torchtitan-toml").emit(_titan(EVERY_THIRD)).as_dict()
    section = tomllib.loads(files[TOML_FILE])["activation_checkpoint"]
    assert section == {"mode": "selective", "selective_ac_option": "3"}
    script = files["run_torchtitan.sh"]
    assert "# autopar memplan --budget-gib 60: this recompute/offload setting plans" in script


def test_torchtitan_current_and_deepspeed_refuse_what_they_cannot_express() -> None:
    with pytest.raises(EmitError, match="SelectiveAC is op-level only"):
        get_emitter("torchtitan").emit(_titan(EVERY_THIRD))
    for emitter in ("torchtitan", "torchtitan-toml"):
        with pytest.raises(EmitError, match="no activation offload"):
            get_emitter(emitter).emit(_titan(OFFLOAD))
    plan = DEEPSPEED_CASES["llama-3.1-8b-8xh100-zero2"]()
    for memory in (EVERY_THIRD, OFFLOAD):
        with pytest.raises(EmitError, match="DeepSpeed checkpoints every layer or none"):
            get_emitter("deepspeed").emit(dataclasses.replace(plan, activation_memory=memory))


def test_deepspeed_writes_full_checkpointing_with_the_budget_note() -> None:
    plan = DEEPSPEED_CASES["llama-3.1-8b-8xh100-zero2"]()
    memory = ActivationMemory(
        budget_gib=60, peak_gib=58.2, added_time_s=0.9, mapped="deepspeed sets every layer or none"
    )
    plan = dataclasses.replace(
        plan, layout=plan.layout.model_copy(update={"recompute": "full"}), activation_memory=memory
    )
    files = get_emitter("deepspeed").emit(plan).as_dict()
    assert "activation_checkpointing" in json.loads(files["ds_config.json"])
    launch = next(text for name, text in files.items() if name.endswith(".sh"))
    assert "# Mapped: deepspeed sets every layer or none." in launch


def test_torchtitan_02_reads_and_applies_the_every_kth_option(tmp_path: Path) -> None:
    torchtitan = pytest.importorskip("torchtitan", reason="torchtitan 0.2.2 is not installed")
    if not torchtitan.__version__.startswith("0.2."):
        pytest.skip(f"needs torchtitan 0.2.x, found {torchtitan.__version__}")
    import torch
    from torchtitan.config import ConfigManager
    from torchtitan.distributed import activation_checkpoint as ac

    path = tmp_path / TOML_FILE
    path.write_text(get_emitter("torchtitan-toml").emit(_titan(EVERY_THIRD)).as_dict()[TOML_FILE])
    config = ConfigManager().parse_args(["--job.config_file", str(path)])
    section = config.activation_checkpoint
    assert (section.mode, section.selective_ac_option) == ("selective", "3")
    # its layer-wise rule on six blocks: the 3rd and 6th are wrapped in a checkpoint
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleDict({str(i): torch.nn.Linear(2, 2) for i in range(6)})
    ac._layer_sac_count = 0
    ac.apply_ac(model, config.activation_checkpoint)
    wrapped = [type(block).__name__ != "Linear" for block in model.layers.values()]
    assert wrapped == [False, False, True, False, False, True]
