"""End-to-end tests of ``autopar emit``: files written, formats, errors, valid shell."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

PLANS = Path(__file__).resolve().parents[1] / "fixtures" / "plans"
EXPRESSIBLE = [
    ("llama-3.1-70b-64xh100.json", "megatron", {"launch_megatron.sh", "megatron_args.txt"}),
    ("llama-3.1-8b-8xh100-zero2.json", "deepspeed", {"ds_config.json", "launch_deepspeed.sh"}),
    ("llama-3.1-8b-8xh100-fsdp.json", "torchtitan", {"autopar_torchtitan.py", "run_torchtitan.sh"}),
]


@pytest.mark.parametrize(("plan", "fmt", "expected"), EXPRESSIBLE)
def test_emit_writes_the_files(run_cli, tmp_path: Path, plan: str, fmt: str, expected: set) -> None:
    out = tmp_path / "run"
    result = run_cli("emit", str(PLANS / plan), "--format", fmt, "--out", str(out))
    assert result.exit_code == 0, result.stderr
    written = {path.name for path in out.iterdir()}
    assert expected <= written
    for script in out.glob("*.sh"):
        assert script.stat().st_mode & 0o111, f"{script.name} is not executable"
        if shutil.which("bash"):
            check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
            assert check.returncode == 0, check.stderr


def test_emit_is_deterministic(run_cli) -> None:
    plan = str(PLANS / "llama-3.1-70b-64xh100.json")
    first = run_cli("emit", plan, "--format", "megatron", "--json")
    second = run_cli("emit", plan, "--format", "megatron", "--json")
    assert first.exit_code == 0 and first.stdout == second.stdout
    args = json.loads(first.stdout)["megatron_args.txt"].split()
    assert "--tensor-model-parallel-size" in args
    assert args[args.index("--tensor-model-parallel-size") + 1] == "8"
    assert args[args.index("--num-virtual-stages-per-pipeline-rank") + 1] == "2"


def test_torchtitan_toml_for_pinned_releases(run_cli) -> None:
    result = run_cli(
        "emit", str(PLANS / "llama-3.1-8b-8xh100-fsdp.json"), "--format", "torchtitan",
        "--torchtitan-version", "0.2", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "torchtitan.toml" in json.loads(result.stdout)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--format", "slurm"), "unknown 'slurm'"),
        (("--format", "torchtitan", "--torchtitan-version", "9"), "--torchtitan-version"),
        (("--format", "deepspeed"), "tp = 8"),
    ],
)
def test_emit_errors_are_one_line(run_cli, tmp_path: Path, args: tuple, expected: str) -> None:
    plan = str(PLANS / "llama-3.1-70b-64xh100.json")
    result = run_cli("emit", plan, *args, "--out", str(tmp_path / "x"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0]


def test_emit_rejects_missing_and_malformed_plans(run_cli, tmp_path: Path) -> None:
    assert "not found" in run_cli("emit", str(tmp_path / "none.json")).stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    result = run_cli("emit", str(bad))
    assert result.exit_code == 2 and "not valid JSON" in result.stderr
    bad.write_text(json.dumps({"config": {"num_gpus": 8}}))
    result = run_cli("emit", str(bad))
    assert result.exit_code == 2 and "missing field" in result.stderr


def test_emit_refuses_a_plan_whose_global_batch_was_edited(run_cli, tmp_path: Path) -> None:
    """511 sequences with mbs 1 and dp 2 are no whole number of micro-batches: refused,
    and nothing is written (it used to write --global-batch-size 511)."""
    data = json.loads((PLANS / "llama-3.1-70b-64xh100.json").read_text())
    data["config"]["global_batch"] = 511
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    out = tmp_path / "run"
    for fmt in ("megatron", "deepspeed", "torchtitan"):
        result = run_cli("emit", str(edited), "--format", fmt, "--out", str(out))
        assert result.exit_code == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "global_batch 511 is not micro-batch size x dp x micro-batches" in lines[0]
        assert not out.exists()


def _plan_json(**config: object) -> dict:
    data = json.loads((PLANS / "llama-3.1-70b-64xh100.json").read_text())
    data["config"].update(config)
    return data


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ([], "must be a JSON object, not a list"),
        ([_plan_json()], "must be a JSON object, not a list"),
        ("plan", "must be a JSON object, not a string"),
        (3, "must be a JSON object, not a number"),
        (None, "must be a JSON object, not null"),
        (True, "must be a JSON object, not true/false"),
        ({"plans": []}, "holds no plans"),
        ({"plans": {"config": {}}}, "holds no plans"),
        ({"plans": [7]}, "must be a JSON object, not a number"),
        ({"config": [1, 2]}, "config must be a JSON object, not a list"),
        ({"time": {}}, "missing field 'config' in the plan"),
        ({**_plan_json(), "time": [1]}, "time must be a JSON object, not a list"),
        ({**_plan_json(), "memory": {"peak_gib": "a lot"}}, "memory.peak_gib must be a number"),
        (_plan_json(num_gpus="64"), "config.num_gpus must be a whole number, not '64'"),
        (_plan_json(seq_len=8192.5), "config.seq_len must be a whole number"),
        (_plan_json(model_spec=[1]), "model_spec"),
        (_plan_json(tp="eight"), "tp"),
        ({"config": {"num_gpus": 8}}, "missing field 'model_spec' in 'config'"),
        (_plan_json(global_batch=0), "global_batch: Input should be greater than 0"),
        (_plan_json(precision="fp64"), "precision: Input should be"),
    ],
)
def test_emit_of_what_is_not_a_plan_is_one_line(
    run_cli, tmp_path: Path, content: object, expected: str
) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(content))
    result = run_cli("emit", str(path), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
