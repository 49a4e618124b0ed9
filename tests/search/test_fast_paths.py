"""The planner's fast paths give the very numbers of the slow ones, bit for bit.

- (the pipeline timeline's fast paths against its walk: ``tests/cost/test_timeline_paths.py``)
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
from planner.cost import memory_nodes, stage_work
from planner.cost.memory import static_lower_bound
from planner.cost.schedule import peak_in_flight, peak_in_flight_walk, rank_op_arrays, rank_ops
from planner.predict import estimate, memory_stages, prepare, step_lower_bound, time_report
from planner.search.candidates import enumerate_layouts
from planner.specs import WorkloadSpec


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
    memory_nodes.stage_nodes.cache_clear()
    memory_nodes.stage_params.cache_clear()
    stage_work._stage_times.cache_clear()
    for layout, (stages, timing) in zip(sample, lean, strict=True):
        full = estimate(model=model, cluster=cluster, workload=workload, layout=layout)
        assert full.time == timing
        assert [s.total_gib for s in full.memory.stages] == [
            round(s.total / 2**30, 3) for s in stages
        ]
        assert full.memory.peak_gib == round(max(s.total for s in stages) / 2**30, 3)
