"""Optimizer offload as a refined knob: offered only where the framework runs it."""

from __future__ import annotations

from planner.emit import emit_files
from planner.refine import RefineProblem, Space
from planner.refine.space import OFFLOAD_FRACTIONS


def _with_framework(problem: RefineProblem, framework: str) -> Space:
    return Space(problem.model_copy(update={"framework": framework}))


def test_megatron_offers_any_share_with_the_distributed_optimizer(problem: RefineProblem) -> None:
    space = _with_framework(problem, "megatron")
    base = dict(space.bases[0])
    assert space._offload_choices({**base, "distributed_optimizer": True}) == OFFLOAD_FRACTIONS
    assert space._offload_choices({**base, "distributed_optimizer": False}) == ()


def test_deepspeed_offers_a_partial_share_only_at_stage_three(problem: RefineProblem) -> None:
    space = _with_framework(problem, "deepspeed")
    base = dict(space.bases[0])
    assert space._offload_choices({**base, "zero_stage": 0}) == ()
    assert space._offload_choices({**base, "zero_stage": 2}) == (0.0, 1.0)
    assert space._offload_choices({**base, "zero_stage": 3}) == OFFLOAD_FRACTIONS


def test_torchtitan_and_pytorch_are_not_offered_offload(problem: RefineProblem) -> None:
    for framework in ("torchtitan", "pytorch"):
        space = _with_framework(problem, framework)
        assert space._offload_choices({**space.bases[0], "zero_stage": 3}) == ()


def test_an_offloaded_megatron_layout_emits(problem: RefineProblem, solver_result) -> None:
    space = _with_framework(problem, "megatron")
    entry = solver_result.plans[0].model_dump(mode="json")
    layout = {**entry["config"], "distributed_optimizer": True, "offload_optimizer_fraction": 0.5}
    assert 0.5 in space._offload_choices(layout)
    files = emit_files({**entry, "config": layout}, format="megatron")
    script = "\n".join(files.values())
    assert "--optimizer-cpu-offload" in script and "--optimizer-offload-fraction 0.5" in script
