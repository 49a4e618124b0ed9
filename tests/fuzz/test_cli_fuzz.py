"""Fuzzing the command line: whatever the options, exit code 0 or 2, never a traceback.

Strategies draw each option of ``estimate``, ``plan``, ``models`` and ``emit`` from
plausible values, values at and past the bounds of ``planner.specs.limits``, and junk
(``fuzz_support``). Every run goes through the real entry point and its error boundary
in-process, and must end with exit code 0 (output on stdout) or 2 with exactly one line
``autopar: error: ...`` on stderr, within a time bound; any other exception fails the
test with its traceback.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from typing import Any

from fuzz_support import floats, fuzz_settings, ints, text
from hypothesis import event, given
from hypothesis import strategies as st

from planner.cli.app import main

MODELS = ["llama-3.1-8b", "mixtral-8x7b", "deepseek-v3", "gpt-1t", "nope", "/proc/x.json", ""]
CLUSTERS = ["dgx-h100", "dgx-a100", "mi300x-8", "l40s-8", "nope", "/proc/x.json"]
PLAN_TIME_LIMIT_S = 0.5
WORKDIR = tempfile.mkdtemp(prefix="autopar-fuzz-cli-")
"""Where the runs start: ``plan --emit`` without ``--out`` writes ./run, not into the checkout."""
BOUND_S = 30.0
"""Per run: start-up, the plan's time limit and its solver's second, on a busy machine."""


def run(argv: list[str]) -> tuple[int, str, str, float]:
    """``autopar ARGV`` in-process: exit code, stdout, stderr, seconds."""
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.chdir(WORKDIR))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        try:
            main(argv)
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - started


def check(argv: list[str]) -> None:
    code, _, err, seconds = run(argv)
    event(f"exit code {code}")
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("autopar: error: "), (argv, err)
    assert "Traceback" not in err, (argv, err)
    assert seconds < BOUND_S, (argv, seconds)


VALID: dict[str, list[Any]] = {
    "--model": ["llama-3.1-8b", "llama-3.1-70b", "mixtral-8x7b", "qwen3-235b-a22b"],
    "--cluster": ["dgx-h100", "dgx-a100", "hgx-h200", "mi300x-8"],
    "--seq-len": [1024, 2048, 4096, 8192, 32768],
    "--gpus": [1, 2, 8, 16, 64],
    "--nodes": [1, 2, 8],
    "--global-batch": [8, 64, 512, 2048],
    "--global-batch-tokens": ["1Mi", "4Mi", "16Mi"],
    "--tp": [1, 2, 4, 8],
    "--pp": [1, 2, 4],
    "--cp": [1, 2],
    "--ep": [1, 2, 8],
    "--vpp": [2],
    "--mbs": [1, 2],
    "--zero": [0, 1, 2, 3],
    "--recompute": ["none", "selective", "full"],
    "--precision": ["bf16", "fp8"],
    "--framework": ["megatron", "deepspeed", "torchtitan", "pytorch"],
    "--offload-optimizer": [0.0, 0.5, 1.0],
    "--top-k": [1, 3],
    "--objective": ["throughput", "cost", "min-gpus"],
    "--token-budget": ["1T", "15T", "300B"],
    "--price-per-gpu-hour": [2.5],
    "--deadline-hours": [100.0, 2000.0],
    "--fix": ["tp=2", "recompute=none", "mbs=1", "pp=2"],
    "--max": ["pp=2", "tp=4", "mbs=2"],
    "--headroom-gib": [0.0, 5.0],
    "--emit": ["megatron", "deepspeed", "torchtitan"],
}
"""What a user planning a real run types: with these, most runs reach the cost model."""


def _value(option: str, *, junk: bool = True) -> st.SearchStrategy[Any]:
    """Values for one option: mostly plausible, often at a bound, sometimes junk (never,
    with ``junk=False``)."""
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "--model": st.sampled_from(MODELS),
        "--cluster": st.sampled_from(CLUSTERS),
        "--seq-len": st.sampled_from([1, 128, 4096, 8192, 2**20, 2**20 + 1]),
        "--gpus": st.sampled_from([1, 2, 8, 64, 16384, 10**9]),
        "--nodes": st.sampled_from([1, 2, 8, 2048, 2049]),
        "--global-batch": st.sampled_from([1, 8, 64, 512, 16384, 99999999999]),
        "--global-batch-tokens": st.sampled_from(["1M", "4Mi", "16Mi", "1Gi", "1T", "16Q"]),
        "--tp": st.sampled_from([1, 2, 8, 16]),
        "--pp": st.sampled_from([1, 2, 4, 64, 4096]),
        "--cp": st.sampled_from([1, 2, 8]),
        "--ep": st.sampled_from([1, 8, 256]),
        "--vpp": st.sampled_from([1, 2, 4, 64]),
        "--mbs": st.sampled_from([1, 2, 4, 1024]),
        "--zero": st.sampled_from([0, 1, 2, 3, 4]),
        "--recompute": st.sampled_from(["none", "selective", "full", "half"]),
        "--precision": st.sampled_from(["bf16", "fp8", "fp4"]),
        "--framework": st.sampled_from(["megatron", "deepspeed", "torchtitan", "pytorch", "jax"]),
        "--offload-optimizer": st.sampled_from([0.0, 0.5, 1.0, 2.0]),
        "--top-k": st.sampled_from([1, 3, 50, 51]),
        "--objective": st.sampled_from(["throughput", "cost", "min-gpus", "speed"]),
        "--token-budget": st.sampled_from(["1T", "15T", "2.5B", "1e400", "lots"]),
        "--price-per-gpu-hour": st.sampled_from([0.0, 2.5, 1e9]),
        "--deadline-hours": st.sampled_from([1.0, 1000.0, 0.0]),
        "--fix": st.sampled_from(["tp=8", "tp=8,cp=2", "warp=9", "tp=eight", "tp", ""]),
        "--max": st.sampled_from(["pp=4", "tp=2,pp=2", "mbs=1", "recompute=none"]),
        "--headroom-gib": st.sampled_from([0.0, 5.0, 1e6]),
        "--emit": st.sampled_from(["megatron", "deepspeed", "torchtitan", "tensorflow"]),
        "--out": st.sampled_from(["/proc/x", "/dev/null/x"]),
    }
    if not junk:
        return st.sampled_from(VALID[option]) if option in VALID else plausible[option]
    # three in four draws plausible, so that runs get past the first check and deeper
    return st.one_of(plausible[option], plausible[option], plausible[option], ints | floats | text)


def _argv(
    command: list[str], options: list[str], flags: list[str], *, junk: bool = True
) -> st.SearchStrategy:
    @st.composite
    def build(draw: st.DrawFn) -> list[str]:
        argv = list(command)
        # without junk, exactly one of each pair of exclusive options (as a user would)
        skip = set() if junk else {draw(st.sampled_from(pair)) for pair in EXCLUSIVE}
        for option in options:
            required = option in REQUIRED or (not junk and option in PAIRED)
            if option in skip:
                continue
            if (required and draw(st.integers(0, 9)) > 0) or draw(st.booleans()):
                argv += [option, str(draw(_value(option, junk=junk)))]
        argv += [flag for flag in flags if draw(st.booleans())]
        return argv

    return build()


REQUIRED = ("--model", "--cluster", "--seq-len")
EXCLUSIVE = (("--gpus", "--nodes"), ("--global-batch", "--global-batch-tokens"))
PAIRED = {option for pair in EXCLUSIVE for option in pair}
WORKLOAD = ["--model", "--cluster", "--seq-len", "--gpus", "--nodes", "--global-batch",
            "--global-batch-tokens", "--precision", "--framework"]  # fmt: skip
ESTIMATE = [*WORKLOAD, "--tp", "--pp", "--cp", "--ep", "--vpp", "--mbs", "--zero",
            "--recompute", "--offload-optimizer"]  # fmt: skip
ESTIMATE_FLAGS = ["--json", "--distributed-optimizer", "--sequence-parallel",
                  "--no-flash-attention"]  # fmt: skip
PLAN = [*WORKLOAD, "--top-k", "--objective", "--token-budget", "--price-per-gpu-hour",
        "--deadline-hours", "--fix", "--max", "--headroom-gib", "--emit", "--out"]  # fmt: skip


@fuzz_settings(default=40)
@given(argv=_argv(["estimate"], ESTIMATE, ESTIMATE_FLAGS))
def test_estimate_never_crashes(argv: list[str]) -> None:
    check(argv)


@fuzz_settings(default=20)
@given(argv=_argv(["estimate"], ESTIMATE, ESTIMATE_FLAGS, junk=False))
def test_plausible_estimates_never_crash(argv: list[str]) -> None:
    """Only values from ``VALID``: most runs get as far as the cost model (a layout rule
    may still refuse a combination)."""
    check(argv)


@fuzz_settings(default=4)
@given(argv=_argv(["plan"], [o for o in PLAN if o != "--out"], ["--json"], junk=False))
def test_plausible_plans_never_crash_or_overrun(argv: list[str]) -> None:
    """Only values from ``VALID``: some searches run to their time limit."""
    check([*argv, "--time-limit", str(PLAN_TIME_LIMIT_S)])


@fuzz_settings(default=8)
@given(argv=_argv(["plan"], PLAN, ["--json"]))
def test_plan_never_crashes_or_overruns(argv: list[str]) -> None:
    check([*argv, "--time-limit", str(PLAN_TIME_LIMIT_S)])


@fuzz_settings(default=25)
@given(
    argv=st.one_of(
        st.tuples(st.just("models"), st.just("show"), st.sampled_from(MODELS) | text).map(list),
        st.tuples(st.just("hardware"), st.just("show"), st.sampled_from(CLUSTERS) | text).map(list),
        st.tuples(st.just("emit"), text, st.just("--format"), text).map(list),
        st.tuples(st.just("models"), st.just("import"), text, st.just("--name"), text).map(list),
        st.lists(text, max_size=4),
    )
)
def test_other_commands_never_crash(argv: list[str]) -> None:
    check(argv)
