"""Wall time of ``planner.plan`` (in process) for the planner issue's reference cases.

For each case: the whole search (enumerating the legal layouts, tabulating the cost model
over them, the stage-partition solver's splits, CP-SAT choosing the top plans), the CP-SAT
share of it, how many layouts were legal, costed (memory) and timed (the pipeline
simulated: only those that fit and whose lower bound could make the top 5), and next to
it the brute-force reference: ``estimate()`` on every legal layout, taking the fastest
that fits. The planner's best must be at least as fast as the brute force's (it searches
the same layouts plus the split solver's); the ``=bf`` column says whether it is equal
(``same``) or faster because of a split the enumeration does not have (``split``).

Targets (planner issue, 2-core machine): at most 2 s for 70B on 64 GPUs and at most 10 s
for 405B on 16,384 H100s, with ``optimal: true``. Each case runs once, after the rates
are fitted; the machine may be shared, so run it twice when a number is close.

Run: ``python benchmarks/plan_speed.py [--cases 8b-8,70b-64] [--no-brute-force]
[--time-limit S] [--json out.json]``; ``--process [--repeats N] [--condition repeated|first]``.

``--process`` measures what a user waits for instead: the whole ``autopar plan`` process
(interpreter start, imports, reading the catalogue and the fitted rates, the search, the
printed table), launched with ``subprocess`` ``--repeats`` times (default 5) per case
after one untimed warm-up run (which fills the operating system's file cache and the
step-calibration cache, ``planner.cost.fit_cache``, as any earlier run does), for the
issue's cases (``PROCESS_CASES``) and ``autopar --help``. It prints the median and the
fastest wall time, the median CPU time of the process (user + system: less sensitive to
other work on a shared machine than the wall time) and whether the plan is proven
optimal over the whole space (``search.optimal``).

What the user's machine already holds decides part of the wall, so ``--process`` says
which run it measures (``--condition``):

* ``repeated`` (default): a run after an earlier one, as most runs are: the Python
  bytecode of every module is compiled (``pip install`` compiles it, and an editable
  checkout writes it on its first import) and the step-calibration cache is filled. The
  children write their bytecode under a private ``PYTHONPYCACHEPREFIX`` (the warm-up
  fills it; the repository tree is not written to) even where
  ``PYTHONDONTWRITEBYTECODE`` is set (as in this development environment), where every
  run would otherwise compile some 140 of autopar's modules (0.1-0.2 s of CPU).
* ``first``: the first run after installing: the bytecode as above (the install
  compiled it), but every timed run gets an empty ``AUTOPAR_CACHE_DIR``, so it fits the
  step calibration and parses the kernel profiles itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from planner import Infeasible, PlanRequest, WorkloadSpec, estimate, load_cluster, load_model, plan
from planner.cost.rates import rates_for
from planner.search.candidates import enumerate_layouts

CASES: dict[str, dict[str, Any]] = {
    "8b-8": {"model": "llama-3.1-8b", "gpus": 8, "seq_len": 4096, "global_batch": 64},
    "70b-64": {"model": "llama-3.1-70b", "gpus": 64, "seq_len": 4096, "global_batch": 256},
    "405b-1024": {"model": "llama-3.1-405b", "gpus": 1024, "seq_len": 8192, "global_batch": 2048},
    "405b-16384": {
        "model": "llama-3.1-405b", "gpus": 16384, "seq_len": 8192, "global_batch": 2048,
    },
    "mixtral-8x22b-256": {
        "model": "mixtral-8x22b", "gpus": 256, "seq_len": 4096, "global_batch": 512,
    },
    "deepseek-v3-2048": {
        "model": "deepseek-v3", "gpus": 2048, "seq_len": 4096, "global_batch": 4096,
    },
}  # fmt: skip


PROCESS_CASES: dict[str, dict[str, Any]] = {
    "70b-64": {"model": "llama-3.1-70b", "gpus": 64, "seq_len": 8192, "global_batch": 512,
               "target_s": 2.0},
    "405b-16384": {"model": "llama-3.1-405b", "gpus": 16384, "seq_len": 8192,
                   "global_batch": 2048, "target_s": 10.0},
    "deepseek-v3-2048": {"model": "deepseek-v3", "gpus": 2048, "seq_len": 4096,
                         "global_batch": 4096, "target_s": 10.0},
}  # fmt: skip
"""The planner issue's whole-process cases (all on dgx-h100) and their targets."""
HELP_TARGET_S = 0.5


def _plan_argv(case: dict[str, Any]) -> list[str]:
    return [
        "plan", "--model", case["model"], "--cluster", "dgx-h100", "--gpus", str(case["gpus"]),
        "--seq-len", str(case["seq_len"]), "--global-batch", str(case["global_batch"]),
    ]  # fmt: skip


CONDITIONS = ("repeated", "first")
"""What the timed runs find on the machine (module docstring)."""


def _child_env(condition: str, scratch: Path) -> dict[str, str]:
    """The environment of one timed ``autopar`` process under ``condition``, with its
    folders under ``scratch`` (module docstring)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    if condition == "first":
        env["AUTOPAR_CACHE_DIR"] = tempfile.mkdtemp(dir=scratch)
    return env


def _timed_process(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall s, CPU s of the child, its stdout) of ``python -m planner ARGS``."""
    before = os.times()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "planner", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    wall = time.perf_counter() - started
    after = os.times()
    if done.returncode != 0:
        raise SystemExit(f"autopar {' '.join(args)} failed: {done.stderr.strip()[:300]}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu, done.stdout


def run_process_case(
    name: str,
    args: list[str],
    *,
    repeats: int,
    target_s: float,
    condition: str = "repeated",
    scratch: Path,
) -> dict:
    """Median and fastest of ``repeats`` timed runs after one warm-up, each run under
    ``condition`` with its folders in ``scratch`` (module docstring)."""
    _, _, out = _timed_process(args, _child_env(condition, scratch))
    optimal = None
    if args[0] == "plan":
        result = json.loads(out)
        optimal = result["search"]["optimal"]
    shown = [a for a in args if a != "--json"]
    runs = [_timed_process(shown, _child_env(condition, scratch)) for _ in range(repeats)]
    walls = [wall for wall, _, _ in runs]
    median = statistics.median(walls)
    return {
        "case": name,
        "command": "autopar " + " ".join(a for a in args if a != "--json"),
        "median_wall_s": round(median, 3),
        "min_wall_s": round(min(walls), 3),
        "median_cpu_s": round(statistics.median(cpu for _, cpu, _ in runs), 3),
        "repeats": repeats,
        "target_s": target_s,
        "meets_target": median < target_s,
        "optimal": optimal,
        "condition": condition,
    }


def process_main(
    names: list[str], *, repeats: int, json_path: str | None, condition: str = "repeated"
) -> None:
    """``--process``: the whole ``autopar`` process per case (module docstring)."""
    with tempfile.TemporaryDirectory(prefix="autopar-speed-") as folder:
        scratch = Path(folder)
        rows = [
            run_process_case(
                "--help", ["--help"], repeats=repeats, target_s=HELP_TARGET_S,
                condition=condition, scratch=scratch,
            )
        ]  # fmt: skip
        for name in names:
            case = PROCESS_CASES[name]
            rows.append(run_process_case(
                name, [*_plan_argv(case), "--json"], repeats=repeats,
                target_s=case["target_s"], condition=condition, scratch=scratch,
            ))  # fmt: skip
    words = {
        "repeated": "a repeated run: bytecode compiled, step-calibration cache filled",
        "first": "a first run: bytecode compiled, empty step-calibration cache",
    }[condition]
    print(f"whole process, median of {repeats} after one warm-up ({os.cpu_count()} CPUs); {words}")
    print(f"{'case':<18}{'median s':>9}{'min s':>8}{'CPU s':>8}{'target':>8}  ok   optimal")
    for row in rows:
        optimal = "" if row["optimal"] is None else str(row["optimal"])
        print(
            f"{row['case']:<18}{row['median_wall_s']:>9.2f}{row['min_wall_s']:>8.2f}"
            f"{row['median_cpu_s']:>8.2f}{'< ' + format(row['target_s'], 'g'):>8}"
            f"  {'yes' if row['meets_target'] else 'NO':<4} {optimal}"
        )
    for row in rows:
        print(f"  {row['case']}: {row['command']}")
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=2))


def _inputs(name: str) -> dict[str, Any]:
    case = CASES[name]
    return {
        "model": load_model(case["model"]),
        "cluster": load_cluster("dgx-h100", gpus=case["gpus"]),
        "workload": WorkloadSpec(seq_len=case["seq_len"], global_batch=case["global_batch"]),
    }


def brute_force(name: str) -> tuple[float, float | None]:
    """(wall seconds, best step) of estimate() on every legal layout of the case."""
    inputs = _inputs(name)
    started = time.perf_counter()
    best = None
    for layout in enumerate_layouts(inputs["model"], inputs["cluster"], inputs["workload"]):
        result = estimate(layout=layout, **inputs)
        if result.memory.fits and (best is None or result.time.step_time_s < best):
            best = result.time.step_time_s
    return time.perf_counter() - started, best


def run_case(name: str, *, time_limit_s: float, reference: bool) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = plan(PlanRequest(**_inputs(name), top_k=5, time_limit_s=time_limit_s))
    except Infeasible as error:
        return {"case": name, "wall_s": time.perf_counter() - started, "error": str(error)}
    wall = time.perf_counter() - started
    search = result.search
    best = result.plans[0]
    row = {
        "case": name,
        "wall_s": round(wall, 3),
        "solver_wall_s": search.solver_wall_s,
        "layouts_legal": search.layouts_legal,
        "layouts_evaluated": search.layouts_evaluated,
        "layouts_timed": search.layouts_timed,
        "optimal": search.optimal,
        "best_step_s": best.time.step_time_s,
        "best_mfu": best.time.mfu,
    }
    if reference:
        brute_s, brute_best = brute_force(name)
        row["brute_force_s"] = round(brute_s, 2)
        row["brute_force_best_step_s"] = brute_best
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--no-brute-force", action="store_true", help="skip the reference")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument(
        "--process",
        action="store_true",
        help="time whole `autopar plan` processes (the issue's cases; --cases picks among "
        f"{', '.join(PROCESS_CASES)})",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (--process)")
    parser.add_argument(
        "--condition",
        choices=CONDITIONS,
        default="repeated",
        help="--process: time repeated runs (bytecode and calibration cached) or first runs",
    )
    args = parser.parse_args()
    if args.process:
        chosen = args.cases if args.cases != ",".join(CASES) else ",".join(PROCESS_CASES)
        names = [name.strip() for name in chosen.split(",") if name.strip()]
        unknown = [name for name in names if name not in PROCESS_CASES]
        if unknown:
            parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(PROCESS_CASES)}")
        if args.repeats < 1:
            parser.error("--repeats: at least 1")
        process_main(names, repeats=args.repeats, json_path=args.json, condition=args.condition)
        return
    names = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = [name for name in names if name not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    rates_for(load_cluster("dgx-h100").gpu, "bf16")  # fit the rates once, outside the cases
    rows = [
        run_case(name, time_limit_s=args.time_limit, reference=not args.no_brute_force)
        for name in names
    ]
    print(
        f"{'case':<20}{'wall s':>8}{'CP-SAT s':>9}{'legal':>7}{'costed':>7}{'timed':>6}"
        f"  optimal  {'brute s':>8} {'=bf':<6}best"
    )
    for row in rows:
        if "error" in row:
            print(f"{row['case']:<20}{row['wall_s']:>8.2f}  infeasible: {row['error'][:80]}")
            continue
        brute, same = "", ""
        if "brute_force_s" in row:
            brute = f"{row['brute_force_s']:.2f}"
            reference = row["brute_force_best_step_s"]
            same = "same" if reference == row["best_step_s"] else (
                "split" if reference is not None and row["best_step_s"] < reference else "WORSE"
            )  # fmt: skip
        print(
            f"{row['case']:<20}{row['wall_s']:>8.2f}{row['solver_wall_s']:>9.2f}"
            f"{row['layouts_legal']:>7}{row['layouts_evaluated']:>7}{row['layouts_timed']:>6}"
            f"  {row['optimal']!s:<7}  {brute:>8} {same:<6}"
            f"{row['best_step_s']:.3f} s/step, MFU {row['best_mfu']:.1%}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
