"""The GPU profiler behind ``autopar profile``: measured rates for the cost model.

Measures, on the machine it runs on, matrix-product throughput by shape (bf16, and fp8
where the GPU has it), fused attention forward and backward by sequence length and head
layout, element-wise and copy bandwidth by size, and, under ``torchrun`` with several
processes, collective and send/recv times by message size; then writes one JSON file in
the schema of ``planner.cost.profile_schema``, which ``planner.cost.profile_rates`` reads.

Modules: ``grid`` (what is measured), ``timing`` (warm-up, repeats, device timers,
statistics), ``kernels`` (one-GPU benchmarks), ``collectives`` (multi-process ones),
``provenance`` (GPU, driver, library versions), ``runner`` (the whole run, progress bar,
the JSON file). torch is imported only when a run starts (``runner.import_torch``), so
``import planner`` never needs it; install it with ``pip install 'autopar[profile]'``.
"""

from planner.profile.runner import (
    ProfileOptions,
    ProfilerUnavailable,
    profile_text,
    run_profile,
    write_profile,
)

__all__ = ["ProfileOptions", "ProfilerUnavailable", "profile_text", "run_profile", "write_profile"]
