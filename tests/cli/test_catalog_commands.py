"""End-to-end tests of ``autopar models ...`` and ``autopar hardware ...``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from planner import count_params, load_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hf"


def test_models_list_json_has_every_model(run_cli) -> None:
    result = run_cli("models", "list", "--json")
    assert result.exit_code == 0, result.stderr
    models = json.loads(result.stdout)
    names = {m["name"] for m in models}
    assert len(models) >= 25 and "llama-3.1-70b" in names
    for entry in models:
        assert isinstance(entry["params_total"], int)
        assert isinstance(entry["params_active"], int)
        assert entry["params_active"] <= entry["params_total"]


def test_models_list_table(run_cli) -> None:
    result = run_cli("models", "list")
    assert result.exit_code == 0
    assert "llama-3.1-70b" in result.stdout and "deepseek-v3" in result.stdout


def test_models_show_json(run_cli) -> None:
    result = run_cli("models", "show", "llama-3.1-70b", "--seq-len", "8192", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["spec"]["num_layers"] == 80
    assert data["params_total"] == 70_553_706_496
    assert data["params_active"] == data["params_total"]
    # 6 x N_matmul + 6 x L x a x d x s (causal), N_matmul excludes the input embedding and norms
    spec = load_model("llama-3.1-70b")
    n_matmul = count_params(spec).active_matmul
    assert data["flops_per_token"] == 6 * n_matmul + 6 * 80 * 64 * 128 * 8192
    assert data["flops_seq_len"] == 8192


def test_models_show_table_names_the_count(run_cli) -> None:
    result = run_cli("models", "show", "mixtral-8x7b")
    assert result.exit_code == 0
    assert "46,702,792,704" in result.stdout and "12,879,925,248" in result.stdout


def test_models_import_prints_and_writes_spec(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "spec.json"
    result = run_cli(
        "models", "import", str(FIXTURES / "llama-3.1-8b.json"), "--out", str(out), "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["params_total"] == 8_030_261_248
    # the written spec is a model file that --model / models show accept
    again = run_cli("models", "show", str(out), "--json")
    assert json.loads(again.stdout)["params_total"] == 8_030_261_248


def test_hardware_list_and_show_json(run_cli) -> None:
    listing = json.loads(run_cli("hardware", "list", "--json").stdout)
    assert len(listing["gpus"]) >= 10
    assert {"dgx-h100", "dgx-a100"} <= {c["name"] for c in listing["clusters"]}
    gpu = json.loads(run_cli("hardware", "show", "h100-sxm", "--json").stdout)
    assert gpu["peak_tflops"]["bf16"] > 900 and gpu["source"].startswith("http")
    cluster = json.loads(run_cli("hardware", "show", "dgx-h100", "--json").stdout)
    assert cluster["gpus_per_node"] == 8 and cluster["gpu"]["id"] == "h100-sxm"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("models", "show", "llama-9"), "unknown model 'llama-9'"),
        (("models", "show", "missing.json"), "file not found"),
        (("models", "show", "llama-3.1-8b", "--seq-len", "0"), "--seq-len"),
        (("models", "import", "nowhere/config.json"), "file not found"),
        (("hardware", "show", "h900"), "unknown hardware 'h900'"),
        (("models", "frobnicate"), "No such command"),
    ],
)
def test_user_errors_are_one_line_exit_2(run_cli, args: tuple[str, ...], expected: str) -> None:
    result = run_cli(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("autopar: error: ") and expected in lines[0]


def test_bad_model_file_names_the_field(run_cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096}))
    result = run_cli("models", "import", str(bad))
    assert result.exit_code == 2 and "missing field" in result.stderr
    spec_file = tmp_path / "mine.json"
    spec_file.write_text(json.dumps({"num_layers": 2, "hidden_size": 64}))
    result = run_cli("models", "show", str(spec_file))
    assert (
        result.exit_code == 2 and "num_attention_heads: required field is missing" in result.stderr
    )


def test_console_entry_point_runs_as_a_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "planner", "models", "show", "gpt2", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["params_total"] == 124_439_808
