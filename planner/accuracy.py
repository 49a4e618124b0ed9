"""How far a prediction may be off: error bands from autopar's validation benchmarks.

A prediction is a point; what a user can act on is the point and the band around it. The
bands below are the worst errors the validation benchmarks measured, not guesses:

- Step time, 10%: ``python benchmarks/time_published.py`` (Narayanan et al. 2021, Table 1,
  and Korthikanti et al. 2022, Table 5: 18 published Megatron-LM runs on 32 to 3,072
  A100s) gave a mean error of 3.18% and a worst of 10.16% (2026-12-03, with Megatron's
  unfused cross entropy, main-gradient hooks and optimizer passes charged: one row, GPT
  7.5B on 128 GPUs, lies 0.16 points outside the band); the device-bound
  single-GPU validation sweep (``python benchmarks/accuracy_measured.py``, 7B-13B shapes
  at 8K-32K tokens on H100 and H200) is within 10% on every run (worst 9.08%).
- Peak memory, 3%: ``python benchmarks/memory_published.py`` (Korthikanti et al. 2022,
  Tables 2 and 4, 22B to 1T) gave a worst error of 2.40%; ``accuracy_measured.py`` a worst
  of 1.12% over 145 measured runs on our own harness.

Outside the validated ground the band is wider and the report says so: small steps whose
pace is the host's Python dispatch moved by up to 19.9% between two measurements of the
same configuration on the same machine (``accuracy_measured.py``, run-to-run spread), and
rates borrowed from another GPU's profile are unvalidated on the GPU they are used for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TIME_BAND = 0.10
"""Relative step-time band where the rates are this GPU's own (module docstring)."""

MEMORY_BAND = 0.03
"""Relative peak-memory band (module docstring)."""

HOST_BOUND_TIME_BAND = 0.20
"""Relative step-time band of steps paced by the host: the measured run-to-run spread."""


@dataclass(frozen=True)
class Band:
    """A prediction's relative error band and the words that say where it comes from."""

    time: float
    memory: float
    basis: str

    def step_range_s(self, step_s: float) -> tuple[float, float]:
        """The step time interval the band allows around ``step_s``."""
        return step_s * (1 - self.time), step_s * (1 + self.time)

    def overlaps(self, step_a_s: float, step_b_s: float) -> bool:
        """Whether two predicted step times are inside each other's band (not told apart)."""
        low_a, high_a = self.step_range_s(step_a_s)
        low_b, high_b = self.step_range_s(step_b_s)
        return low_a <= high_b and low_b <= high_a


def rates_are_borrowed(rates_source: str) -> bool:
    """Whether the time model ran on another GPU's profile scaled to this GPU's peaks."""
    return "no profile of this GPU" in rates_source


def prediction_band(*, rates_source: str) -> Band:
    """The band of a prediction made with the rates ``rates_source`` describes."""
    if rates_are_borrowed(rates_source):
        return Band(
            time=HOST_BOUND_TIME_BAND,
            memory=MEMORY_BAND,
            basis=(
                "rates borrowed from another GPU's profile, unvalidated on this GPU: step "
                f"time +/-{HOST_BOUND_TIME_BAND:.0%}, peak memory +/-{MEMORY_BAND:.0%}"
            ),
        )
    return Band(
        time=TIME_BAND,
        memory=MEMORY_BAND,
        basis=(
            f"step time +/-{TIME_BAND:.0%} (worst error over 18 published Megatron-LM runs "
            "and the device-bound measured steps), peak memory "
            f"+/-{MEMORY_BAND:.0%} (worst over published and measured runs); steps paced "
            f"by the host vary by up to {HOST_BOUND_TIME_BAND:.0%}"
        ),
    )


# ---------------------------------------------------------------------------------------
# The memory margin a plan keeps by default, per framework
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryError:
    """The worst relative peak-memory error validated for one framework's memory paths."""

    fraction: float
    basis: str


TWO_GPU_MEMORY_WORST = 0.0341
"""Worst per-rank peak-memory error over the 132 two-H200 steps of DDP, FSDP2 (with and
without resharding), DTensor and Megatron-style tensor parallelism, GPipe and 1F1B
(``python benchmarks/accuracy_two_gpu.py``, 2026-12-03: worst 3.41%, a 1F1B rank with full
recompute): the pipeline, sharding and recompute paths every framework's plan uses."""

PUBLISHED_MEMORY_WORST = 0.0240
"""Worst error against Megatron-LM's published activation memory (Korthikanti et al. 2022,
Tables 2 and 4; ``python benchmarks/memory_published.py``)."""

UNMEASURED_IMPLEMENTATION_MEMORY_WORST = 0.1238
"""The worst peak-memory error the model has shown on an implementation it was not built
around, at that implementation's first measurement: Megatron-Core's local layer spec on
one H200 (``python benchmarks/accuracy_measured.py``, role megatron, 2026-12-03; profile
``h200-sxm/2026-12-03-h200-megatron-core``), llama-1b at 8,192 tokens with full recompute
predicted 12.38% below the measured peak. The cause was found afterwards (the CUDA softmax
backward's ``grad * output`` temporary, from the peak census of those steps; since
counted in ``planner.graph.build``, the same eight runs are within 0.53%), but it is what
an implementation no step has measured yet (DeepSpeed's ZeRO buckets) can be expected to
hide, so it sizes that margin."""

MEGATRON_LOCAL_MEMORY_WORST = 0.0053
"""Worst error on the eight Megatron-Core local-layer-spec steps once the softmax
backward's temporary is counted (``python benchmarks/accuracy_measured.py``, role
megatron: mean 0.24%, worst 0.53%). One GPU only, so the local spec's margin is the larger
of this and the two-GPU worst."""

MEMORY_ERRORS: dict[str, MemoryError] = {
    "megatron": MemoryError(
        TWO_GPU_MEMORY_WORST,
        "worst peak-memory error validated for Megatron with Transformer Engine layers: "
        f"{PUBLISHED_MEMORY_WORST:.2%} on published Megatron-LM runs, "
        f"{TWO_GPU_MEMORY_WORST:.2%} on measured two-GPU 1F1B, TP and data-parallel steps",
    ),
    "torchtitan": MemoryError(
        TWO_GPU_MEMORY_WORST,
        "worst peak-memory error on measured two-GPU FSDP2, DTensor TP and pipeline steps "
        f"({TWO_GPU_MEMORY_WORST:.2%})",
    ),
    "pytorch": MemoryError(
        TWO_GPU_MEMORY_WORST,
        "worst peak-memory error on measured PyTorch steps on one and two GPUs "
        f"({TWO_GPU_MEMORY_WORST:.2%})",
    ),
    "deepspeed": MemoryError(
        UNMEASURED_IMPLEMENTATION_MEMORY_WORST,
        "no DeepSpeed step was measured: the worst peak-memory error the model showed on "
        "an implementation at its first measurement "
        f"({UNMEASURED_IMPLEMENTATION_MEMORY_WORST:.2%}, Megatron-Core's local layer spec)",
    ),
}
"""The memory error each framework's default margin is sized by (the constants above)."""

MEGATRON_LOCAL_ERROR = MemoryError(
    max(MEGATRON_LOCAL_MEMORY_WORST, TWO_GPU_MEMORY_WORST),
    "worst peak-memory error on Megatron-Core's local layer spec (unfused attention) "
    f"measured steps ({MEGATRON_LOCAL_MEMORY_WORST:.2%}, one GPU) and on measured two-GPU "
    f"1F1B, TP and data-parallel steps ({TWO_GPU_MEMORY_WORST:.2%})",
)


@dataclass(frozen=True)
class Headroom:
    """GiB kept free on every GPU and why (``autopar plan`` shows both)."""

    gib: float
    basis: str
    default: bool

    @property
    def words(self) -> str:
        """'headroom kept: 2.70 GiB (3.41% of 79.21 GiB: ...)'."""
        return f"headroom kept: {self.gib:.2f} GiB ({self.basis})"


def memory_error(framework: str, *, layer_spec: str = "transformer_engine") -> MemoryError:
    """The validated worst peak-memory error of ``framework``'s memory paths."""
    if layer_spec == "local":
        return MEGATRON_LOCAL_ERROR
    return MEMORY_ERRORS.get(framework, MEMORY_ERRORS["deepspeed"])


def default_headroom(
    *, framework: str, capacity_gib: float, layer_spec: str = "transformer_engine"
) -> Headroom:
    """The margin a plan keeps unless told otherwise: the framework's worst validated
    peak-memory error applied to the usable capacity. A layout at the edge has a peak
    near the capacity, so a prediction that low by the worst error still fits when this
    much is kept free."""
    error = memory_error(framework, layer_spec=layer_spec)
    gib = math.ceil(error.fraction * capacity_gib * 100) / 100
    return Headroom(
        gib=gib,
        basis=f"default: {error.fraction:.2%} of {capacity_gib:.2f} GiB, the {error.basis}",
        default=True,
    )


def resolve_headroom(
    headroom_gib: float | None, *, framework: str, capacity_gib: float
) -> Headroom:
    """The headroom asked for, or the framework's default margin when none was given."""
    if headroom_gib is None:
        return default_headroom(framework=framework, capacity_gib=capacity_gib)
    basis = "as asked (--headroom-gib)" if headroom_gib else "none, as asked (--headroom-gib 0)"
    return Headroom(gib=headroom_gib, basis=basis, default=False)


# ---------------------------------------------------------------------------------------
# Step-time bands per framework and regime
# ---------------------------------------------------------------------------------------

REGIMES = ("compute-bound", "communication-bound", "host-bound")

HOST_BOUND_STEP_S = 0.2
"""A step shorter than this is host-bound: every measured configuration whose repeated
measurements spread by more than 10% ran steps under 0.18 s (``accuracy_measured.py``:
0.06 to 0.17 s, spreads 11-20%), and so did the two-GPU harness's launch-bound
micro-batches (69 to 158 ms, spreads 11-46%, ``accuracy_two_gpu.py``); at that size the
host's kernel launches, not the GPU, set the pace.

"""

COMM_BOUND_SHARE = 0.2
"""A step is communication-bound when exposed communication (TP, CP, EP, DP and pipeline
transfers) is at least this share of it: the collective model (datasheet bandwidths and
measured collectives on at most two GPUs) then moves the step as much as the kernel rates."""

COMM_TIME_BAND = 0.12
"""Step-time band of communication-bound steps: the worst GPU-bound error of the
two-H200 steps, 11.79% on FSDP2 (its gathers and reduce-scatters are on the critical
path; ``benchmarks/accuracy_two_gpu.py``), rounded up."""

FRAMEWORK_COMPUTE_BAND = {
    "megatron": TIME_BAND,
    "pytorch": COMM_TIME_BAND,
    "torchtitan": COMM_TIME_BAND,
    "deepspeed": HOST_BOUND_TIME_BAND,
}
"""Compute-bound step-time band per framework: Megatron-LM's published runs (worst 10.16%)
and device-bound measured steps (worst 9.08%; Megatron-Core's own steps on its local spec:
worst 2.47%) for megatron; the two-GPU PyTorch harness
(DDP, FSDP2, TP, pipelines: worst 11.79%) for pytorch and torchtitan; DeepSpeed's steps
were never measured, so its band is the widest validated one."""


def regime(breakdown_s: dict[str, float]) -> str:
    """'compute-bound', 'communication-bound' or 'host-bound', from a time breakdown:
    host-bound below ``HOST_BOUND_STEP_S``, communication-bound when exposed
    communication is at least ``COMM_BOUND_SHARE`` of the step, compute-bound otherwise."""
    step = sum(breakdown_s.values())
    if step < HOST_BOUND_STEP_S:
        return "host-bound"
    comm = sum(breakdown_s.get(k, 0.0) for k in COMM_PARTS)
    return (
        "communication-bound" if step > 0 and comm >= COMM_BOUND_SHARE * step else "compute-bound"
    )


COMM_PARTS = ("tp_comm", "cp_comm", "ep_comm", "dp_comm", "pipeline_p2p")


def time_band(*, framework: str, regime_name: str, rates_source: str) -> Band:
    """The step-time band of a prediction by ``framework`` in ``regime_name``."""
    if rates_are_borrowed(rates_source) or regime_name == "host-bound":
        time, why = (
            HOST_BOUND_TIME_BAND,
            (
                "rates borrowed from another GPU's profile"
                if rates_are_borrowed(rates_source)
                else "host-bound: measured run-to-run spread"
            ),
        )
    elif regime_name == "communication-bound":
        time = max(COMM_TIME_BAND, FRAMEWORK_COMPUTE_BAND.get(framework, HOST_BOUND_TIME_BAND))
        why = "communication-bound"
    else:
        time = FRAMEWORK_COMPUTE_BAND.get(framework, HOST_BOUND_TIME_BAND)
        why = "compute-bound"
    return Band(time=time, memory=MEMORY_BAND, basis=f"+/-{time:.0%} ({framework}, {why})")


def borrowed_rates_note(rates_source: str) -> str | None:
    """'rates scaled from h100-sxm, unvalidated on b200' for borrowed rates, else None."""
    if not rates_are_borrowed(rates_source):
        return None
    head = rates_source.split("(no profile of this GPU)")[0]
    words = head.replace("'s datasheet peaks", "").split()
    try:
        source, target = words[words.index("of") + 1], words[words.index("to") + 1]
    except (ValueError, IndexError):
        return "rates scaled from another GPU's profile, unvalidated on this GPU"
    return f"rates scaled from {source}, unvalidated on {target}"
