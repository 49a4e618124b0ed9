"""The budget's choice as each framework's setting: priced like the solver, the nearest
expressible setting that fits, and what was mapped."""

from __future__ import annotations

import random

from planner import ParallelConfig, WorkloadSpec, load_cluster, load_model
from planner.memplan import memplan
from planner.memplan.budget import MIB, BudgetChoice
from planner.memplan.settings import candidates, framework_setting, ranges, rank_chunks
from solvers import CHOICES, ActivationGroup, RecomputeOffloadProblem


def _choice(
    problem: RecomputeOffloadProblem,
    *,
    recompute: tuple[int, ...] = (),
    offload: tuple[int, ...] = (),
    layers: tuple[int, ...] | None = None,
) -> BudgetChoice:
    return BudgetChoice(
        status="optimal", added_s=0.0, peak_bytes=0.0, recompute_layers=recompute,
        offload_layers=offload, binding=None, host_link="test", solve_s=0.0, problem=problem,
        group_layers=layers if layers is not None else tuple(range(len(problem.groups))),
    )  # fmt: skip


def _random_problem(rng: random.Random) -> RecomputeOffloadProblem:
    events = rng.randint(4, 14)
    groups = []
    for _ in range(rng.randint(1, 6)):
        produced = rng.randrange(0, events - 1)
        groups.append(
            ActivationGroup(
                size=rng.randint(1, 9), produced=produced,
                used=rng.randrange(produced + 1, events),
                recompute_us=rng.choice([None, rng.randint(0, 20)]),
                transfer_us=rng.choice([None, rng.randint(0, 20)]),
            )
        )  # fmt: skip
    return RecomputeOffloadProblem(
        base=tuple(rng.randint(0, 5) for _ in range(events)),
        compute_us=tuple(rng.randint(0, 6) for _ in range(events)),
        groups=tuple(groups),
        budget=100,
    )


def test_evaluate_prices_every_choice_like_the_problem() -> None:
    """The O(groups + events) pricing equals the solver's own memory and objective."""
    rng = random.Random(18)
    for _ in range(300):
        problem = _random_problem(rng)
        picks = tuple(rng.choice(CHOICES) for _ in problem.groups)
        cost = _choice(problem).evaluate(lambda k, p=picks: p[k])  # type: ignore[misc]
        if not all(g.allows(c) for g, c in zip(problem.groups, picks, strict=True)):
            assert cost is None
            continue
        assert cost == (max(problem.memory(picks)) * MIB, problem.added_us(picks) / 1e6)


# A hand-solved stage of 4 layers (pp 1): layer k's group (10 GiB) is produced at event k
# and read at event 7 - k; every event runs 1 ms of compute; recomputing a layer costs
# 5 ms, offloading it 100 ms each way (mostly exposed). Kept, all four are alive at events
# 3 and 4 (40 GiB). Under 25 GiB at most one of layers 0-2 may stay (layer 3 lives only at
# its own two events), so the optimum recomputes two of them: 10 ms.
GIB_IN_MIB = 1024
FOUR = RecomputeOffloadProblem(
    base=(0,) * 8,
    compute_us=(1000,) * 8,
    groups=tuple(
        ActivationGroup(
            size=10 * GIB_IN_MIB, produced=k, used=7 - k, recompute_us=5000, transfer_us=100_000
        )
        for k in range(4)
    ),
    budget=25 * GIB_IN_MIB,
)
MODEL = load_model("llama-3.1-8b").model_copy(update={"num_layers": 4})
LAYOUT = ParallelConfig()


def _setting(emitter: str, choice: BudgetChoice, budget_gib: float = 25):
    return framework_setting(
        emitter, model=MODEL, layout=LAYOUT, choices=[(0, choice)], budget_bytes=budget_gib * 2**30
    )


def test_hand_solved_stage_megatron_takes_the_first_two_layers() -> None:
    # the solver's optimum here happened to be layers 1 and 2: Megatron's block form takes
    # the first N of a stage, layers 0 and 1, which fit at the same 10 ms
    setting = _setting("megatron", _choice(FOUR, recompute=(1, 2)))
    assert setting is not None and setting.fits
    assert (setting.recompute, setting.recompute_method, setting.recompute_num_layers) == (
        "full", "block", 2,
    )  # fmt: skip
    assert setting.offload_layers == 0  # 2 offloaded layers fit too, but cost 300+ ms
    assert (setting.peak_gib, setting.added_time_s) == (20.0, 0.01)
    assert setting.mapped is not None and "stage 0: recompute 1-2" in setting.mapped
    same = _setting("megatron", _choice(FOUR, recompute=(0, 1)))
    assert same is not None and same.mapped is None


def test_hand_solved_stage_every_kth_block_does_not_fit_so_torchtitan_recomputes_all() -> None:
    # every 4th (layer 3), 3rd (layer 2) or 2nd (layers 1, 3) block leaves two of layers
    # 0-2 alive at event 3: 30 GiB > 25; full recomputation: 10 GiB, 20 ms
    for emitter in ("torchtitan-toml", "torchtitan", "deepspeed"):
        setting = _setting(emitter, _choice(FOUR, recompute=(0, 1)))
        assert setting is not None and setting.fits, emitter
        assert setting.recompute == "full" and setting.every_nth_layer is None
        assert setting.recompute_method is None
        assert (setting.peak_gib, setting.added_time_s) == (10.0, 0.02)


def test_every_kth_block_is_taken_where_it_fits() -> None:
    # 32 GiB: every 3rd block (layer 2) leaves layers 0, 1 and 3 at event 3: 30 GiB, 5 ms
    # (every 2nd fits too, at 10 ms)
    setting = _setting("torchtitan-toml", _choice(FOUR, recompute=(1,)), budget_gib=32)
    assert setting is not None and setting.fits and setting.every_nth_layer == 3
    assert 'selective_ac_option = "3"' in setting.flags
    assert (setting.peak_gib, setting.added_time_s) == (30.0, 0.005)


def test_nothing_fits_gives_the_most_memory_saving_setting_not_fitting() -> None:
    # 5 GiB: every group is on the GPU at its own two events (10 GiB); recomputing layers
    # 0-2 reaches that, and layer 3's recomputation would only cost time
    setting = _setting("megatron", _choice(FOUR, recompute=(0, 1, 2)), budget_gib=5)
    assert setting is not None and not setting.fits
    assert setting.recompute_num_layers == 3 and setting.peak_gib == 10.0


def test_megatron_offers_activation_offload_only_without_pipeline_parallelism() -> None:
    flat = [c.flags for c in candidates("megatron", model=MODEL, layout=LAYOUT)]
    assert "--cpu-offloading-num-layers 3" in flat
    assert "--cpu-offloading-num-layers 4" not in flat  # megatron-core: fewer than num_layers
    piped = ParallelConfig(pp=2)
    assert not any(
        "offloading" in c.flags for c in candidates("megatron", model=MODEL, layout=piped)
    )


def test_rank_chunks_follow_the_interleaved_order() -> None:
    model = load_model("llama-3.1-8b")
    layout = ParallelConfig(pp=2, vpp=2)
    assert [chunk[0] for chunk in rank_chunks(model, layout, 1)] == [8, 24]
    assert ranges((0, 1, 2, 5, 7, 8)) == "0-2, 5, 7-8" and ranges(()) == ""


def test_memplan_budget_gives_a_fitting_setting_per_framework() -> None:
    kwargs = {
        "model": load_model("llama-3.1-8b"),
        "cluster": load_cluster("dgx-h100", nodes=1),
        "workload": WorkloadSpec(seq_len=8192, global_batch=8),
        "layout": ParallelConfig(tp=4, pp=2),
        "time_limit_s": 3.0,
    }
    free = max(s.peaks.live_gib for s in memplan(**kwargs).stages)
    plan = memplan(**kwargs, budget_gib=free - 4.0)
    assert sorted(plan.framework_settings) == [
        "deepspeed", "megatron", "torchtitan", "torchtitan-toml",
    ]  # fmt: skip
    for emitter, setting in plan.framework_settings.items():
        assert setting.fits and setting.peak_gib <= free - 4.0, emitter
        stage_times = [s.budget.added_time_s for s in plan.stages if s.budget]
        assert setting.added_time_s >= max(stage_times) - 1e-3  # never cheaper than the optimum
    megatron = plan.framework_settings["megatron"]
    assert megatron.offload_layers == 0  # pp 2: megatron-core has no activation offload
    assert megatron.recompute == "full" and megatron.recompute_method == "block"
    assert plan.model_dump(mode="json")["framework_settings"]["megatron"]["fits"] is True


def test_no_setting_where_a_stage_has_no_fitting_choice() -> None:
    unsolved = BudgetChoice("infeasible", None, None, (), (), "budget", "test", 0.0)
    both = [(0, _choice(FOUR, recompute=(0, 1))), (1, unsolved)]
    setting = framework_setting(
        "megatron", model=MODEL, layout=LAYOUT, choices=both, budget_bytes=25 * 2**30
    )
    assert setting is None
