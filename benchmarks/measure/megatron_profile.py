"""Where a Megatron-Core training step spends its time on one GPU: a kernel trace per run.

    python benchmarks/measure/megatron_profile.py --out-dir DIR [--profile NAME ...]

For the runs of ``megatron_step.MEGATRON_SWEEP`` (megatron-core's ``GPTModel``, local
layer spec, distributed optimizer; built exactly as ``megatron_step.py`` builds them):

1. every run is timed again as ``megatron_step.py`` times it (``warmup`` steps, then
   ``steps - warmup`` steps each bracketed by ``torch.cuda.synchronize()``), and its
   record is appended to ``DIR/megatron_steps_again.jsonl``: the run-to-run spread
   against the committed measurement;
2. the runs named by ``--profile`` then run one more step under ``torch.profiler``
   (CPU and CUDA activity, input shapes), with a ``record_function`` range around every
   module's forward (``mod:<qualified name>``, forward hooks added for that step only)
   and around the step's phases (``phase:zero_grad``, ``phase:forward_backward``,
   ``phase:optimizer``). The Chrome trace is written gzipped to
   ``DIR/trace_<run>.json.gz``; ``benchmarks/measure/megatron_breakdown.py`` reads it
   (plain JSON, no torch needed) into the per-category table. A profiled step's host
   gaps are inflated by the profiler's own recording, so its kernel durations are the
   reading, and idle time is judged on the unprofiled steps (their time minus the sum
   of kernel durations).

Needs torch, megatron-core and a GPU; imports nothing from autopar.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import gzip
import itertools
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

import megatron_step as ms
import record
from options import PRESETS


def run_name(run: ms.MegatronRun) -> str:
    return f"{run.preset}_s{run.seq_len}_b{run.mbs}x{run.grad_accum}_{run.recompute}"


@contextmanager
def module_ranges(model: torch.nn.Module) -> Iterator[None]:
    """A ``record_function`` range named ``mod:<name>`` around each module's forward."""
    handles = []
    stacks: dict[int, list[Any]] = {}

    def pre(name: str):
        def hook(module: torch.nn.Module, *_: Any) -> None:
            scope = torch.autograd.profiler.record_function(f"mod:{name}")
            scope.__enter__()
            stacks.setdefault(id(module), []).append(scope)

        return hook

    def post(module: torch.nn.Module, *_: Any) -> None:
        stack = stacks.get(id(module))
        if stack:
            stack.pop().__exit__(None, None, None)

    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(pre(name or "root")))
        handles.append(module.register_forward_hook(post))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class PhasedStepper(ms.Stepper):
    """``megatron_step.Stepper.step`` with a profiler range around each phase and, when
    ``marks`` is a list, the host clock and a CUDA event at each phase boundary appended
    to it (unprofiled steps: the phases' device and host times)."""

    marks: list[tuple[str, float, Any]] | None = None

    def _mark(self, name: str) -> None:
        if self.marks is not None:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append((name, time.perf_counter(), event))

    def step(self) -> float:
        rf = torch.autograd.profiler.record_function
        self._mark("start")
        with rf("phase:zero_grad"):
            self.model.zero_grad_buffer()
            self.optimizer.zero_grad()
        self._mark("zero_grad")
        with rf("phase:forward_backward"):
            reduced = self.forward_backward(
                forward_step_func=self._forward_step,
                data_iterator=iter(enumerate(self.batches)),
                model=[self.model],
                num_microbatches=self.run.grad_accum,
                seq_length=self.run.seq_len,
                micro_batch_size=self.run.mbs,
                decoder_seq_length=self.run.seq_len,
                forward_only=False,
            )
        self._mark("forward_backward")
        with rf("phase:optimizer"):
            success, _grad_norm, _zeros = self.optimizer.step()
        self._mark("optimizer")
        if not success:
            raise RuntimeError("optimizer step skipped (non-finite gradients)")
        return float(sum(r["lm loss"] for r in reduced) / len(reduced))


def phase_times(marks: list[tuple[str, float, Any]]) -> dict[str, dict[str, float]]:
    """Per phase: device seconds between its boundary events and the host's seconds
    between its boundary clocks (the host runs ahead of the device where not bound)."""
    out = {}
    for (_, host0, event0), (name, host1, event1) in itertools.pairwise(marks):
        out[name] = {"device_s": event0.elapsed_time(event1) / 1e3, "host_s": host1 - host0}
    return out


def profile_one_step(stepper: PhasedStepper, model: Any, path: str) -> dict[str, Any]:
    """One step under the profiler; the trace to ``path`` (gzipped); its step times."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
    torch.cuda.synchronize()
    with module_ranges(model), profile(activities=activities, record_shapes=True) as prof:
        start = time.perf_counter()
        stepper.step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    raw = path.removesuffix(".gz")
    t0 = time.perf_counter()
    prof.export_chrome_trace(raw)
    with open(raw, "rb") as src, gzip.open(path, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst)
    os.remove(raw)
    try:
        table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=60)
    except Exception as err:  # the trace is written; the table is a convenience
        table = f"no table: {err!r}"
    return {"profiled_step_s": wall, "export_s": time.perf_counter() - t0, "table": table}


def run_one(run: ms.MegatronRun, out_dir: str, profiled: bool) -> dict[str, Any]:
    dev = torch.device("cuda", 0)
    progress = ms.Progress()
    oom = None
    extra: dict[str, Any] = {}
    try:
        ms.run_steps(run, dev, progress)
    except torch.OutOfMemoryError as err:
        oom = str(err).splitlines()[0][:300]
    result = ms.build_record(run, dev, progress, oom)
    result["config"]["remeasured_by"] = "benchmarks/measure/megatron_profile.py"
    if profiled and oom is None:
        # a fresh model for the profiled step, as megatron_step builds it
        ms._free(dev)
        from megatron.core import parallel_state

        parallel_state.destroy_global_memory_buffer()
        parallel_state._set_global_memory_buffer()
        _config, model, optimizer = ms.build(run)
        stepper = PhasedStepper(run, model, optimizer, ms.make_batches(run, dev))
        for _ in range(run.warmup):
            stepper.step()
        timed, phases = [], []
        for _ in range(3):  # the phased stepper unprofiled: its ranges cost nothing
            stepper.marks = []
            torch.cuda.synchronize()
            start = time.perf_counter()
            stepper.step()
            torch.cuda.synchronize()
            timed.append(time.perf_counter() - start)
            phases.append(phase_times(stepper.marks))
        stepper.marks = None
        extra = profile_one_step(stepper, model, f"{out_dir}/trace_{run_name(run)}.json.gz")
        extra["unprofiled_phased_step_s"] = timed
        extra["unprofiled_phases"] = phases
        del stepper, model, optimizer, _config
    ms._free(dev)
    gc.collect()
    return {"record": result, "profile": extra}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--profile", action="append", default=[],
                        help="run name to profile (see --list); repeatable")  # fmt: skip
    parser.add_argument("--only-profiled", action="store_true",
                        help="skip the runs not profiled")  # fmt: skip
    parser.add_argument("--deadline-s", type=float, default=None)
    parser.add_argument("--heldout", action="store_true",
                        help="the runs of megatron_step.py --sweep megatron-heldout")  # fmt: skip
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    runs = [ms.MegatronRun(p, s, b, a, r) for p, s, b, a, r in ms.MEGATRON_SWEEP]
    if args.heldout:  # megatron_step.py --sweep megatron-heldout's runs
        untied = {p: dataclasses.replace(PRESETS[p], tie_embeddings=False) for p in PRESETS}
        sweep = ms.HELDOUT_SWEEP
        runs = [ms.MegatronRun(p, s, b, a, r, shape=untied[p]) for p, s, b, a, r in sweep]
    if args.list:
        for run in runs:
            print(run_name(run))
        return 0
    os.makedirs(args.out_dir, exist_ok=True)
    ms.init_distributed(torch.device("cuda", 0))
    started = time.perf_counter()
    summary: list[dict[str, Any]] = []
    for run in runs:
        name = run_name(run)
        profiled = name in args.profile
        if args.only_profiled and not profiled:
            continue
        if run.preset == "llama-1b" and run.seq_len == 8192 and run.recompute == "none":
            continue  # out of memory by construction (megatron_step.MEGATRON_SWEEP)
        if args.deadline_s is not None and time.perf_counter() - started > args.deadline_s:
            print(f"deadline: skipped {name}", flush=True)
            continue
        t0 = time.perf_counter()
        out = run_one(run, args.out_dir, profiled)
        record.append_record(f"{args.out_dir}/megatron_steps_again.jsonl", out["record"])
        times = out["record"]["time"]
        line = {
            "run": name,
            "median_s": times["median_s"],
            "step_s": times["step_s"],
            "device_median_s": times.get("device_median_s"),
            "oom": out["record"]["oom"],
            **{k: v for k, v in out["profile"].items() if k != "table"},
        }
        summary.append(line)
        print(json.dumps(line), f"wall={time.perf_counter() - t0:.1f}s", flush=True)
        if "table" in out["profile"]:
            with open(f"{args.out_dir}/op_tables.txt", "a") as fh:
                fh.write(f"== {name}\n{out['profile']['table']}\n")
    with open(f"{args.out_dir}/summary.json", "w") as fh:
        json.dump(summary, fh, indent=1)
    medians = [s["median_s"] for s in summary if s["median_s"]]
    print(f"done: {len(summary)} runs, median of medians {statistics.median(medians):.4f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
