"""The one-pass walk of a pipeline schedule (``one_pass.flat_finish``) gives the op-by-op
walk's floats, bit for bit, and ``simulate`` takes it where it is the cheaper path."""

from __future__ import annotations

import random

import pytest

from planner.cost._timeline import one_pass
from planner.cost._timeline.walk import PipelineTimes, walk
from planner.cost.timeline import simulate


def _times(rng: random.Random, pp: int, vpp: int, m: int) -> PipelineTimes:
    stages = pp * vpp
    if rng.random() < 0.3:  # exact binary fractions: ties between a rank and its input
        forward = tuple(rng.choice((0.25, 0.5, 0.75, 1.0)) for _ in range(stages))
        backward = tuple(rng.choice((0.5, 1.0, 1.5, 2.0)) for _ in range(stages))
        return PipelineTimes(pp, vpp, m, forward, backward, rng.choice((0.0, 0.25)))
    base = rng.uniform(1e-4, 0.05)
    forward = tuple(base * rng.uniform(0.5, 1.5) for _ in range(stages))
    backward = tuple(f * rng.uniform(1.8, 3.2) for f in forward)
    return PipelineTimes(pp, vpp, m, forward, backward, rng.choice((0.0, base * 0.02)))


@pytest.mark.parametrize("seed", range(80))
def test_one_pass_equals_the_walk(seed: int) -> None:
    rng = random.Random(seed)
    pp = rng.choice((1, 2, 3, 4, 6, 8))
    vpp = rng.choice((1, 1, 2, 4)) if pp > 1 else 1
    m = rng.randint(1, 300) if vpp == 1 else pp * rng.randint(1, 40)
    times = _times(rng, pp, vpp, m)
    _starts, free = walk(times)
    assert one_pass.flat_finish(times) == free


def test_simulate_takes_one_pass_for_small_schedules(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's schedules (up to a few thousand ops) go through the one pass, and
    ``simulate`` still equals the walk there; large ones still skip cycles."""
    passes: list[int] = []
    flat = one_pass.flat_finish

    def counting(times: PipelineTimes) -> list[float]:
        passes.append(times.microbatches)
        return flat(times)

    monkeypatch.setattr(one_pass, "flat_finish", counting)
    rng = random.Random(3)
    for pp, vpp, m in ((2, 1, 512), (4, 2, 256), (2, 1, 64), (8, 2, 128), (2, 1, 8192)):
        times = _times(rng, pp, vpp, m)
        _starts, free = walk(times)
        assert simulate(times).step_s == max(free)
    assert passes == [512, 256, 64, 128]
