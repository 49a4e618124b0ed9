"""The step calibration kept on disk: read back bit for bit, refitted when an input changes,
and harmless when the cache cannot be written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from planner.cost import fit_cache
from planner.cost.fit import StepCalibration
from planner.cost.rates import fit_step_calibration

CALIBRATION = StepCalibration(
    kernel_overhead_s=4.2999999999999995e-05,
    backward_kernel_overhead_s=2.1e-05,
    plain_kernel_overhead_s=None,
    device_scale=1.16,
    fit_mape_pct=2.642365810716233,
    holdout_mape_pct=float("nan"),
    runs_fit=16,
    runs_holdout=0,
    source="fitted to 16 measured training steps on h100-sxm",
)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(fit_cache.CACHE_DIR_ENV, str(tmp_path))
    return tmp_path


def _counting(value: StepCalibration | None) -> tuple[list[int], object]:
    calls: list[int] = []

    def fit() -> StepCalibration | None:
        calls.append(1)
        return value

    return calls, fit


def _same(a: StepCalibration, b: StepCalibration) -> bool:
    for name in StepCalibration.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, float) and math.isnan(x):
            if not (isinstance(y, float) and math.isnan(y)):
                return False
        elif x != y or type(x) is not type(y):
            return False
    return True


def test_second_call_reads_the_stored_fit_bit_for_bit(cache_dir: Path) -> None:
    calls, fit = _counting(CALIBRATION)
    first = fit_cache.cached_calibration("h100-sxm", fit)  # type: ignore[arg-type]
    second = fit_cache.cached_calibration("h100-sxm", fit)  # type: ignore[arg-type]
    assert len(calls) == 1
    assert first is CALIBRATION and _same(second, CALIBRATION)
    stored = list((cache_dir / "calibrations").glob("h100-sxm-*.json"))
    assert len(stored) == 1


def test_the_cached_h100_fit_equals_a_fresh_fit(cache_dir: Path) -> None:
    fresh = fit_step_calibration("h100-sxm")
    assert fresh is not None
    fit_cache.cached_calibration("h100-sxm", lambda: fresh)
    read = fit_cache.cached_calibration("h100-sxm", lambda: pytest.fail("not read back"))
    assert read is not None and _same(read, fresh)


def test_another_digest_refits(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls, fit = _counting(CALIBRATION)
    fit_cache.cached_calibration("h100-sxm", fit)  # type: ignore[arg-type]
    # a measurement or a line of code changed: the key differs, the old file is not read
    monkeypatch.setattr(fit_cache, "inputs_digest", lambda: "f" * 64)
    fit_cache.cached_calibration("h100-sxm", fit)  # type: ignore[arg-type]
    assert len(calls) == 2


def test_the_digest_covers_data_and_code() -> None:
    digest = fit_cache.inputs_digest()
    assert digest is not None and len(digest) == 64
    assert fit_cache.inputs_digest(("planner",)) != fit_cache.inputs_digest(("hardware_db",))


def test_a_stored_file_for_another_digest_is_ignored(cache_dir: Path) -> None:
    calls, fit = _counting(CALIBRATION)
    fit_cache.cached_calibration("h100-sxm", fit)  # type: ignore[arg-type]
    (path,) = (cache_dir / "calibrations").glob("*.json")
    record = json.loads(path.read_text())
    record["digest"] = "0" * 64
    path.write_text(json.dumps(record))
    fit_cache.cached_calibration("h100-sxm", fit)  # type: ignore[arg-type]
    assert len(calls) == 2


def test_a_corrupt_file_is_refitted(cache_dir: Path) -> None:
    calls, fit = _counting(CALIBRATION)
    fit_cache.cached_calibration("h100-sxm", fit)  # type: ignore[arg-type]
    (path,) = (cache_dir / "calibrations").glob("*.json")
    path.write_text("{not json")
    assert _same(fit_cache.cached_calibration("h100-sxm", fit), CALIBRATION)  # type: ignore[arg-type]
    assert len(calls) == 2


def test_off_turns_the_cache_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fit_cache.CACHE_DIR_ENV, "off")
    assert fit_cache.cache_dir() is None
    calls, fit = _counting(CALIBRATION)
    fit_cache.cached_calibration("h100-sxm", fit)  # type: ignore[arg-type]
    fit_cache.cached_calibration("h100-sxm", fit)  # type: ignore[arg-type]
    assert len(calls) == 2


def test_an_unwritable_cache_still_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(fit_cache.CACHE_DIR_ENV, str(blocker))
    calls, fit = _counting(CALIBRATION)
    assert fit_cache.cached_calibration("h100-sxm", fit) is CALIBRATION  # type: ignore[arg-type]
    assert len(calls) == 1


def test_a_profile_read_back_answers_as_the_one_built(cache_dir: Path) -> None:
    from planner.cost.profile_rates import read_profiles

    built = read_profiles("h100-sxm")
    assert built is not None
    fit_cache.cached_object("profile-h100-sxm", lambda: built)
    read = fit_cache.cached_object("profile-h100-sxm", lambda: pytest.fail("not read back"))
    assert read is not built
    for m, n, k in [(4096, 8192, 8192), (1000, 3000, 7000), (16384, 28672, 8192)]:
        assert read.gemm(m, n, k, "bf16") == built.gemm(m, n, k, "bf16")
    assert read.sources == built.sources
    assert read.gemm_grid_error("bf16") == built.gemm_grid_error("bf16")


def test_a_truncated_object_is_built_again(cache_dir: Path) -> None:
    fit_cache.cached_object("thing", lambda: {"a": 1})
    (path,) = (cache_dir / "objects").glob("thing-*.pickle")
    path.write_bytes(path.read_bytes()[:5])
    assert fit_cache.cached_object("thing", lambda: {"a": 2}) == {"a": 2}
