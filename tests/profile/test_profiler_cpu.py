"""The profiler end to end on the CPU (tiny grid), in one process and under torchrun (gloo).

Needs torch (``autopar[profile]``); CI's main environment has none, so the module is
skipped there. Timings on a CPU mean nothing; these tests check what is recorded and that
the reader gives back what was measured.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip(
    "torch", reason="the profiler needs torch (autopar[profile]); CI's main venv has none"
)

from planner.cost.profile_rates import ProfileRates, load_profile  # noqa: E402
from planner.profile.grid import build_grid  # noqa: E402

TORCHRUN_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def quick_profile(tmp_path_factory) -> tuple[Path, str]:
    """One quick CPU run through the real command line (in a subprocess: fresh torch state)."""
    out = tmp_path_factory.mktemp("profile") / "profile.json"
    done = subprocess.run(
        [sys.executable, "-m", "planner", "profile", "--out", str(out), "--quick",
         "--allow-cpu", "--json"],
        capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


def test_quick_cpu_run_records_provenance_and_settings(quick_profile) -> None:
    out, stdout = quick_profile
    profile = load_profile(out)
    prov = profile.provenance
    assert prov.device == "cpu" and prov.gpu_name is None and prov.gpu_count == 0
    assert prov.torch == torch.__version__ and prov.world_size == 1
    assert prov.command[1:] == ("profile", "--out", str(out), "--quick", "--allow-cpu", "--json")
    assert profile.settings.timer == "perf_counter" and profile.settings.quick
    summary = json.loads(stdout)
    assert summary["out"] == str(out) and summary["elapsed_s"] > 0


def test_quick_cpu_run_measures_every_point(quick_profile) -> None:
    profile = load_profile(quick_profile[0])
    grid = build_grid(quick=True, gemm_dtypes=("bf16",), world_size=1)
    assert len(profile.gemm) == len(grid.gemm)
    assert len(profile.attention) == len(grid.attention)
    assert len(profile.memory) == len(grid.memory)
    assert profile.collectives == ()
    reasons = {(s.section, s.what): s.reason for s in profile.skipped}
    assert reasons[("gemm", "fp8 products")] == "fp8 products are measured on CUDA GPUs only"
    assert "torchrun" in reasons[("collectives", "every collective")]
    for row in profile.gemm:
        t = row.time
        assert 0 < t.min_s <= t.p10_s <= t.median_s <= t.p90_s <= t.max_s and t.repeats >= 3
    assert {row.gqa for row in profile.attention} <= {"native", "none", "repeat_kv"}
    assert any(row.gqa == "native" for row in profile.attention)  # CPU flash takes enable_gqa


def test_reader_gives_back_the_measurements(quick_profile) -> None:
    profile = load_profile(quick_profile[0])
    rates = ProfileRates.of(profile)
    by_shape: dict[tuple[int, int, int], list[float]] = {}
    for row in profile.gemm:
        by_shape.setdefault((row.m, row.n, row.k), []).append(math.log(row.flops_per_s))
    for (m, n, k), logs in by_shape.items():
        found = rates.gemm(m, n, k, "bf16")
        assert found.method == "measured shape"
        assert math.isclose(found.value, math.exp(sum(logs) / len(logs)), rel_tol=1e-9)
    row = profile.attention[0]
    found = rates.attention(
        seq_len=row.seq_len, heads=row.heads, kv_heads=row.kv_heads, head_dim=row.head_dim,
        causal=row.causal,
    )  # fmt: skip
    assert math.isclose(found.forward_flops_per_s, row.forward_flops / row.forward.median_s)
    assert math.isclose(found.backward_flops_per_s, row.backward_flops / row.backward.median_s)
    copy = next(r for r in profile.memory if r.op == "copy")
    assert math.isclose(rates.memory_bandwidth(copy.bytes), copy.bytes_per_s)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_no_gpu_without_allow_cpu_is_refused(run_cli, tmp_path: Path) -> None:
    result = run_cli("profile", "--out", str(tmp_path / "p.json"), "--quick")
    assert result.exit_code == 2
    assert result.stderr.startswith("autopar: error: autopar profile needs a CUDA GPU")
    assert "--allow-cpu" in result.stderr


def test_time_limit_skips_the_rest_and_still_writes(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    result = run_cli(
        "profile", "--out", str(out), "--quick", "--allow-cpu", "--time-limit", "0.000001",
        "--sections", "memory,gemm",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    profile = load_profile(out)
    assert profile.gemm == () and profile.memory == ()
    limited = {s.section for s in profile.skipped if "time limit" in s.reason}
    assert limited == {"memory", "gemm"}


def test_collectives_under_torchrun_with_gloo(tmp_path: Path) -> None:
    out = tmp_path / "collectives.json"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         "2", "-m", "planner", "profile", "--out", str(out), "--quick", "--allow-cpu",
         "--sections", "collectives"],
        capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    profile = load_profile(out)
    assert profile.provenance.world_size == 2
    assert profile.gemm == () and profile.attention == ()
    rows = {(r.op, r.bytes): r for r in profile.collectives}
    ops = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv")
    assert set(rows) == {(op, size) for op in ops for size in (2**10, 2**14)}
    assert all(r.group_size == 2 and r.backend == "gloo" for r in rows.values())
    assert all(r.scope == "intra_node" for r in rows.values())
    rates = ProfileRates.of(profile)
    assert math.isclose(
        rates.collective_time("all_gather", 2, 2**14), rows[("all_gather", 2**14)].time.median_s
    )
