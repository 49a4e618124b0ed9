"""plan()/search(): the solver's pick equals the brute-force minimum of estimate().

The reference is independent of CP-SAT and of the planner's tabulation (its bounds and
caches): every candidate of ``enumerate_layouts`` is estimated and the fastest that fits
(peak + headroom <= capacity) is taken by ``min``. The split solver adds candidates that
the enumeration does not have, so those instances compare without it; with it, the best
is never slower.
"""

from __future__ import annotations

import random
import statistics
import time

import pytest

from planner.catalog import load_cluster, load_model
from planner.errors import TimeLimitReached
from planner.plan import Infeasible, PlanRequest, PlanResult, plan
from planner.predict import estimate
from planner.search import tabulate as tabulate_module
from planner.search.candidates import enumerate_layouts
from planner.search.driver import search
from planner.specs import ModelSpec, WorkloadSpec
from planner.specs.layout import layout_violations

INSTANCES = 100


def _random_instance(seed: int) -> tuple[ModelSpec, int, WorkloadSpec, bool]:
    rng = random.Random(seed)
    heads = rng.choice((4, 8))
    model = ModelSpec(
        name=f"random-{seed}",
        num_layers=rng.choice((2, 3, 4, 6)),
        hidden_size=heads * rng.choice((16, 32)),
        num_attention_heads=heads,
        num_kv_heads=rng.choice([k for k in (1, 2, 4, 8) if heads % k == 0]),
        ffn_hidden_size=rng.choice((96, 128, 256)),
        vocab_size=rng.choice((1000, 32000)),
        max_position_embeddings=4096,
        rope_theta=10000.0,
    )
    gpus = rng.choice((1, 2, 4, 8, 16))
    workload = WorkloadSpec(seq_len=rng.choice((128, 256, 384)), global_batch=rng.choice((8, 16)))
    return model, gpus, workload, rng.random() < 0.5


def _brute_force(
    model, cluster, workload, *, framework: str = "megatron"
) -> list[tuple[float, float, float]]:
    """(step time, peak, capacity) of every candidate, by estimate() alone."""
    rows = []
    for layout in enumerate_layouts(model, cluster, workload, max_mbs=2, framework=framework):
        result = estimate(
            model=model, cluster=cluster, workload=workload, layout=layout, framework=framework
        )
        rows.append((result.time.step_time_s, result.memory.peak_gib, result.memory.capacity_gib))
    return rows


@pytest.mark.parametrize("seed", range(INSTANCES))
def test_best_equals_brute_force_and_plans_are_legal(seed: int) -> None:
    model, gpus, workload, squeeze = _random_instance(seed)
    cluster = load_cluster("dgx-h100", gpus=gpus)
    rows = _brute_force(model, cluster, workload)
    # half the instances leave room for only the leaner half of the layouts, so that
    # memory binds and the fastest layout is often not allowed
    capacity = rows[0][2]
    headroom = round(capacity - statistics.median(r[1] for r in rows), 3) if squeeze else 0.0
    reference = min(t for t, peak, cap in rows if peak + headroom <= cap)
    result = search(
        model,
        cluster,
        workload,
        headroom_gib=headroom,
        top_k=3,
        max_mbs=2,
        split_solver=False,
        risk="neutral",  # the solver's throughput order, which the brute force checks
    )
    assert result.search.optimal is True
    assert result.plans[0].estimate.time.step_time_s == reference
    # the top 3 are the 3 fastest that fit (ties in step time broken by peak memory)
    fitting = sorted(t for t, peak, cap in rows if peak + headroom <= cap)
    assert [p.estimate.time.step_time_s for p in result.plans] == fitting[:3]
    for entry in result.plans:
        config = entry.estimate.config
        assert entry.estimate.memory.peak_gib + headroom <= entry.estimate.memory.capacity_gib
        layout = config.layout
        assert (
            layout_violations(model=model, cluster=cluster, workload=workload, layout=layout) == []
        )


FRAMEWORKS = ("deepspeed", "torchtitan", "pytorch")


@pytest.mark.parametrize("seed", range(24))
def test_best_equals_brute_force_under_every_framework(seed: int) -> None:
    """The same twin under the other profiles: their axes, CP algorithms, refusals and
    the overlaps set by rule change the candidates, never the exactness."""
    framework = FRAMEWORKS[seed % len(FRAMEWORKS)]
    model, gpus, workload, _ = _random_instance(1000 + seed)
    cluster = load_cluster("dgx-h100", gpus=gpus)
    rows = _brute_force(model, cluster, workload, framework=framework)
    fitting = sorted(t for t, peak, cap in rows if peak <= cap)
    result = search(
        model, cluster, workload, framework=framework, top_k=3, max_mbs=2, split_solver=False,
        headroom_gib=0.0, risk="neutral",
    )  # fmt: skip
    assert result.search.optimal is True
    assert [p.estimate.time.step_time_s for p in result.plans] == fitting[:3]


def test_top_k_ordering_and_plan_result_shape(tiny_model: ModelSpec) -> None:
    cluster = load_cluster("dgx-h100", gpus=4)
    workload = WorkloadSpec(seq_len=128, global_batch=8)
    result = plan(
        PlanRequest(model=tiny_model, cluster=cluster, workload=workload, top_k=4, risk="neutral")
    )
    assert isinstance(result, PlanResult)
    times = [entry.time.step_time_s for entry in result.plans]
    assert len(times) == 4 and times == sorted(times)
    assert len({e.config.model_dump_json() for e in result.plans}) == 4
    data = result.model_dump(mode="json")
    assert set(data) == {"plans", "search"}
    assert set(data["plans"][0]) == {"config", "memory", "time", "explanation", "uncertainty"}
    assert data["search"]["solver"] == "cp-sat"
    assert data["search"]["layouts_feasible"] <= data["search"]["layouts_considered"]
    # the blocks are exactly what estimate() gives for that layout
    best = result.plans[0]
    layout = best.config.layout
    again = estimate(model=tiny_model, cluster=cluster, workload=workload, layout=layout)
    assert again.model_dump() == {
        k: data_k
        for k, data_k in best.model_dump().items()
        if k not in ("explanation", "uncertainty")
    }
    assert "runner-up" in best.explanation


def test_infeasible_names_memory_and_a_suggestion() -> None:
    model = load_model("llama-3.1-70b")
    cluster = load_cluster("dgx-h100", gpus=1)
    with pytest.raises(Infeasible) as raised:
        plan(
            PlanRequest(
                model=model, cluster=cluster, workload=WorkloadSpec(seq_len=4096, global_batch=8)
            )
        )
    message = str(raised.value)
    assert "memory" in message and "GiB over" in message and "stage 0" in message
    assert "more GPUs" in message


def test_headroom_larger_than_capacity_is_infeasible(tiny_model: ModelSpec) -> None:
    cluster = load_cluster("dgx-h100", gpus=1)
    with pytest.raises(Infeasible, match="less headroom"):
        plan(
            PlanRequest(
                model=tiny_model,
                cluster=cluster,
                workload=WorkloadSpec(seq_len=128, global_batch=8),
                headroom_gib=100.0,
            )
        )


class _ClockRunningOutAfter:
    """``time`` for planner.search.tabulate: the clock reads 0 for ``calls`` looks, then
    jumps a day ahead (the search's deadline, set from the real clock, has passed)."""

    def __init__(self, calls: int) -> None:
        self.calls = calls

    def perf_counter(self) -> float:
        self.calls -= 1
        return 0.0 if self.calls >= 0 else time.perf_counter() + 86400.0


def test_time_limit_returns_best_found_labelled_not_optimal(
    tiny_model: ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tabulate_module, "time", _ClockRunningOutAfter(calls=3))
    cluster = load_cluster("dgx-h100", gpus=8)
    workload = WorkloadSpec(seq_len=128, global_batch=8)
    result = search(tiny_model, cluster, workload, time_limit_s=60)
    assert result.search.optimal is False
    assert result.search.layouts_evaluated < result.search.layouts_legal
    assert result.plans


def test_time_limit_with_nothing_found_says_so(tiny_model: ModelSpec) -> None:
    cluster = load_cluster("dgx-h100", gpus=8)
    workload = WorkloadSpec(seq_len=128, global_batch=8)
    with pytest.raises(TimeLimitReached, match="before any layout that fits was found"):
        search(tiny_model, cluster, workload, time_limit_s=1e-9)


def test_time_limit_stops_a_search_where_nothing_fits() -> None:
    """A 170T-parameter model on 128 GPUs: nothing fits, and costing every candidate takes
    many times the limit; the search stops at its limit (plus the solver's second), with
    nothing found and no infeasibility proof."""
    big = ModelSpec(
        name="big", num_layers=1024, hidden_size=131072, num_attention_heads=2048,
        ffn_hidden_size=262144, vocab_size=128256, max_position_embeddings=8192,
        rope_theta=1e4,
    )  # fmt: skip
    cluster = load_cluster("dgx-h100", nodes=16)
    workload = WorkloadSpec(seq_len=4096, global_batch=256)
    started = time.perf_counter()
    with pytest.raises(TimeLimitReached, match="candidate layouts costed"):
        plan(PlanRequest(model=big, cluster=cluster, workload=workload, time_limit_s=0.3))
    assert time.perf_counter() - started < 0.3 + 2.0


@pytest.mark.parametrize("seed", range(0, INSTANCES, 10))
def test_split_solver_never_slower_and_its_plans_are_exact(seed: int) -> None:
    model, gpus, workload, _ = _random_instance(seed)
    cluster = load_cluster("dgx-h100", gpus=gpus)
    plain = search(model, cluster, workload, top_k=3, max_mbs=2, split_solver=False, risk="neutral")
    split = search(model, cluster, workload, top_k=3, max_mbs=2, risk="neutral")
    assert split.plans[0].estimate.time.step_time_s <= plain.plans[0].estimate.time.step_time_s
    for entry in split.plans:
        config = entry.estimate.config
        layout = config.layout
        again = estimate(model=model, cluster=cluster, workload=workload, layout=layout)
        assert again.model_dump() == entry.estimate.model_dump()
        assert again.memory.fits


def test_the_split_solver_unevens_a_heavy_last_stage() -> None:
    """Llama 3.1 8B on 8 GPUs: the output layer (128K vocabulary) makes the last stage of
    an even two-stage split the slow one; the split solver moves layers off it."""
    result = search(
        load_model("llama-3.1-8b"),
        load_cluster("dgx-h100", gpus=8),
        WorkloadSpec(seq_len=4096, global_batch=64),
        fixed={"pp": 2, "tp": 1, "cp": 1, "vpp": None},
        top_k=3,
        risk="neutral",
    )
    assert result.search.layouts_split_solver >= 1
    best = result.plans[0].estimate.config
    assert best.first_stage_layers > best.last_stage_layers


def test_nothing_fits_with_pipelines_still_explains() -> None:
    """405B on 8 GPUs: every layout is over (most by their model states alone, so the
    split solver starts from layouts the bound rejected); the verdict names the closest."""
    with pytest.raises(Infeasible, match=r"no layout fits in memory.*GiB over"):
        plan(
            PlanRequest(
                model=load_model("llama-3.1-405b"),
                cluster=load_cluster("dgx-h100", gpus=8),
                workload=WorkloadSpec(seq_len=4096, global_batch=8),
            )
        )
