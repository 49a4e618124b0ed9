"""The Megatron-Core step traces (``megatron_breakdown.py``, no torch needed) against the
time model's constants that were read off them."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "measure"))

import megatron_breakdown  # noqa: E402

from planner.cost.compute import GENERIC_ELEMENT_BYTES, SOFTMAX_FORWARD_EFFICIENCY  # noqa: E402

PROFILE = ROOT / "hardware_db/profiles/h200-sxm/2026-12-03-h200-megatron-core-profile"
TRACE = PROFILE / "trace_llama-1b_s8192_b1x1_selective.json.gz"


def test_generic_kernels_cost_what_the_trace_measured() -> None:
    """Every generic element-wise class of the trace lies within 25 % of the model's
    per-element cost, and the model's constant within the measured range."""
    rates = megatron_breakdown.kernel_class_rates(str(TRACE))
    measured = [rates[c]["stream_bytes_per_element"] for c in megatron_breakdown.GENERIC]
    assert min(measured) <= GENERIC_ELEMENT_BYTES <= max(measured)
    assert all(abs(m / GENERIC_ELEMENT_BYTES - 1) <= 0.25 for m in measured)
    softmax = rates["softmax forward fp32 (read + write)"]["bytes_per_s"]
    stream = rates[megatron_breakdown.STREAM]["bytes_per_s"]
    assert abs(softmax / stream - dict(SOFTMAX_FORWARD_EFFICIENCY)[8192]) <= 0.01


def test_breakdown_accounts_for_the_busy_gpu() -> None:
    """The categories add up to the GPU's busy time (no kernel left out), and the step is
    device-bound (idle under 2 % of the span)."""
    result = megatron_breakdown.breakdown(str(TRACE))
    total = sum(row["device_ms"] for row in result["rows"])
    assert abs(total - result["gpu_busy_ms"]) <= 0.01 * result["gpu_busy_ms"]
    assert result["idle_ms"] <= 0.02 * result["gpu_span_ms"]
    unattributed = sum(r["device_ms"] for r in result["rows"] if r["category"] == "unattributed")
    assert unattributed <= 0.01 * total
