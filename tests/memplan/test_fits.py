"""``--memplan`` on an estimate: simulated peaks beside the analytical one, the fits basis."""

from __future__ import annotations

from functools import cache

from planner import ParallelConfig, WorkloadSpec, load_cluster, load_model
from planner.memplan.fits import VALIDATED_PATTERNS, with_simulated
from planner.memplan.snapshot_runs import MEGATRON_SNAPSHOTS, own_trace_peak, snapshot_runs
from planner.predict import Estimate, Prepared, assemble, estimate, memory_stages, prepare
from planner.predict import time_report as timing


@cache
def _case(framework: str, gpus: int, tp: int, seq: int) -> tuple[Prepared, Estimate]:
    prepared = prepare(
        model=load_model("llama-3.1-8b"),
        cluster=load_cluster("dgx-h100", gpus=gpus),
        workload=WorkloadSpec(seq_len=seq, global_batch=gpus // tp),
        layout=ParallelConfig(tp=tp),
        framework=framework,  # type: ignore[arg-type]
    )
    plain = assemble(prepared, memory_stages(prepared), timing(prepared))
    return prepared, plain


def test_default_memory_section_has_no_memplan_fields() -> None:
    prepared, plain = _case("pytorch", 2, 2, 4096)
    data = plain.model_dump(mode="json")["memory"]
    assert "simulated" not in data and "fits_basis" not in data
    direct = estimate(
        model=prepared.model, cluster=prepared.cluster, workload=prepared.workload,
        layout=ParallelConfig(tp=2), framework="pytorch",
    )  # fmt: skip
    assert direct.model_dump_json() == plain.model_dump_json()


def test_plain_pytorch_fits_on_the_simulation_where_the_constant_share_says_no() -> None:
    # llama-3.1-8b, tp 2, seq 4096 on two H100s: the analytical peak (allocated + 8.6%
    # fragmentation) is 79.31 GiB of 79.18, the simulated allocator reserves about 74.7
    prepared, plain = _case("pytorch", 2, 2, 4096)
    assert not plain.memory.fits
    simulated = with_simulated(plain, prepared, time_limit_s=1.0)
    memory = simulated.memory
    assert memory.simulated is not None and len(memory.simulated) == 1
    peak = memory.simulated[0]
    outside = prepared.ctx.reserve.non_allocator_bytes / 2**30
    assert abs(peak.reserved_total_gib - (peak.allocator_gib + outside)) < 0.002
    assert peak.live_gib <= peak.planned_gib and peak.live_gib <= peak.allocator_gib
    assert peak.reserved_total_gib < memory.capacity_gib < memory.peak_gib
    assert memory.fits and memory.fits_basis is not None
    assert memory.fits_basis.startswith("Fits decided on the allocator simulation")
    # everything else in the memory section is the analytical model's, unchanged
    assert memory.peak_gib == plain.memory.peak_gib and memory.stages == plain.memory.stages
    assert simulated.time == plain.time and simulated.config == plain.config


def test_megatron_keeps_the_analytical_verdict_and_says_so() -> None:
    assert "contiguous-grad-buffer" not in VALIDATED_PATTERNS
    prepared, plain = _case("megatron", 8, 1, 8192)
    memory = with_simulated(plain, prepared, time_limit_s=1.0).memory
    assert memory.fits == plain.memory.fits
    assert memory.fits_basis is not None
    assert memory.fits_basis.startswith("Fits decided on the analytical model")
    assert "contiguous-grad-buffer" in memory.fits_basis
    assert "autopar's trace of the same steps misses their reserved peak" in memory.fits_basis
    data = memory.model_dump(mode="json")
    assert data["simulated"][0]["stage"] == 0 and data["fits_basis"] == memory.fits_basis


def test_megatron_stays_off_the_simulation_because_its_own_trace_misses() -> None:
    # The verdict for a layout can only simulate autopar's own trace of its step. On the
    # fourteen measured Megatron-Core steps that trace's simulated reserved peak is off by
    # more than the 3% the simulation is trusted at (the recorded sequences themselves
    # are reproduced exactly: test_allocator), so megatron is not a validated pattern.
    # If the trace improves to within 3% on every run, this test fails: then validate it.
    runs = snapshot_runs(MEGATRON_SNAPSHOTS)
    assert len(runs) == 14
    errors = {run.name: own_trace_peak(run).error for run in runs}
    assert max(abs(e) for e in errors.values()) > 0.03
    assert "contiguous-grad-buffer" not in VALIDATED_PATTERNS
    # the trace is optimistic on every run: its live peak is under the measured one
    assert all(e < 0 for e in errors.values())
