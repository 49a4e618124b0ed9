"""The contract every registered emitter keeps, written once and run on each of them.

For every emitter in the registry: the files match the golden files; the same plan gives
the same bytes; the emitted files read back give the plan's layout; a plan the framework
cannot express is refused with one line naming why; and a plan whose own fields disagree
(a hand-edited batch, GPU count or layout) is refused before anything framework-specific,
naming the field. A new emitter must add its ``Contract`` (see ``emitter_cases.py``) here, or
``test_every_registered_emitter_has_a_contract`` fails. Regenerate the golden files with
``UPDATE_GOLDEN=1``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import deepspeed_cases
import megatron_cases
import pytest
import torchtitan_cases
from emitter_cases import Contract, load_plan

from planner.emit import emitter_names, get_emitter, load_emitters
from planner.emit.base import EmitError, EmitInput, checked_plan

load_emitters()
CONTRACTS: dict[str, Contract] = {
    "megatron": megatron_cases.CONTRACT,
    "deepspeed": deepspeed_cases.CONTRACT,
    **torchtitan_cases.CONTRACTS,
}
EMITTERS = sorted(CONTRACTS)


def _cases(attribute: str) -> list[Any]:
    return [
        pytest.param(name, case, id=f"{name}-{case}")
        for name in EMITTERS
        for case in getattr(CONTRACTS[name], attribute)
    ]


def _emit(contract: Contract, plan: EmitInput) -> dict[str, str]:
    return get_emitter(contract.emitter).emit(plan).as_dict()


def test_every_registered_emitter_has_a_contract() -> None:
    assert sorted(emitter_names()) == EMITTERS
    for name, contract in CONTRACTS.items():
        assert get_emitter(name).name == contract.emitter == name


@pytest.mark.parametrize(("name", "case"), _cases("golden_cases"))
def test_golden_files(name: str, case: str) -> None:
    contract = CONTRACTS[name]
    files = _emit(contract, contract.plans[case]())
    folder = contract.golden_folder(case)
    if os.environ.get("UPDATE_GOLDEN"):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.iterdir():
            stale.unlink()
        for file_name, text in files.items():
            (folder / file_name).write_text(text)
    assert sorted(path.name for path in folder.iterdir()) == sorted(files)
    for file_name, text in files.items():
        assert (folder / file_name).read_text() == text, f"{case}/{file_name} differs"


@pytest.mark.parametrize(("name", "case"), _cases("plans"))
def test_deterministic(name: str, case: str) -> None:
    """Two plans built apart give the same bytes, and an open ``dp`` is filled the same."""
    contract = CONTRACTS[name]
    first = get_emitter(name).emit(contract.plans[case]())
    assert get_emitter(name).emit(contract.plans[case]()) == first
    plan = contract.plans[case]()
    open_dp = dataclasses.replace(plan, layout=plan.layout.model_copy(update={"dp": None}))
    assert get_emitter(name).emit(open_dp) == first


@pytest.mark.parametrize(("name", "case"), _cases("plans"))
def test_round_trip(name: str, case: str) -> None:
    contract = CONTRACTS[name]
    plan = contract.plans[case]()
    read, expected = contract.read_back(_emit(contract, plan), checked_plan(plan))
    assert read == expected


@pytest.mark.parametrize(("name", "case"), _cases("refusals"))
def test_refuses_what_the_framework_cannot_express(name: str, case: str) -> None:
    contract = CONTRACTS[name]
    build, phrases = contract.refusals[case]
    with pytest.raises(EmitError) as refused:
        _emit(contract, build())
    message = str(refused.value)
    assert re.match(contract.refusal, message), message
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message


# A plan file edited by hand: each edit, and the phrase its refusal must contain. The
# base is the 70B plan (tp 8, pp 4 with vpp 2, dp 2, mbs 1, 512 sequences on 64 GPUs).
SEVENTY_B = "llama-3.1-70b-64xh100"
INCONSISTENT: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]] = {
    # case: (plan fields, layout fields, model fields, the message)
    "global batch not a whole number of micro-batches": (
        {"global_batch": 511}, {}, {},
        "plan: global_batch 511 is not micro-batch size x dp x micro-batches: 511 / (1 x 2) "
        "= 255.5 is not a whole number of micro-batches",
    ),
    "global batch below mbs x dp": (
        {"global_batch": 3}, {"mbs": 2}, {}, "global_batch 3 is not micro-batch size x dp",
    ),
    "dp that does not fill the GPUs": (
        {"num_gpus": 96}, {}, {},
        "plan: tp x cp x dp x pp = 8 x 1 x 2 x 4 = 64 but the cluster has 96 GPUs",
    ),
    "GPUs that tp x cp x pp do not divide": (
        {"num_gpus": 60}, {"dp": None}, {},
        "plan: the 60 GPUs are not divisible by tp x cp x pp = 8 x 1 x 4 = 32",
    ),
    "no GPUs": ({"num_gpus": 0}, {}, {}, "plan: num_gpus 0 is not a positive whole number"),
    "no GPUs per node": (
        {"gpus_per_node": -8}, {}, {}, "plan: gpus_per_node -8 is not a positive whole number",
    ),
    "unknown precision": ({"precision": "fp64"}, {}, {}, "plan: precision: Input should be"),
    "empty global batch": ({"global_batch": 0}, {}, {}, "plan: global_batch: Input should be"),
    "heads that tp does not divide": (
        {}, {}, {"num_attention_heads": 60},
        "num_attention_heads (60) must be divisible by tp (8)",
    ),
    "expert parallelism on a dense model": (
        {"num_gpus": 128}, {"ep": 2, "dp": 4}, {}, "ep (2) > 1 requires an MoE model",
    ),
    "interleaved schedule with too few micro-batches": (
        {"global_batch": 6}, {}, {}, "interleaved schedule needs micro-batches per step (3)",
    ),
    "uneven split that leaves a layer over": (
        {}, {"pp": 2, "dp": None, "vpp": None, "first_stage_layers": 40, "last_stage_layers": 39},
        {}, "first/last stage layers (40, 39) leave 1 layers for 0 middle stages",
    ),
}  # fmt: skip


def inconsistent_plan(case: str) -> EmitInput:
    fields, layout, model = INCONSISTENT[case][:3]
    plan = load_plan(SEVENTY_B, **layout)
    return dataclasses.replace(plan, model=plan.model.model_copy(update=model), **fields)


@pytest.mark.parametrize("case", sorted(INCONSISTENT))
@pytest.mark.parametrize("name", EMITTERS)
def test_refuses_a_plan_whose_fields_disagree(name: str, case: str) -> None:
    """Checked before anything framework-specific: the same message from every emitter,
    even one that could never express the base plan (DeepSpeed has no tensor parallelism)."""
    with pytest.raises(EmitError) as refused:
        _emit(CONTRACTS[name], inconsistent_plan(case))
    message = str(refused.value)
    assert message.startswith("plan: ") and "\n" not in message, message
    assert INCONSISTENT[case][3] in message
    assert not re.search(r"\brule \d", message), "say the rule in words"
