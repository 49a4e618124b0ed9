"""A plan simulated with ``--memplan``: the launch scripts carry the allocator advice; a
plan without the simulation (or without a saving) emits exactly what it did before."""

from __future__ import annotations

import copy
import difflib
import json
from typing import Any

import pytest
from emitter_cases import PLANS

from planner.emit import emit_files
from planner.emit.base import EmitError, emit_input_from_estimate

EXPORT = "export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
CASES = [
    ("llama-3.1-70b-64xh100", "megatron", "launch_megatron.sh", True),
    ("llama-3.1-8b-8xh100-zero2", "deepspeed", "launch_deepspeed.sh", True),
    ("llama-3.1-8b-8xh100-fsdp", "torchtitan", "run_torchtitan.sh", False),
]


def _plan(stem: str, simulated: list[dict[str, Any]] | None) -> dict[str, Any]:
    data = json.loads((PLANS / f"{stem}.json").read_text())
    if simulated is not None:
        data = copy.deepcopy(data)
        data["memory"]["simulated"] = simulated
    return data


def _stage(stage: int, default: float, expandable: float) -> dict[str, Any]:
    return {"stage": stage, "allocator_gib": default, "allocator_expandable_gib": expandable}


@pytest.mark.parametrize(("stem", "fmt", "launch", "exports"), CASES)
def test_saving_goes_into_the_launch_script_and_nothing_else_changes(
    stem: str, fmt: str, launch: str, exports: bool
) -> None:
    plain = emit_files(_plan(stem, None), format=fmt)
    advised = emit_files(_plan(stem, [_stage(0, 50.25, 49.0), _stage(1, 40.0, 39.5)]), format=fmt)
    assert plain.keys() == advised.keys()
    for name in plain:
        if name != launch:
            assert advised[name] == plain[name]
    script = advised[launch]
    assert "reserves 1.25 GiB less per GPU at the peak stage" in script
    assert (EXPORT in script) is exports
    diff = list(difflib.ndiff(plain[launch].splitlines(), script.splitlines()))
    assert not [line for line in diff if line.startswith("- ")]  # only lines added
    added = [line[2:] for line in diff if line.startswith("+ ")]
    assert added and all(
        line.startswith("# autopar memplan") or line in (EXPORT, "") for line in added
    )
    if exports:  # set before the launcher runs
        assert script.index(EXPORT) < script.index(
            "exec deepspeed" if fmt == "deepspeed" else "torchrun"
        )


@pytest.mark.parametrize(("stem", "fmt", "launch", "exports"), CASES)
def test_no_saving_no_advice(stem: str, fmt: str, launch: str, exports: bool) -> None:
    plain = emit_files(_plan(stem, None), format=fmt)
    assert emit_files(_plan(stem, [_stage(0, 50.0, 50.0)]), format=fmt) == plain
    assert "PYTORCH_CUDA_ALLOC_CONF" not in plain[launch]


@pytest.mark.parametrize(
    ("simulated", "message"),
    [
        ([], "memory.simulated must be a non-empty list"),
        ("x", "memory.simulated must be a non-empty list"),
        ([{"allocator_gib": 1.0}], "missing field 'allocator_expandable_gib'"),
        ([{"allocator_gib": "a", "allocator_expandable_gib": 1}], "must be a number"),
    ],
)
def test_bad_simulated_section_is_named(simulated: Any, message: str) -> None:
    data = _plan("llama-3.1-70b-64xh100", None)
    data["memory"]["simulated"] = simulated
    with pytest.raises(EmitError, match=message):
        emit_input_from_estimate(data)


def test_a_verdict_that_assumed_expandable_segments_exports_them() -> None:
    """``autopar estimate --expandable-segments`` counted the fragmentation measured with
    them: the Megatron launch script must set them, even without a simulation."""
    data = copy.deepcopy(_plan("llama-3.1-70b-64xh100", None))
    plain = emit_files(data, format="megatron")["launch_megatron.sh"]
    data["config"].setdefault("runtime", {})["expandable_segments"] = True
    script = emit_files(data, format="megatron")["launch_megatron.sh"]
    assert EXPORT not in plain and EXPORT in script
    assert "measured with expandable segments" in script
    assert script.index(EXPORT) < script.index("torchrun")
    data["config"]["runtime"]["expandable_segments"] = "yes"
    with pytest.raises(EmitError, match="expandable_segments"):
        emit_input_from_estimate(data)


def test_a_bf16_gradient_buffer_is_emitted_as_megatron_names_it() -> None:
    data = copy.deepcopy(_plan("llama-3.1-70b-64xh100", None))
    assert "--grad-reduce-in-bf16" not in emit_files(data, format="megatron")["megatron_args.txt"]
    data["config"].setdefault("runtime", {})["grad_reduce_in_bf16"] = True
    assert "--grad-reduce-in-bf16" in emit_files(data, format="megatron")["megatron_args.txt"]


def test_the_kernel_switches_are_emitted_as_megatron_names_them() -> None:
    """Megatron-LM's defaults (null, or the default value) write nothing; the other value
    its flag: ``--cross-entropy-loss-fusion``, ``--no-gradient-accumulation-fusion``."""
    data = copy.deepcopy(_plan("llama-3.1-70b-64xh100", None))
    runtime = data["config"].setdefault("runtime", {})
    runtime.update(cross_entropy_loss_fusion=False, gradient_accumulation_fusion=True)
    plain = emit_files(data, format="megatron")["megatron_args.txt"]
    assert "fusion" not in plain
    runtime.update(cross_entropy_loss_fusion=True, gradient_accumulation_fusion=False)
    args = emit_files(data, format="megatron")["megatron_args.txt"]
    assert "--cross-entropy-loss-fusion" in args and "--no-gradient-accumulation-fusion" in args
    runtime["gradient_accumulation_fusion"] = "off"
    with pytest.raises(EmitError, match="gradient_accumulation_fusion"):
        emit_input_from_estimate(data)
