"""Bad input on the command line: one line on stderr, exit code 2, before any work.

Each case here was once a hang, a traceback or a silently accepted mistake; the test
names say which. The bounds themselves are ``planner.specs.limits``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from planner.cli.files import write_files, write_text
from planner.cli.inputs import parse_tokens
from planner.errors import OutputError, SpecError
from planner.specs import limits as L

PLAN = ("plan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--seq-len", "4096")
ESTIMATE = ("estimate", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--seq-len", "4096")
SLOW_S = 10.0
"""Far above the time any of these refusals takes (well under a second past start-up)."""


def _refused(result, *needles: str) -> str:
    """One line on stderr, exit code 2, nothing on stdout; returns the line."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autopar: error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _timed(run_cli, *args: str):
    started = time.perf_counter()
    result = run_cli(*args)
    assert time.perf_counter() - started < SLOW_S
    return result


def test_a_billion_gpus_is_refused_at_once(run_cli) -> None:
    """It used to hang: the candidate enumeration looped over every integer up to 10^9."""
    result = _timed(run_cli, *PLAN, "--gpus", "1000000000", "--global-batch", "64")
    _refused(result, "num_gpus", str(L.MAX_GPUS))


def test_a_huge_global_batch_is_refused_not_allocated(run_cli) -> None:
    """It used to allocate 1.46 TiB for the pipeline schedule and die in numpy."""
    result = _timed(run_cli, *ESTIMATE, "--gpus", "8", "--global-batch", "99999999999")
    _refused(result, "global_batch", str(L.MAX_GLOBAL_BATCH))


def test_too_many_tokens_per_step_is_refused(run_cli) -> None:
    result = run_cli(*ESTIMATE, "--gpus", "8", "--global-batch-tokens", "1Gi")
    _refused(result, "global_batch_tokens", str(L.MAX_GLOBAL_BATCH))


def test_a_pipeline_schedule_too_large_to_simulate_is_refused(run_cli) -> None:
    args = ("--gpus", "8", "--global-batch", "16384", "--pp", "8", "--vpp", "4")
    _refused(run_cli(*ESTIMATE, *args), "pipeline operations", str(L.MAX_PIPELINE_OPS))


def test_a_model_over_the_parameter_bound_is_refused(run_cli, tmp_path: Path) -> None:
    """A config of about 1.5e18 parameters ran past its time limit; the spec now refuses
    it, naming the bound (every width within its own bound: 4,096 experts of 2^17)."""
    config = {
        "model_type": "mixtral", "hidden_size": 16384, "intermediate_size": 131072,
        "num_hidden_layers": 64, "num_attention_heads": 128, "num_key_value_heads": 8,
        "num_local_experts": 4096, "num_experts_per_tok": 2, "vocab_size": 128256,
        "max_position_embeddings": 8192, "rope_theta": 10000.0,
    }  # fmt: skip
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    _refused(run_cli("models", "import", str(path)), "parameters", "1e+15")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        pytest.param(("--time-limit", "0.01"), ("time_limit", "0.01"), id="time-limit-low"),
        pytest.param(("--time-limit", "100000"), ("time_limit", "3600"), id="time-limit-high"),
        pytest.param(("--top-k", "51"), ("top_k", "50"), id="top-k"),
        pytest.param(("--time-limit", "nan"), ("time_limit",), id="time-limit-nan"),
        pytest.param(("--headroom-gib", "nan"), ("headroom",), id="headroom-nan"),
    ],
)
def test_search_bounds_are_checked_before_searching(run_cli, args, needles) -> None:
    result = _timed(run_cli, *PLAN, "--gpus", "8", "--global-batch", "64", *args)
    _refused(result, *needles)


def test_emit_into_an_unwritable_directory_is_one_line_before_the_search(run_cli) -> None:
    """It used to search, then die with FileNotFoundError writing /proc/x."""
    result = _timed(
        run_cli, *PLAN, "--gpus", "8", "--global-batch", "64", "--emit", "megatron", "--out",
        "/proc/x",
    )  # fmt: skip
    _refused(result, "--out", "/proc/x")


def test_an_unknown_emit_format_is_refused_before_the_search_naming_emit(run_cli) -> None:
    """It used to search for 6 s, then name --format (an option plan does not have)."""
    result = _timed(run_cli, *PLAN, "--gpus", "8", "--global-batch", "64", "--emit", "tensorflow")
    line = _refused(result, "--emit", "tensorflow", "megatron")
    assert "--format" not in line


@pytest.mark.parametrize(
    ("framework", "emit"),
    [("deepspeed", "megatron"), ("megatron", "torchtitan-toml"), ("torchtitan", "deepspeed")],
)
def test_an_emit_format_of_another_framework_is_refused_before_the_search(
    run_cli, tmp_path: Path, framework: str, emit: str
) -> None:
    """A plan searched for one framework's knobs and memory does not launch on another:
    refused before the search, naming both flags, and no launch directory is made."""
    out = tmp_path / "run"
    result = _timed(
        run_cli, *PLAN, "--gpus", "8", "--global-batch", "64", "--framework", framework,
        "--emit", emit, "--out", str(out),
    )  # fmt: skip
    _refused(result, "--emit", "--framework", emit, framework)
    assert not out.exists()


def test_out_without_emit_is_refused(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli(*PLAN, "--gpus", "8", "--global-batch", "64", "--out", str(out))
    _refused(result, "--out", "--emit")
    assert not out.exists()


def test_models_import_into_an_unwritable_file_is_one_line(run_cli, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(_SMALL_CONFIG))
    _refused(run_cli("models", "import", str(config), "--out", "/proc/nope.json"), "/proc/nope")
    _refused(run_cli("models", "import", str(config), "--out", str(tmp_path)), "directory")


_SMALL_CONFIG = {
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
    "vocab_size": 100, "max_position_embeddings": 128, "rope_theta": 10000.0,
}  # fmt: skip


def test_a_name_with_a_space_or_a_slash_is_refused(run_cli, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(_SMALL_CONFIG))
    result = run_cli("models", "import", str(config), "--name", "bad name/with slash")
    _refused(result, "--name", "bad name/with slash", "no spaces")
    assert run_cli("models", "import", str(config), "--name", "good-name_1.5").exit_code == 0


def test_rope_scaling_is_reported_not_dropped_silently(run_cli, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    scaling = {"rope_type": "llama3", "factor": 8.0}
    config.write_text(json.dumps({**_SMALL_CONFIG, "rope_scaling": scaling}))
    result = run_cli("models", "import", str(config), "--json")
    assert result.exit_code == 0
    json.loads(result.stdout)  # stdout stays pure JSON
    warning = result.stderr.strip()
    assert warning.startswith("autopar: warning: rope_scaling") and "not modelled" in warning
    config.write_text(json.dumps(_SMALL_CONFIG))
    assert run_cli("models", "import", str(config), "--json").stderr == ""


def test_m_means_a_million_tokens_in_both_options() -> None:
    """'M' was 2^20 in --global-batch-tokens and 10^6 in --token-budget."""
    assert parse_tokens("16M", option="--global-batch-tokens", whole=True) == 16_000_000
    assert parse_tokens("16M", option="--token-budget") == 16e6
    assert parse_tokens("16Mi", option="--global-batch-tokens", whole=True) == 16 * 2**20
    assert parse_tokens("2.5B", option="--token-budget") == 2.5e9
    assert parse_tokens("15T", option="--token-budget") == 15e12
    for bad in ("16Q", "1e999", "16Bi", "", "-1"):
        with pytest.raises(SpecError, match="--token-budget"):
            parse_tokens(bad, option="--token-budget")
    with pytest.raises(SpecError, match="not a whole number"):
        parse_tokens("1.5", option="--global-batch-tokens", whole=True)


def test_the_global_batch_bound_is_the_services(run_cli) -> None:
    """REST capped the batch at 16,384 while the CLI had no cap: one bound now."""
    from api.schemas import WorkloadRequest

    schema = WorkloadRequest.model_json_schema()["properties"]["global_batch"]
    assert schema["anyOf"][0]["maximum"] == L.MAX_GLOBAL_BATCH
    over = str(L.MAX_GLOBAL_BATCH + 1)
    _refused(run_cli(*ESTIMATE, "--gpus", "8", "--global-batch", over), "global_batch")


@pytest.mark.parametrize("command", ["estimate", "plan", "emit", "models import", "serve"])
def test_help_never_cuts_an_option_name_at_80_columns(
    run_cli, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    result = run_cli(*command.split(), "--help")
    assert result.exit_code == 0
    assert "…" not in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    if command == "estimate":
        for name in ("--distributed-optimizer", "--sequence-parallel", "--global-batch-tokens"):
            assert name in result.stdout


def test_sequence_parallel_has_help(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    text = run_cli("estimate", "--help").stdout
    after = text.split("--sequence-parallel", 1)[1].split("\n  --", 1)[0]
    assert "sequence" in after.lower() and "tp" in after


def test_profile_checks_its_output_before_measuring(run_cli) -> None:
    result = _timed(run_cli, "profile", "--out", "/proc/x/profile.json")
    _refused(result, "--out", "/proc/x")


def test_the_writer_turns_os_errors_into_one_line(tmp_path: Path) -> None:
    written = write_files(tmp_path / "run", {"a.sh": "echo\n", "b.txt": "b\n"}, option="--out")
    assert [path.name for path in written] == ["a.sh", "b.txt"]
    assert (tmp_path / "run" / "a.sh").stat().st_mode & 0o111
    (tmp_path / "file").write_text("")
    for target, reason in (
        (tmp_path / "file", "not a directory"),
        (tmp_path / "file" / "sub", "cannot create directory"),
        (Path("/proc/x"), "cannot create directory"),
    ):
        with pytest.raises(OutputError, match=reason):
            write_files(target, {"a.txt": ""}, option="--out")
    with pytest.raises(OutputError, match="is a directory"):
        write_text(tmp_path, "x", option="--out")


def test_a_flag_that_conflicts_with_the_frameworks_default_is_one_line(run_cli) -> None:
    """Found by tests/fuzz: --distributed-optimizer under torchtitan (FSDP, ZeRO-3 by
    default) raised pydantic's ValidationError through the CLI boundary."""
    args = ("--gpus", "8", "--global-batch", "64", "--framework", "torchtitan")
    result = run_cli(*ESTIMATE, *args, "--distributed-optimizer")
    _refused(result, "torchtitan", "zero_stage 3", "distributed_optimizer")


@pytest.mark.parametrize("command", ["estimate", "plan"])
def test_a_precision_the_gpu_lacks_is_one_line(run_cli, command: str) -> None:
    """Found by tests/fuzz: fp8 on an A100 raised a bare ValueError (a traceback)."""
    args = ("--model", "llama-3.1-8b", "--cluster", "dgx-a100", "--seq-len", "1024")
    result = run_cli(command, *args, "--gpus", "2", "--global-batch", "8", "--precision", "fp8")
    _refused(result, "precision", "fp8", "a100")


@pytest.mark.parametrize(
    ("option", "value", "bound"),
    [("--refine", "99999", "10000"), ("--refine-on-hardware", "99", "50"),
     ("--measure-steps", "5000", "1000")],
)  # fmt: skip
def test_refinement_and_measurement_counts_are_bounded(
    run_cli, option: str, value: str, bound: str
) -> None:
    result = _timed(
        run_cli, "plan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "4096", "--global-batch", "64", option, value,
    )  # fmt: skip
    _refused(result, option, bound)
