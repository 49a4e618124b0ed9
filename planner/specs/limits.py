"""Input limits: the largest model, cluster, workload and search one request may describe.

One module decides them for every way in: the pydantic specs carry them as field bounds
and validators (``ModelSpec``, ``ClusterSpec``, ``WorkloadSpec``, the search's own checks),
so ``autopar`` on the command line, ``planner.plan``/``planner.estimate`` from Python and
the REST service (whose request schemas state them as ``maximum``) refuse the same inputs
with the same message, before any work. They are generous for real training runs and
exist so that no input can make the planner allocate without bound or run for hours:

* ``MAX_GPUS``: 16,384 GPUs (Llama 3 405B was trained on 16,384 H100s, Dubey et al. 2024,
  "The Llama 3 Herd of Models", arXiv:2407.21783, section 3.3). ``MAX_NODES`` follows from
  one GPU per node.
* ``MAX_GLOBAL_BATCH``: 16,384 sequences per step (Llama 3 405B used at most 2,048
  sequences of 8,192 tokens: 16M tokens, same paper, section 3.4).
* ``MAX_SEQ_LEN``: 1,048,576 tokens.
* ``MAX_PARAMS``: 10^15 parameters, a thousand times the largest model in the catalogue
  (GPT-1T, Narayanan et al. 2021, Table 1); a larger config is a typo or a test of the
  planner, not a model anyone can train.
* ``MAX_PIPELINE_OPS``: micro-batches x pp x vpp of one estimate, the size of the
  pipeline schedule the cost model simulates. 262,144 (e.g. 4,096 micro-batches on 16
  stages with 4 virtual stages each) keeps one estimate under about half a second on
  one core (measured: about 1-2 us per scheduled operation).
* ``MIN_TIME_LIMIT_S`` / ``MAX_TIME_LIMIT_S``: a plan's wall-clock limit; the REST
  service caps it lower (``AUTOPAR_MAX_TIME_LIMIT_S``, at most ``MAX_TIME_LIMIT_S``).
* Model widths (``MAX_LAYERS`` and the bounds below) and hardware numbers: floats between
  a small positive floor and a ceiling far above any shipping part, so that no
  prediction overflows.

Bounds that a server operator tunes (the time-limit cap, the body size, the search-space
size, the queue) are ``api.settings.ApiSettings``.
"""

from __future__ import annotations

import re

from planner.errors import SpecError

__all__ = [
    "MAX_BANDWIDTH_GBPS",
    "MAX_DEADLINE_HOURS",
    "MAX_DEGREE",
    "MAX_EXPERTS",
    "MAX_GLOBAL_BATCH",
    "MAX_GLOBAL_BATCH_TOKENS",
    "MAX_GPUS",
    "MAX_GPUS_PER_NODE",
    "MAX_HEADROOM_GIB",
    "MAX_HEADS",
    "MAX_LATENCY_US",
    "MAX_LAYERS",
    "MAX_MBS",
    "MAX_MEMORY_GIB",
    "MAX_NODES",
    "MAX_PARAMS",
    "MAX_PIPELINE_OPS",
    "MAX_POSITIONS",
    "MAX_PRICE_PER_GPU_HOUR",
    "MAX_SEQ_LEN",
    "MAX_TFLOPS",
    "MAX_TIME_LIMIT_CEILING_S",
    "MAX_TIME_LIMIT_S",
    "MAX_TOKEN_BUDGET",
    "MAX_TOP_K",
    "MAX_VOCAB",
    "MAX_WIDTH",
    "MIN_HARDWARE_RATE",
    "MIN_TIME_LIMIT_S",
    "NAME_PATTERN",
    "NAME_RULE",
    "TEXT_PATTERN",
    "check_budget",
    "check_headroom",
    "check_name",
    "check_pipeline_ops",
    "check_time_limit",
    "check_top_k",
]

MAX_GPUS = 16_384
MAX_NODES = 16_384
MAX_GPUS_PER_NODE = 64
MAX_GLOBAL_BATCH = 16_384
MAX_SEQ_LEN = 1 << 20
MAX_GLOBAL_BATCH_TOKENS = MAX_GLOBAL_BATCH * MAX_SEQ_LEN
MAX_PARAMS = 10**15
MAX_PIPELINE_OPS = 1 << 18
MAX_DEGREE = 1024
MAX_MBS = 1024
MAX_TOP_K = 50
MAX_REFINE_TRIALS = 10_000
"""Optuna trials of one refinement (``--refine``): each trial is one full estimate, and a
study of this many keeps a plan's refinement within minutes to an hour; a policy bound,
like the others here, so that no request can ask for an unbounded study."""
MAX_MEASURE_STEPS = 1_000
"""Training steps measured per layout by ``--refine-on-hardware`` (a policy bound)."""
MIN_TIME_LIMIT_S = 0.1
MAX_TIME_LIMIT_S = 3600.0
"""No plan may search longer than an hour (the REST service allows less, see above)."""
MAX_TIME_LIMIT_CEILING_S = MAX_TIME_LIMIT_S
"""The highest AUTOPAR_MAX_TIME_LIMIT_S a server may set."""
MAX_HEADROOM_GIB = 1024.0
MAX_TOKEN_BUDGET = 1e16
"""Tokens a cost or min-gpus plan may budget: 10^16, 600 times Llama 3's 15.6T tokens."""
MAX_PRICE_PER_GPU_HOUR = 1e4
MAX_DEADLINE_HOURS = 1e5

MAX_LAYERS = 1024
MAX_WIDTH = 1 << 18
"""hidden_size, ffn_hidden_size, head_dim and the MoE/MLA widths."""
MAX_HEADS = 4096
MAX_VOCAB = 1 << 23
MAX_POSITIONS = 1 << 24
MAX_EXPERTS = 4096

MIN_HARDWARE_RATE = 1e-3
"""Floor of GPU/link numbers (TFLOP/s, GB/s, GiB, us): above zero, below any part."""
MAX_MEMORY_GIB = 1e5
MAX_BANDWIDTH_GBPS = 1e6
MAX_TFLOPS = 1e6
MAX_LATENCY_US = 1e6

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"
"""Catalogue names and spec names: no paths, no spaces, nothing a shell would expand."""
NAME_RULE = (
    "a name is 1-128 letters, digits, '.', '_', '+' or '-', starting with a letter or a "
    "digit (no spaces, no '/')"
)
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]{0,2048}$"
"""Free text (sources, display names): one line, no control characters."""


def check_time_limit(seconds: float, *, field: str = "time_limit") -> None:
    """A plan's time limit within ``MIN_TIME_LIMIT_S`` .. ``MAX_TIME_LIMIT_S``."""
    if not MIN_TIME_LIMIT_S <= seconds <= MAX_TIME_LIMIT_S:  # False for NaN too
        raise SpecError(
            f"{field}: {seconds} s must be between {MIN_TIME_LIMIT_S} and "
            f"{MAX_TIME_LIMIT_S:g} seconds"
        )


def check_budget(
    *,
    token_budget: float | None,
    price_per_gpu_hour: float | None,
    deadline_hours: float | None,
) -> None:
    """The cost and min-gpus objectives' inputs: finite, and within the bounds above."""
    for field, value, low, high in (
        ("token_budget", token_budget, 0.0, MAX_TOKEN_BUDGET),
        ("price_per_gpu_hour", price_per_gpu_hour, 0.0, MAX_PRICE_PER_GPU_HOUR),
        ("deadline_hours", deadline_hours, 0.0, MAX_DEADLINE_HOURS),
    ):
        if value is not None and not low <= value <= high:  # False for NaN too
            raise SpecError(f"{field}: {value:g} must be between {low:g} and {high:g}")


def check_headroom(headroom_gib: float, *, field: str = "headroom_gib") -> None:
    """GiB to leave free on every GPU: 0 .. ``MAX_HEADROOM_GIB``."""
    if not 0.0 <= headroom_gib <= MAX_HEADROOM_GIB:  # False for NaN too
        raise SpecError(f"{field}: {headroom_gib:g} must be between 0 and {MAX_HEADROOM_GIB:g}")


def check_top_k(top_k: int, *, field: str = "top_k") -> None:
    """How many plans a search returns: 1 .. ``MAX_TOP_K``."""
    if not 1 <= top_k <= MAX_TOP_K:
        raise SpecError(f"{field}: {top_k} must be between 1 and {MAX_TOP_K}")


def check_pipeline_ops(*, microbatches: int, pp: int, vpp: int) -> int:
    """Micro-batches x pp x vpp of one estimate, within ``MAX_PIPELINE_OPS``."""
    ops = microbatches * pp * vpp
    if ops > MAX_PIPELINE_OPS:
        raise SpecError(
            f"global_batch: {microbatches} micro-batches x pp {pp} x vpp {vpp} = {ops} "
            f"pipeline operations exceed the bound of {MAX_PIPELINE_OPS}; raise mbs or dp, "
            "or lower global_batch"
        )
    return ops


def check_name(name: str, *, field: str = "name") -> str:
    """A model or spec name that ``NAME_PATTERN`` allows (no spaces, no path separators)."""
    if re.fullmatch(NAME_PATTERN, name) is None:
        raise SpecError(f"{field}: {name!r} is not a valid name: {NAME_RULE}")
    return name
