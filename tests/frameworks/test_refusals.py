"""Framework refusals said once: the search drops, the refinement prunes and the emitters
refuse the same layouts, with the same words, per framework release; the knobs the exact
search sets by rule follow the profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.catalog import load_cluster, load_model
from planner.emit import EmitError, EmitInput, emit, load_emitters
from planner.errors import SpecError
from planner.frameworks import get_profile
from planner.frameworks.refusals import LayoutQuery, layout_refusals
from planner.refine import RefineProblem
from planner.refine.objective import evaluate
from planner.refine.problem import Seed
from planner.search.candidates import enumerate_layouts, enumerate_space
from planner.specs import ModelSpec, ParallelConfig, WorkloadSpec
from planner.specs.rules import Rule

EIGHT_B = "llama-3.1-8b"
WORKLOAD = WorkloadSpec(seq_len=8192, global_batch=64)


def _plan_input(model: ModelSpec, layout: ParallelConfig, *, framework: str) -> EmitInput:
    return EmitInput(
        model=model, num_gpus=16, gpus_per_node=8, seq_len=WORKLOAD.seq_len,
        global_batch=WORKLOAD.global_batch, precision="bf16", layout=layout,
        framework=framework, predictions={},
    )  # fmt: skip


def test_deepspeed_search_drops_ulysses_with_a_pipeline_and_says_why() -> None:
    """The issue's DeepSpeed case: CP with PP passed the profile (both axes run) but not
    DeepSpeed's pipeline topology; the search now drops it under the framework's rule."""
    model, cluster = load_model(EIGHT_B), load_cluster("dgx-h100", gpus=16)
    space = enumerate_space(model, cluster, WORKLOAD, framework="deepspeed")
    assert space.layouts and not any(x.cp > 1 and x.pp > 1 for x in space.layouts)
    assert space.dropped[Rule.FRAMEWORK_CANNOT_EXPRESS] > 0
    example = space.examples[Rule.FRAMEWORK_CANNOT_EXPRESS]
    assert example.startswith("deepspeed: ") and "pipe and data axes only" in example


def test_the_emitter_refuses_in_the_words_the_search_counts() -> None:
    load_emitters()
    model = load_model(EIGHT_B)
    layout = ParallelConfig(cp=2, pp=2, dp=4, cp_comm_type="a2a", zero_stage=1)
    profile = get_profile("deepspeed")
    reasons = layout_refusals(
        profile, LayoutQuery(model=model, layout=layout, seq_len=8192, precision="bf16")
    )
    assert reasons
    with pytest.raises(EmitError) as refused:
        emit(_plan_input(model, layout, framework="deepspeed"), format="deepspeed")
    assert all(reason in str(refused.value) for reason in reasons)


@pytest.mark.parametrize(
    ("version", "release", "algorithms", "etp"),
    [(None, "0.3.0", {"all_gather"}, {1}), ("current", "0.3.0", {"all_gather"}, {1}),
     ("0.2", "0.2.2", {"p2p", "all_gather"}, {None})],
)  # fmt: skip
def test_torchtitan_search_follows_the_release(
    version: str | None, release: str, algorithms: set[str], etp: set[int | None]
) -> None:
    """0.3.0 all-gathers K/V and runs expert parallelism with etp 1 only; 0.2.2 also runs
    the ring and shards experts over TP (etp = tp)."""
    profile = get_profile("torchtitan")
    assert profile.release(version) == release
    moe, cluster = load_model("qwen3-30b-a3b"), load_cluster("dgx-h100", gpus=16)
    layouts = enumerate_layouts(
        moe, cluster, WORKLOAD, framework="torchtitan", framework_version=version,
        fixed={"recompute": "full", "mbs": 1},
    )  # fmt: skip
    assert {x.cp_comm_type for x in layouts if x.cp > 1} == algorithms
    assert {x.etp for x in layouts if x.ep > 1 and x.tp > 1} == etp
    for layout in layouts:
        query = LayoutQuery(
            model=moe, layout=layout, seq_len=WORKLOAD.seq_len, precision="bf16",
            release=release,
        )  # fmt: skip
        assert layout_refusals(profile, query) == []


def test_an_unknown_version_is_named() -> None:
    with pytest.raises(SpecError, match=r"unknown torchtitan version '0\.9'; known: current, 0\.2"):
        get_profile("torchtitan").release("0.9")
    with pytest.raises(SpecError, match="megatron has no versions"):
        get_profile("megatron").release("0.2")


def test_overlaps_are_set_by_rule_where_the_framework_runs_them() -> None:
    """Never slower in the cost model and no memory of their own, so the search sets them
    instead of enumerating them (planner.search.candidates)."""
    model, cluster = load_model(EIGHT_B), load_cluster("dgx-h100", gpus=16)
    for framework in ("megatron", "torchtitan", "pytorch", "deepspeed"):
        overlaps = get_profile(framework).overlaps
        layouts = enumerate_layouts(model, cluster, WORKLOAD, framework=framework)
        for layout in layouts:
            assert layout.tp_comm_overlap == (layout.sequence_parallel and "tp_comm" in overlaps)
            assert layout.overlap_grad_reduce == ("grad_reduce" in overlaps)
            assert layout.overlap_param_gather == (
                "param_gather" in overlaps and layout.shards_optimizer
            )
        if framework in ("megatron", "torchtitan"):
            assert any(layout.tp_comm_overlap for layout in layouts)


def test_tp_comm_overlap_never_slows_a_layout_in_the_cost_model() -> None:
    """Why it is set by rule: the same layout with and without it, on three TP degrees."""
    from planner.predict import estimate

    model, cluster = load_model(EIGHT_B), load_cluster("dgx-h100", gpus=8)
    for tp in (2, 4, 8):
        results = [
            estimate(
                model=model, cluster=cluster, workload=WORKLOAD,
                layout=ParallelConfig(tp=tp, sequence_parallel=True, tp_comm_overlap=on),
            )
            for on in (False, True)
        ]  # fmt: skip
        off, on = results
        assert on.time.step_time_s <= off.time.step_time_s
        assert on.memory.peak_gib == off.memory.peak_gib


def test_a_refinement_trial_the_framework_refuses_is_illegal() -> None:
    model, cluster = load_model(EIGHT_B), load_cluster("dgx-h100", gpus=8)
    ring = ParallelConfig(cp=2, dp=4, zero_stage=3, cp_comm_type="p2p").model_dump(mode="json")
    seed = Seed(layout=ring, step_time_s=1.0, tokens_per_s=1.0, headroom_gib=1.0)
    for version, status in (("current", "illegal"), ("0.2", None)):
        problem = RefineProblem(
            model=model, cluster=cluster, workload=WORKLOAD, framework="torchtitan",
            framework_version=version, seeds=(seed,),
        )  # fmt: skip
        outcome = evaluate(problem, ring)
        if status == "illegal":
            assert outcome.status == "illegal" and "runs all_gather only" in outcome.reason
        else:
            assert outcome.status != "illegal", outcome.reason


def test_a_refine_problem_without_a_version_keeps_its_fingerprint() -> None:
    """Studies stored before the version field find their problem again."""
    model, cluster = load_model(EIGHT_B), load_cluster("dgx-h100", gpus=8)
    seed = Seed(layout=ParallelConfig(dp=8).model_dump(mode="json"), step_time_s=1.0,
                tokens_per_s=1.0, headroom_gib=1.0)  # fmt: skip
    plain = RefineProblem(model=model, cluster=cluster, workload=WORKLOAD, seeds=(seed,))
    versioned = plain.model_copy(update={"framework_version": "0.2"})
    assert plain.fingerprint != versioned.fingerprint
    rebuilt = RefineProblem.from_user_attrs(plain.to_user_attrs(), study="s")
    assert rebuilt.fingerprint == plain.fingerprint


PLAN = ("plan", "--model", EIGHT_B, "--cluster", "dgx-h100", "--gpus", "8", "--seq-len",
        "8192", "--global-batch", "64", "--time-limit", "5")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "needle"),
    [(("--framework", "torchtitan", "--torchtitan-version", "9"), "unknown '9'"),
     (("--torchtitan-version", "0.2"), "only with --framework torchtitan")],
)  # fmt: skip
def test_plan_torchtitan_version_is_checked(run_cli, args: tuple[str, ...], needle: str) -> None:
    result = run_cli(*PLAN, *args)
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--torchtitan-version" in lines[0] and needle in lines[0]


def test_plan_for_torchtitan_0_2_emits_the_toml_job_file(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli(
        *PLAN, "--framework", "torchtitan", "--torchtitan-version", "0.2", "--emit",
        "torchtitan", "--out", str(out), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (out / "torchtitan.toml").exists()


@pytest.mark.parametrize(
    "pinned",
    [{"sequence_parallel": False}, {"overlap_grad_reduce": False}, {"zero_stage": 0,
     "distributed_optimizer": False}],
)  # fmt: skip
def test_a_pinned_knob_turns_off_the_overlap_that_needs_it(pinned: dict[str, object]) -> None:
    """Pinning away sequence parallelism, the gradient overlap or the sharding keeps the
    layouts (the overlap that needs it is off), instead of breaking every one of them."""
    model, cluster = load_model(EIGHT_B), load_cluster("dgx-h100", gpus=8)
    layouts = enumerate_layouts(model, cluster, WORKLOAD, fixed={"tp": 2, **pinned})
    assert layouts
    for layout in layouts:
        assert layout.tp_comm_overlap == layout.sequence_parallel
        assert layout.overlap_param_gather == (
            layout.shards_optimizer and layout.overlap_grad_reduce
        )


def test_hierarchical_cp_is_megatrons_and_ulysses_under_te_splits_kv_heads() -> None:
    """a2a+p2p runs only under Megatron-LM (Transformer Engine's hierarchical CP); the
    others refuse it by rule. Under Megatron, plain a2a scatters the KV heads too (TE
    asserts it), so 8 KV heads cannot go over cp 16 while a2a+p2p (8, 2) can."""
    model = load_model(EIGHT_B)

    def refusals(framework: str, **layout: object) -> list[str]:
        query = LayoutQuery(
            model=model, layout=ParallelConfig(dp=1, **layout), seq_len=32768, precision="bf16"
        )
        return layout_refusals(get_profile(framework), query)

    hierarchical = {"cp": 16, "cp_comm_type": "a2a+p2p", "hierarchical_cp_sizes": (8, 2)}
    assert refusals("megatron", **hierarchical) == []
    for framework in ("deepspeed", "torchtitan", "pytorch"):
        (reason,) = [r for r in refusals(framework, **hierarchical) if "a2a+p2p" in r]
        assert "Megatron-LM's with Transformer Engine" in reason and framework in reason
    (reason,) = refusals("megatron", cp=16, cp_comm_type="a2a")
    assert "KV heads per TP rank (8) must be divisible by cp (16)" in reason
    assert refusals("megatron", cp=8, cp_comm_type="a2a") == []
