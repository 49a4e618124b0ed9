"""Every faster path of the pipeline timeline gives the reference walk's floats, bit for bit.

- each path alone against ``walk`` (the walk in pieces, the cycle skipping, the sweep;
  the one pass in ``test_timeline_one_pass.py``), with the thresholds lowered so that
  small pipelines take them;
- ``simulate``, which picks a path, against the walk on small and planner-sized pipelines,
  and a check that the comparisons test something (jumps and sweeps do happen).
"""

from __future__ import annotations

import random

import pytest

from planner.cost._timeline import cycles, skip, sweep
from planner.cost._timeline import walk as walk_module
from planner.cost._timeline.walk import PipelineTimes, Run, compile_schedule, walk
from planner.cost.timeline import simulate


def _walk(times: PipelineTimes) -> tuple[float, tuple[float, ...]]:
    """Step and busy times by the plain walk (every op, in order)."""
    _starts, free = walk(times)
    durations = times.forward_s + times.backward_s
    compiled = compile_schedule(times.pp, times.vpp, times.microbatches)
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


def _small_pipeline(rng: random.Random) -> PipelineTimes:
    pp, vpp = rng.choice(((2, 1), (3, 1), (4, 1), (4, 2), (5, 1), (8, 1), (3, 2), (8, 3)))
    return _random_times(rng, pp, vpp, pp * rng.randint(8, 40))


@pytest.fixture
def low_thresholds(monkeypatch: pytest.MonkeyPatch):
    """Every fast path on small pipelines: thresholds lowered, shape caches emptied."""
    for module, name, value in (
        (cycles, "MIN_CYCLES_TO_SKIP", 4),
        (cycles, "MIN_OPS_TO_SKIP", 0),
        (sweep, "MIN_SWEEP_RANKS", 2),
        (sweep, "MIN_SWEEP_POSITIONS", 4),
        (walk_module, "NUMPY_OPS", 0),
    ):
        monkeypatch.setattr(module, name, value)
    caches = (cycles.shape_of, cycles.steady_cycles, sweep.sweep_plan)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


@pytest.mark.parametrize("seed", range(20))
def test_the_walk_in_pieces_equals_the_walk(seed: int, low_thresholds: None) -> None:
    """``Run`` advanced a few positions at a time, then to the end: the walk's ends."""
    rng = random.Random(seed)
    times = _small_pipeline(rng)
    compiled = compile_schedule(times.pp, times.vpp, times.microbatches)
    run = Run(times, compiled)
    for stop in sorted(rng.sample(range(len(compiled.ids[0])), 3)):
        run.advance([min(stop, len(ids)) for ids in compiled.ids])
    assert run.finish() == walk(times)[1]


@pytest.mark.parametrize("seed", range(30))
def test_skipping_cycles_equals_the_walk(seed: int, low_thresholds: None) -> None:
    rng = random.Random(seed)
    steady = None
    while steady is None:  # a pipeline with cycles to skip
        times = _small_pipeline(rng)
        steady = cycles.steady_for(times)
    compiled = compile_schedule(times.pp, times.vpp, times.microbatches)
    assert skip.skip_finish(Run(times, compiled), steady) == walk(times)[1]


@pytest.mark.parametrize("seed", range(30))
def test_sweeping_equals_the_walk(seed: int, low_thresholds: None) -> None:
    rng = random.Random(seed)
    plan = None
    while plan is None:  # a pipeline with positions to sweep
        times = _small_pipeline(rng)
        plan = sweep.sweep_plan(times.pp, times.vpp, times.microbatches)
    run = Run(times, compile_schedule(times.pp, times.vpp, times.microbatches))
    assert sweep.sweep(run, plan)
    assert run.finish() == walk(times)[1]


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
    jump, sweep_positions = skip.jump, sweep.sweep

    def counting_jump(*args: object) -> tuple[int, int]:
        skipped, period = jump(*args)  # type: ignore[arg-type]
        taken["jumps"] += skipped > 0
        return skipped, period

    def counting_sweep(*args: object) -> bool:
        done = sweep_positions(*args)  # type: ignore[arg-type]
        taken["sweeps"] += done
        return done

    monkeypatch.setattr(skip, "jump", counting_jump)
    monkeypatch.setattr(sweep, "sweep", counting_sweep)
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
