"""``autopar profile`` refuses clearly where it cannot run (these need no torch)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def test_without_torch_it_says_to_install_the_extra(run_cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    result = run_cli("profile", "--out", str(tmp_path / "p.json"))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "autopar: error: autopar profile needs PyTorch, which is not installed: "
        "pip install 'autopar[profile]'"
    )
    assert not (tmp_path / "p.json").exists()


def test_unknown_gpu_id_is_refused(run_cli, tmp_path: Path) -> None:
    result = run_cli("profile", "--out", str(tmp_path / "p.json"), "--gpu-id", "h900")
    assert result.exit_code == 2
    assert result.stderr.startswith("autopar: error: --gpu-id: unknown GPU 'h900'; known: ")
    assert "h100-sxm" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--sections", "gemm,flops"), "--sections: unknown section(s) flops"),
        (("--time-limit", "0"), "--time-limit must be positive"),
    ],
)
def test_bad_options_are_one_line_errors(run_cli, tmp_path, args, message) -> None:
    result = run_cli("profile", "--out", str(tmp_path / "p.json"), *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"autopar: error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_out_is_required(run_cli) -> None:
    result = run_cli("profile")
    assert result.exit_code == 2
    assert "--out" in result.stderr
