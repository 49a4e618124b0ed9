"""The calibration times a measured step exactly as ``estimate`` does.

``planner.cost.fit`` fits the launch overheads and the device-time ratio to measured
steps through ``single_gpu_step_phases``; if that composition drifted from what
``estimate`` computes (per-layer streams, recomputation, the optimizer's use of the host's
lead), the fitted values would describe a different model from the one users run.
"""

from __future__ import annotations

import pytest

from planner import load_gpu
from planner.cost.fit import Sample, step_time_s
from planner.cost.measured import single_gpu_step_phases
from planner.cost.rates import rates_for
from planner.cost.reserve import measured_runs
from planner.measured_runs import estimate_record


@pytest.mark.parametrize("gpu_id", ["h100-sxm", "h200-sxm"])
def test_calibrated_composition_equals_estimate(gpu_id: str) -> None:
    rates = rates_for(load_gpu(gpu_id), "bf16", "pytorch")
    for record in measured_runs(gpu_id)[::5]:
        config = record["config"]
        predicted = estimate_record(record, gpu_id=gpu_id).time.step_time_s
        sample = Sample(phases=single_gpu_step_phases(config), measured_s=1.0)
        assert step_time_s(sample, rates) == pytest.approx(predicted, rel=1e-5, abs=2e-6)
