"""The profile reader: interpolation over shapes, edge clamping, gaps, files and lookup."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from synthetic_profiles import (
    attention_law,
    collective_row,
    gemm_law,
    gemm_row,
    make_profile,
    memory_row,
    provenance,
    timing,
)

from planner.cost.profile_rates import (
    PROFILE_FILE,
    ProfileDataError,
    ProfileGapError,
    ProfileRates,
    find_profile,
    load_profile,
    profiles_in,
)
from planner.cost.profile_schema import KernelProfile


def close(a: float, b: float, rel: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel)


def test_gemm_at_grid_points_is_the_measurement(synthetic) -> None:
    rates = ProfileRates.of(synthetic())
    for m, n, k in [(256, 256, 256), (1024, 4096, 512), (4096, 4096, 4096)]:
        found = rates.gemm(m, n, k, "bf16")
        assert close(found.value, gemm_law(m, n, k))
        assert found.method == "measured shape"


def test_gemm_between_grid_points_is_log_multilinear(synthetic) -> None:
    # the law is linear in (log m, log n, log k), so multilinear interpolation in log
    # space reproduces it exactly off the grid (3000 lies between 2048 and 4096, etc.)
    rates = ProfileRates.of(synthetic())
    for m, n, k in [(3000, 700, 1500), (300, 3333, 999), (2500, 2500, 2500)]:
        found = rates.gemm(m, n, k)
        assert close(found.value, gemm_law(m, n, k), rel=1e-9), (m, n, k)
        assert found.method == "grid"


def test_gemm_clamps_to_the_nearest_grid_edge(synthetic) -> None:
    rates = ProfileRates.of(synthetic())
    beyond = rates.gemm(100_000, 3000, 64)
    assert close(beyond.value, gemm_law(4096, 3000, 256))
    assert beyond.method == "grid (clamped at its edge)"


def test_gemm_model_shape_line_interpolates_in_tokens(synthetic) -> None:
    # a model's weight shape (n=6144, k=4096) measured at 1024 and 4096 tokens, with rates
    # the grid would not predict: between them the line is used, in log tokens
    forward = [
        gemm_row(1024, 6144, 4096, role="forward", rate=3e14),
        gemm_row(4096, 6144, 4096, role="forward", rate=6e14),
    ]
    rates = ProfileRates.of(synthetic(gemm=[*synthetic().gemm, *forward]))
    assert close(rates.gemm_flops(1024, 6144, 4096), 3e14)
    midway = rates.gemm(2048, 6144, 4096)  # halfway in log2: geometric mean
    assert close(midway.value, math.sqrt(3e14 * 6e14))
    assert midway.method == "measured line along m"
    # outside the line's token range, or another weight shape: the grid
    assert rates.gemm(8192, 6144, 4096).method.startswith("grid")
    assert rates.gemm(2048, 6000, 4096).method.startswith("grid")


def test_gemm_grid_error_is_measured_on_model_shapes(synthetic) -> None:
    law = gemm_law(1024, 6144, 4096)
    shapes = [gemm_row(1024, 6144, 4096, role="forward", rate=1.1 * gemm_law(4096, 4096, 4096))]
    rates = ProfileRates.of(synthetic(gemm=[*synthetic().gemm, *shapes]))
    mape, count = rates.gemm_grid_error("bf16")
    predicted = gemm_law(1024, 4096, 4096)  # n clamped to the grid's edge, 4096
    assert count == 1
    assert math.isclose(mape, 100 * abs(predicted / (1.1 * gemm_law(4096, 4096, 4096)) - 1))
    assert law != predicted


def test_gemm_missing_dtype_is_a_gap(synthetic) -> None:
    rates = ProfileRates.of(synthetic())
    assert rates.has_gemm("bf16") and not rates.has_gemm("fp8")
    with pytest.raises(ProfileGapError, match="no fp8 GEMMs"):
        rates.gemm(1024, 1024, 1024, "fp8")
    with pytest.raises(ValueError, match="positive"):
        rates.gemm(0, 1024, 1024)


def test_unmeasured_corner_is_left_out() -> None:
    # a 2x2x1 cell with one corner missing: the three others, renormalised
    rows = [gemm_row(m, n, 256) for m in (256, 512) for n in (256, 512) if (m, n) != (512, 512)]
    rates = ProfileRates.of(make_profile(gemm=rows))
    expected = math.exp(
        (math.log(gemm_law(256, 256, 256)) * 0.25 + math.log(gemm_law(256, 512, 256)) * 0.25
         + math.log(gemm_law(512, 256, 256)) * 0.25) / 0.75
    )  # fmt: skip
    # at the cell centre in log2 (sqrt(256*512) = 362.04...), k on the only value
    centre = math.sqrt(256 * 512)
    assert close(rates.gemm_flops(centre, centre, 256), expected, rel=1e-9)


def test_attention_forward_and_backward_follow_the_grid(synthetic) -> None:
    rates = ProfileRates.of(synthetic())
    found = rates.attention(seq_len=2048, heads=8, kv_heads=2, head_dim=128)
    assert close(found.forward_flops_per_s, attention_law(2048, 8, 4, 128))
    assert close(found.backward_flops_per_s, attention_law(2048, 8, 4, 128) / 2)
    # between points (batch x heads = 12, seq 3000, head_dim 96) and in the group axis
    between = rates.attention(seq_len=3000, heads=6, kv_heads=3, head_dim=96, batch=2)
    assert close(between.forward_flops_per_s, attention_law(3000, 12, 2, 96))
    assert between.method == "grid"
    # beyond the sequence range: clamped to 4096
    long = rates.attention(seq_len=65536, heads=8, kv_heads=8, head_dim=128)
    assert close(long.forward_flops_per_s, attention_law(4096, 8, 1, 128))
    assert long.method == "grid (clamped at its edge)"


def test_attention_hole_where_group_exceeds_heads(synthetic) -> None:
    # heads 4 has groups 1 and 4 (kv 4 and 1); heads 6 with group 4 sits between
    # heads 4 and 8: every corner exists, the law holds
    rates = ProfileRates.of(synthetic())
    found = rates.attention(seq_len=1024, heads=6, kv_heads=2, head_dim=64)
    assert close(found.forward_flops_per_s, attention_law(1024, 6, 3, 64))


def test_attention_gaps(synthetic) -> None:
    rates = ProfileRates.of(synthetic())
    assert rates.has_attention("bf16", causal=True)
    assert not rates.has_attention("bf16", causal=False)
    with pytest.raises(ProfileGapError, match="non-causal"):
        rates.attention(seq_len=1024, heads=8, kv_heads=8, head_dim=128, causal=False)
    with pytest.raises(ValueError, match="kv_heads <= heads"):
        rates.attention(seq_len=1024, heads=2, kv_heads=8, head_dim=128)


def test_memory_bandwidth_interpolates_and_clamps(synthetic) -> None:
    rates = ProfileRates.of(synthetic())
    assert close(rates.memory_bandwidth(2 * 2**24), 1e12 * 24)  # a measured point
    # halfway in log2 between 2**22 and 2**24 tensors: geometric mean of the two
    assert close(rates.memory_bandwidth(2 * 2**23), math.sqrt(22e12 * 24e12))
    assert close(rates.memory_bandwidth(10), 1e12 * 20)  # below: the smallest size's
    assert close(rates.memory_bandwidth(2**40), 1e12 * 30)  # above: the largest size's
    with pytest.raises(ProfileGapError):
        rates.memory_bandwidth(2**20, op="add")


def test_collective_time_latency_floor_and_bandwidth_beyond(synthetic) -> None:
    rates = ProfileRates.of(synthetic())
    assert close(rates.collective_time("all_reduce", 2, 2**20), 20e-6 + 2**20 / 100e9)
    assert close(rates.collective_time("all_reduce", 2, 1), 20e-6 + 2**10 / 100e9)
    largest = 20e-6 + 2**30 / 100e9
    assert close(rates.collective_time("all_reduce", 2, 2**32), 4 * largest)
    assert rates.has_collective("all_reduce", 2)
    assert rates.collective_group_sizes("all_reduce") == [2]
    with pytest.raises(ProfileGapError, match="measured group sizes: \\[2\\]"):
        rates.collective_time("all_reduce", 8, 2**20)


def test_merged_takes_each_section_from_the_newest_profile_that_has_it(synthetic) -> None:
    kernels = synthetic(collectives=[])
    newer = make_profile(
        collectives=[collective_row(2**p, group_size=2) for p in (10, 20)],
        provenance=provenance(date_utc="2026-12-01T00:00:00+00:00", world_size=2),
    )
    rates = ProfileRates.merged([("a/profile.json", kernels), ("b/profile.json", newer)])
    assert rates.sources.by_section["gemm"] == "a/profile.json"
    assert rates.sources.by_section["collectives"] == "b/profile.json"
    assert "collectives from b/profile.json" in rates.source


def test_profile_file_round_trip_and_lookup(tmp_path: Path, synthetic) -> None:
    profile = synthetic()
    folder = tmp_path / "h100-sxm" / "2026-11-23-test"
    folder.mkdir(parents=True)
    (folder / PROFILE_FILE).write_text(profile.model_dump_json())
    assert load_profile(folder / PROFILE_FILE) == profile
    found = profiles_in(tmp_path, "h100-sxm")
    assert [where for where, _ in found] == [f"profiles/h100-sxm/2026-11-23-test/{PROFILE_FILE}"]
    assert profiles_in(tmp_path, "h200-sxm") == []


def test_misfiled_profile_is_an_error(tmp_path: Path, synthetic) -> None:
    folder = tmp_path / "h200-sxm" / "run"
    folder.mkdir(parents=True)
    (folder / PROFILE_FILE).write_text(synthetic().model_dump_json())  # says h100-sxm
    with pytest.raises(ProfileDataError, match="filed under 'h200-sxm'"):
        profiles_in(tmp_path, "h200-sxm")


def test_bad_files_name_the_file_and_the_field(tmp_path: Path, synthetic) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ProfileDataError, match="invalid JSON"):
        load_profile(broken)
    data = json.loads(synthetic().model_dump_json())
    data["gemm"][0]["m"] = -1
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(data))
    with pytest.raises(ProfileDataError, match=r"gemm\.0\.m"):
        load_profile(wrong)


def test_timing_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="min_s <= p10_s"):
        type(timing(1.0))(median_s=1.0, p10_s=2.0, p90_s=3.0, min_s=0.5, max_s=4.0, repeats=3)


def test_find_profile_of_a_gpu_without_profiles() -> None:
    assert find_profile("a100-sxm-40gb") is None


def test_schema_is_the_documented_top_level() -> None:
    assert list(KernelProfile.model_fields) == [
        "schema_version", "kind", "provenance", "settings", "gemm", "attention", "memory",
        "collectives", "optimizer", "host", "skipped", "elapsed_s",
    ]  # fmt: skip


def test_memory_row_helper_is_consistent() -> None:
    row = memory_row(2**20, op="add")
    assert row.bytes == 3 * 2**20
