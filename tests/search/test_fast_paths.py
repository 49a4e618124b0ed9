"""The planner's fast paths give the very numbers of the slow ones, bit for bit.

- ``timeline.simulate`` (cycle skipping, array sweeps) against the op-by-op walk,
  including with the thresholds lowered so that small pipelines take every path;
- ``schedule.peak_in_flight`` (stops once the steady state repeats) against the walk of
  every op;
- the memory caches and the planner's tabulation against ``estimate()``;
- the two lower bounds the planner prunes with: never above the real peak memory or
  step time.
"""

from __future__ import annotations

import random

import pytest

from planner.catalog import load_cluster, load_model
from planner.cost import memory as memory_module
from planner.cost import stage_work
from planner.cost import timeline as timeline_module
from planner.cost.memory import static_lower_bound
from planner.cost.schedule import peak_in_flight, peak_in_flight_walk, rank_op_arrays, rank_ops
from planner.cost.timeline import PipelineTimes, simulate
from planner.predict import estimate, memory_stages, prepare, step_lower_bound, time_report
from planner.search.candidates import enumerate_layouts
from planner.specs import WorkloadSpec


def _walk(times: PipelineTimes) -> tuple[float, tuple[float, ...]]:
    """Step and busy times by the plain walk (every op, in order)."""
    _starts, free = timeline_module._walk(times)
    durations = times.forward_s + times.backward_s
    compiled = timeline_module._compile(times.pp, times.vpp, times.microbatches)
    busy = []
    for ids in compiled.ids:
        total = 0.0
        for op in ids:
            total += durations[op // times.microbatches]
        busy.append(total)
    return max(free), tuple(busy)


def _random_times(rng: random.Random, pp: int, vpp: int, m: int) -> PipelineTimes:
    stages = pp * vpp
    style = rng.choice(("uniform", "noisy", "quarters", "edges"))
    if style == "quarters":  # exact binary fractions: ties in the rounding of sums
        forward = tuple(rng.choice((0.25, 0.5, 0.75, 1.0)) for _ in range(stages))
        backward = tuple(rng.choice((0.5, 1.0, 1.5, 2.0)) for _ in range(stages))
        return PipelineTimes(pp, vpp, m, forward, backward, rng.choice((0.0, 0.25)))
    base = rng.uniform(1e-3, 0.05)
    spread = 0.0 if style == "uniform" else rng.uniform(0.01, 0.3)
    forward = [base * (1 + rng.uniform(-spread, spread)) for _ in range(stages)]
    if style == "edges":  # a planner-like pipeline: light first stage, heavy last stage
        forward[0] *= 0.5
        forward[-1] *= 1.4
    backward = [f * rng.uniform(1.8, 3.2) for f in forward]
    lag = rng.choice((0.0, base * rng.uniform(0.001, 0.05)))
    return PipelineTimes(pp, vpp, m, tuple(forward), tuple(backward), lag)


@pytest.fixture
def low_thresholds(monkeypatch: pytest.MonkeyPatch):
    """Every fast path on small pipelines: thresholds lowered, shape caches emptied."""
    for name, value in (
        ("MIN_CYCLES_TO_SKIP", 4),
        ("MIN_OPS_TO_SKIP", 0),
        ("MIN_SWEEP_RANKS", 2),
        ("MIN_SWEEP_POSITIONS", 4),
        ("NUMPY_OPS", 0),
    ):
        monkeypatch.setattr(timeline_module, name, value)
    caches = (timeline_module._compile, timeline_module._cycles, timeline_module._sweep_plan)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


@pytest.mark.parametrize("seed", range(60))
def test_simulate_equals_the_walk_on_small_pipelines(seed: int, low_thresholds: None) -> None:
    rng = random.Random(seed)
    pp = rng.choice((1, 2, 3, 4, 5, 8))
    vpp = rng.choice((1, 1, 2, 3)) if pp > 1 else 1
    m = rng.randint(1, 120) if vpp == 1 else pp * rng.randint(1, 16)
    times = _random_times(rng, pp, vpp, m)
    timeline = simulate(times)
    step, busy = _walk(times)
    assert timeline.step_s == step
    assert timeline.busy_s == busy


@pytest.mark.parametrize("seed", range(20))
def test_one_rank_equals_the_walk(seed: int) -> None:
    """pp = 1 is not walked (its end is the busy time): the same floats as the walk, with
    durations that are not binary fractions, interleaved chunks and long schedules."""
    rng = random.Random(seed)
    vpp = rng.choice((1, 2, 4))
    times = _random_times(rng, 1, vpp, rng.randint(1, 3000))
    timeline = simulate(times)
    step, busy = _walk(times)
    assert timeline.step_s == step
    assert timeline.busy_s == busy
    assert timeline.idle_s == (0.0,)


def test_the_fast_paths_are_taken(low_thresholds: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparisons above test something: jumps and sweeps do happen."""
    taken = {"jumps": 0, "sweeps": 0}
    jump, sweep = timeline_module._jump, timeline_module._sweep

    def counting_jump(*args: object) -> tuple[int, int]:
        cycles, period = jump(*args)  # type: ignore[arg-type]
        taken["jumps"] += cycles > 0
        return cycles, period

    def counting_sweep(*args: object) -> bool:
        done = sweep(*args)  # type: ignore[arg-type]
        taken["sweeps"] += done
        return done

    monkeypatch.setattr(timeline_module, "_jump", counting_jump)
    monkeypatch.setattr(timeline_module, "_sweep", counting_sweep)
    rng = random.Random(7)
    for _ in range(30):
        pp, vpp = rng.choice(((2, 1), (4, 1), (4, 2), (8, 1), (3, 2)))
        times = _random_times(rng, pp, vpp, pp * rng.randint(16, 40))
        assert (simulate(times).step_s, simulate(times).busy_s) == _walk(times)
    assert taken["jumps"] > 0 and taken["sweeps"] > 0


@pytest.mark.parametrize(
    ("pp", "vpp", "m"),
    [(64, 1, 512), (32, 1, 1024), (16, 1, 512), (8, 2, 256), (4, 4, 256), (1, 1, 2048)],
)
def test_simulate_equals_the_walk_on_planner_sized_pipelines(pp: int, vpp: int, m: int) -> None:
    rng = random.Random(pp * 1000 + vpp * 100 + m)
    for _ in range(3):
        times = _random_times(rng, pp, vpp, m)
        timeline = simulate(times)
        assert (timeline.step_s, timeline.busy_s) == _walk(times)


@pytest.mark.parametrize("seed", range(40))
def test_peak_in_flight_equals_the_walk(seed: int) -> None:
    rng = random.Random(seed)
    pp = rng.choice((1, 2, 3, 4, 8, 16))
    vpp = rng.choice((1, 2, 4)) if pp > 1 else 1
    m = rng.randint(1, 300) if vpp == 1 else pp * rng.randint(1, 20)
    for rank in {0, pp - 1, rng.randrange(pp)}:
        weights = [rng.choice((rng.uniform(1, 1e9), 1 / 3, 0.1, 7.0)) for _ in range(vpp)]
        fast = peak_in_flight(rank=rank, pp=pp, vpp=vpp, microbatches=m, chunk_bytes=weights)
        assert fast == peak_in_flight_walk(
            rank=rank, pp=pp, vpp=vpp, microbatches=m, chunk_bytes=weights
        )
        backward, microbatch, chunk = rank_op_arrays(rank=rank, pp=pp, vpp=vpp, microbatches=m)
        ops = rank_ops(rank=rank, pp=pp, vpp=vpp, microbatches=m)
        assert [("B" if b else "F", int(mb), int(c)) for b, mb, c in zip(
            backward, microbatch, chunk, strict=True
        )] == [(op.phase, op.microbatch, op.chunk) for op in ops]  # fmt: skip


CASES = [
    ("llama-3.1-8b", 8, 4096, 64),
    ("llama-3.1-70b", 64, 4096, 256),
    ("mixtral-8x22b", 64, 4096, 128),
    ("deepseek-v3", 256, 4096, 512),
]


@pytest.mark.parametrize(("name", "gpus", "seq_len", "batch"), CASES)
def test_planner_numbers_equal_estimate(name: str, gpus: int, seq_len: int, batch: int) -> None:
    """A sample of candidates: the lean path (warm caches) reports what estimate() does
    (cold caches), and the pruning bounds stay below the real peak and step."""
    model, cluster = load_model(name), load_cluster("dgx-h100", gpus=gpus)
    workload = WorkloadSpec(seq_len=seq_len, global_batch=batch)
    layouts = enumerate_layouts(model, cluster, workload)
    sample = random.Random(gpus).sample(layouts, min(12, len(layouts)))
    lean = []
    for layout in sample:
        prepared = prepare(
            model=model, cluster=cluster, workload=workload, layout=layout, check=False
        )
        stages = memory_stages(prepared)
        timing = time_report(prepared)
        peak = max(stage.total for stage in stages)
        assert static_lower_bound(prepared.ctx) * (1 - 1e-9) <= peak
        assert step_lower_bound(prepared) * (1 - 1e-9) - 1e-6 <= timing.step_time_s
        lean.append((stages, timing))
    memory_module._node_cache.clear()
    memory_module._param_cache.clear()
    stage_work._stage_cache.clear()
    for layout, (stages, timing) in zip(sample, lean, strict=True):
        full = estimate(model=model, cluster=cluster, workload=workload, layout=layout)
        assert full.time == timing
        assert [s.total_gib for s in full.memory.stages] == [
            round(s.total / 2**30, 3) for s in stages
        ]
        assert full.memory.peak_gib == round(max(s.total for s in stages) / 2**30, 3)
