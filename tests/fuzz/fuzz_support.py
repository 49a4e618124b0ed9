"""What the fuzz tests share: how many examples to try, and the values they draw from.

``FUZZ_EXAMPLES=N`` sets the examples per test (the defaults keep the whole directory
under about a minute on a 2-core CI machine); a long run, e.g.
``FUZZ_EXAMPLES=2000 pytest tests/fuzz``, tries many more with the same assertions. The
draws differ from run to run unless ``FUZZ_DERANDOMIZE=1`` (hypothesis's derandomized
mode: the same examples every run); failures are shrunk and printed by hypothesis.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from planner.specs import limits as L


def examples(default: int) -> int:
    """``FUZZ_EXAMPLES`` if set (a positive integer), else ``default``."""
    text = os.environ.get("FUZZ_EXAMPLES", "").strip()
    return int(text) if text else default


def fuzz_settings(default: int) -> settings:
    """Hypothesis settings for a fuzz test: bounded examples, no per-example deadline (the
    tests assert their own time bound), no database of failures (CI is stateless)."""
    repeatable = os.environ.get("FUZZ_DERANDOMIZE", "").strip() not in ("", "0")
    return settings(
        max_examples=examples(default),
        deadline=None,
        database=None,
        derandomize=repeatable,
        suppress_health_check=list(HealthCheck),
    )


EDGE_INTS = [
    -1, 0, 1, 2, 3, 7, 8, 16, 64, 512, 4096, L.MAX_GPUS, L.MAX_GPUS + 1, L.MAX_GLOBAL_BATCH,
    L.MAX_SEQ_LEN, L.MAX_SEQ_LEN + 1, 10**9, 99_999_999_999, 2**63, -(2**63),
]  # fmt: skip
"""Integers at and around the bounds, and far beyond them."""
EDGE_FLOATS = [0.0, -0.0, 1e-9, 0.1, 0.5, 1.0, 60.0, 1e300, float("nan"), float("inf")]
JUNK = ["", " ", "abc", "nan", "inf", "-inf", "1e400", "8.5", "0x10", "16M", "16Mi", "1Gi",
        "15T", "☃", "a/b", "../x", "/proc/x", "--json", "None", "true", "\x00"]  # fmt: skip
"""Text a user might type, or a fuzzer should."""

ints = st.one_of(st.integers(min_value=-10, max_value=100_000), st.sampled_from(EDGE_INTS))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(EDGE_FLOATS))
text = st.one_of(st.sampled_from(JUNK), st.text(max_size=12))
anything = st.one_of(ints, floats, text, st.booleans(), st.none())
