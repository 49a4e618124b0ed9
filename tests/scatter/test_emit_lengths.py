"""DeepSpeed and torchtitan launch files for a plan priced over variable lengths: the
static layout, with why (no per-sequence CP size) and how to mask attention to each
document, in the launch script and the notes; nothing without lengths."""

from __future__ import annotations

import tomllib
from functools import cache
from typing import Any

import pytest

from planner.catalog import load_cluster, load_model
from planner.emit import emit_files
from planner.plan import LengthsOption, PlanRequest, plan
from planner.specs.workload import WorkloadSpec

LENGTHS = [[32768, 32768] + [2048] * 40]


@cache
def _plan(framework: str, with_lengths: bool = True) -> dict[str, Any]:
    outcome = plan(
        PlanRequest(
            model=load_model("llama-3.1-8b"), cluster=load_cluster("hgx-h200", gpus=16),
            workload=WorkloadSpec(seq_len=32768, global_batch=16), framework=framework,
            top_k=1,
            lengths=LengthsOption(batches=LENGTHS, source="test lengths", time_limit_s=0.3)
            if with_lengths else None,
        )
    )  # fmt: skip
    return outcome.model_dump(mode="json")["plans"][0]  # what `autopar emit` reads


def _flat(text: str) -> str:
    return " ".join(line.lstrip("#- ").strip() for line in text.splitlines())


def test_deepspeed_runs_the_static_layout_and_says_why() -> None:
    entry = _plan("deepspeed")
    assert entry["scattering"]["wins"] is False
    files = emit_files(entry, format="deepspeed")
    cp = entry["config"]["cp"]
    for name in ("launch_deepspeed.sh", "README.md"):
        text = _flat(files[name])
        assert "Variable sequence lengths (test lengths)" in text, name
        assert f"static layout, cp {cp} for every sequence" in text
        assert "DeepSpeed has no hybrid context parallel" in text
        assert "restart attention at every document boundary" in text
    assert "Variable" not in files["ds_config.json"]


@pytest.mark.parametrize("fmt", ["torchtitan-toml"])
def test_torchtitan_runs_the_static_layout_and_names_document_masking(fmt: str) -> None:
    entry = _plan("torchtitan")
    files = emit_files(entry, format=fmt)
    for name in ("run_torchtitan.sh", "torchtitan.toml"):
        text = _flat(files[name])
        assert "torchtitan has no per-sequence context-parallel size" in text, name
        assert "attn_mask_type 'block_causal'" in text and "'8B_flex'" in text
    tomllib.loads(files["torchtitan.toml"])  # the comment keeps the job file valid


def test_where_hybrid_cp_wins_the_note_points_to_megatron() -> None:
    entry = _plan("deepspeed")
    flipped = {**entry, "scattering": {**entry["scattering"], "wins": True,
                                        "speedup_over_static": 1.25}}  # fmt: skip
    text = _flat(emit_files(flipped, format="deepspeed")["launch_deepspeed.sh"])
    assert "predicts a CP size per sequence 1.25x faster" in text
    assert "emit megatron to run that" in text


def test_without_lengths_nothing_is_said() -> None:
    files = emit_files(_plan("deepspeed", with_lengths=False), format="deepspeed")
    assert all("Variable sequence lengths" not in text for text in files.values())
