"""Framework profiles: the registry, and one declaration honoured by every reader.

A fifth, stub framework registered here (no pipeline parallelism, no interleaved or
uneven stages, ring or all-gather CP, no sharding) must be honoured by the search, the
refinement space, the cost model and the emitter registry without any other module
knowing its name. The built-in emitters must refuse, in their own words, every layout
their profile excludes (so the registry's generic refusal never preempts them).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from planner.catalog import load_cluster
from planner.emit import EmitError, EmitInput, EmittedFiles, emit, get_emitter, load_emitters
from planner.emit.base import profile_refusals
from planner.emit.base import register as register_emitter
from planner.emit.base import unregister as unregister_emitter
from planner.errors import SpecError
from planner.frameworks import (
    FrameworkProfile,
    framework_names,
    get_profile,
    register,
    unregister,
)
from planner.plan import PlanRequest, plan
from planner.predict import estimate
from planner.refine import RefineProblem, Space, framework_knobs, seeds_from_plans
from planner.search.candidates import enumerate_space
from planner.specs import ModelSpec, ParallelConfig, WorkloadSpec
from planner.specs.layout import resolve_data_parallel

STUB = FrameworkProfile(
    name="stub",
    description="a test framework without pipeline parallelism",
    state_layout="bf16",
    optimizer_impl="foreach",
    fused_kernels=False,
    allocator_pattern="ddp-buckets",
    axes=frozenset({"tp", "cp", "sequence_parallel"}),
    schedules=("1f1b",),
    uneven_stages="none",
    cp_algorithms=("p2p", "all_gather"),
    cp_algorithms_searched=("all_gather",),
    sharding_stages=frozenset({0}),
    overlaps=frozenset({"grad_reduce"}),
    offload="none",
    recompute_methods=("uniform",),
    sharding={"zero_stage": 0, "overlap_grad_reduce": True},
)
WORKLOAD = WorkloadSpec(seq_len=256, global_batch=16)


class StubEmitter:
    name = "stub"

    def emit(self, plan: EmitInput) -> EmittedFiles:
        return EmittedFiles(files=(("stub.txt", f"tp={plan.layout.tp}\n"),))


@pytest.fixture
def stub() -> Iterator[FrameworkProfile]:
    register(STUB)
    register_emitter(StubEmitter())
    yield STUB
    unregister("stub")
    unregister_emitter("stub")


def test_a_name_registered_twice_is_an_error(stub: FrameworkProfile) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(stub)


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(SpecError, match="known: megatron, deepspeed, torchtitan, pytorch"):
        get_profile("nemo")
    assert framework_names()[:4] == ["megatron", "deepspeed", "torchtitan", "pytorch"]


def test_searched_cp_algorithms_must_be_runnable() -> None:
    with pytest.raises(ValueError, match="searched CP algorithms"):
        FrameworkProfile(**{**vars(STUB), "cp_algorithms_searched": ("a2a",)})


def test_the_search_honours_the_stub(stub: FrameworkProfile, tiny_model: ModelSpec) -> None:
    cluster = load_cluster("dgx-h100", gpus=8)
    space = enumerate_space(tiny_model, cluster, WORKLOAD, framework="stub")
    megatron = enumerate_space(tiny_model, cluster, WORKLOAD, framework="megatron")
    assert space.layouts and any(layout.pp > 1 for layout in megatron.layouts)
    assert all(layout.pp == 1 and layout.vpp is None for layout in space.layouts)
    assert {layout.cp_comm_type for layout in space.layouts if layout.cp > 1} == {"all_gather"}
    assert all(layout.overlap_grad_reduce for layout in space.layouts)
    with pytest.raises(SpecError, match="stub runs no pp > 1"):
        enumerate_space(tiny_model, cluster, WORKLOAD, framework="stub", fixed={"pp": 2})


def test_the_cost_model_reads_the_stub(stub: FrameworkProfile, tiny_model: ModelSpec) -> None:
    cluster = load_cluster("dgx-h100", gpus=8)
    result = estimate(
        model=tiny_model, cluster=cluster, workload=WORKLOAD, layout=ParallelConfig(),
        framework="stub",
    )  # fmt: skip
    assert result.config.state_layout == "bf16"
    assert result.config.optimizer_impl == "foreach"


def test_the_refinement_space_honours_the_stub(
    stub: FrameworkProfile, tiny_model: ModelSpec
) -> None:
    # the CP algorithm and the overlaps are the exact search's, never refined
    assert framework_knobs(stub) == {"mbs", "recompute", "recompute_num_layers"}
    cluster = load_cluster("dgx-h100", gpus=8)
    result = plan(
        PlanRequest(model=tiny_model, cluster=cluster, workload=WORKLOAD, framework="stub", top_k=3)
    )
    problem = RefineProblem(
        model=tiny_model, cluster=cluster, workload=WORKLOAD, framework="stub",
        seeds=seeds_from_plans(result.plans),
    )  # fmt: skip
    domains = Space(problem).describe()
    assert not any(name.startswith(("vpp.", "split.")) for name in domains)
    assert "tp_comm_overlap" not in domains and "offload_optimizer_fraction.any" not in domains
    assert "cp_comm_type" not in domains


def test_a_refine_problem_names_a_registered_framework(tiny_model: ModelSpec) -> None:
    with pytest.raises(ValueError, match="unknown 'stub'"):
        RefineProblem(
            model=tiny_model, cluster=load_cluster("dgx-h100", gpus=8), workload=WORKLOAD,
            framework="stub", seeds=(),
        )  # fmt: skip


def _emit_input(model: ModelSpec, framework: str, **layout: object) -> EmitInput:
    return EmitInput(
        model=model, num_gpus=8, gpus_per_node=8, seq_len=WORKLOAD.seq_len,
        global_batch=WORKLOAD.global_batch, precision="bf16",
        layout=resolve_data_parallel(ParallelConfig(**layout), num_gpus=8),
        framework=framework, predictions={},
    )  # fmt: skip


def test_the_emitter_registry_honours_the_stub(
    stub: FrameworkProfile, tiny_model: ModelSpec
) -> None:
    assert emit(_emit_input(tiny_model, "stub", tp=2), format="stub").as_dict() == {
        "stub.txt": "tp=2\n"
    }
    with pytest.raises(EmitError, match="stub cannot express this plan: pp = 2: stub runs no "
                       "pipeline parallelism"):  # fmt: skip
        emit(_emit_input(tiny_model, "stub", pp=2), format="stub")
    with pytest.raises(EmitError, match="ZeRO stage 1: stub runs stages 0"):
        emit(_emit_input(tiny_model, "stub", zero_stage=1), format="stub")


LAYOUTS = [
    dict(zip(("tp", "cp", "pp", "vpp", "zero_stage", "cp_comm_type", "first"), values, strict=True))
    for values in itertools.product(
        (1, 2), (1, 2), (1, 2, 4), (None, 2), (0, 1, 3), ("p2p", "all_gather", "a2a"), (None, 3)
    )
]


@pytest.mark.parametrize("emitter", ["megatron", "deepspeed", "torchtitan"])
def test_builtin_emitters_refuse_all_their_profile_excludes(
    emitter: str, tiny_model: ModelSpec
) -> None:
    load_emitters()
    model = tiny_model.model_copy(update={"num_layers": 8})
    profile = get_profile(emitter)
    excluded = 0
    for fields in LAYOUTS:
        layout = {k: v for k, v in fields.items() if k != "first"}
        if fields["first"] is not None:
            layout.update(first_stage_layers=fields["first"], last_stage_layers=1)
        try:
            plan_input = _emit_input(model, emitter, sequence_parallel=fields["tp"] > 1, **layout)
        except (ValueError, SpecError):
            continue  # not a legal ParallelConfig
        if not profile_refusals(profile, plan_input):
            continue
        excluded += 1
        with pytest.raises(EmitError):  # by the emitter itself, in its own words
            get_emitter(emitter).emit(plan_input)
    assert excluded > 0
