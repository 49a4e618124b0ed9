"""``autopar plan`` with the launch's run-time settings: every layout is priced with them,
each plan records them, and ``autopar estimate --plan`` reproduces the plan exactly.

The case is NVIDIA's DGX Cloud Llama-3.1-8B recipe on 8 H100s (TP1 PP1 CP2 DP4, micro-batch
1, no recompute, distributed optimizer, 8192 tokens, global batch 128), which launches with
``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``. ``--headroom-gib 0`` asks for the
verdict ``autopar estimate`` gives (no margin kept beyond the modelled peak).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner import estimate_entry, load_cluster, load_model
from planner.cost.frameworks import Runtime
from planner.plan import PlanRequest, plan
from planner.specs.workload import WorkloadSpec

NVIDIA_LAYOUT = "tp=1,pp=1,cp=2,mbs=1,recompute=none,distributed_optimizer=true"
JOB = (
    "plan", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
    "--seq-len", "8192", "--global-batch", "128", "--fix", NVIDIA_LAYOUT,
    "--headroom-gib", "0", "--top-k", "2",
)  # fmt: skip


def test_the_recipe_fits_only_with_the_allocator_it_launches_with(run_cli, tmp_path: Path) -> None:
    result = run_cli(*JOB, "--expandable-segments", "--json")
    assert result.exit_code == 0, result.stderr
    path = tmp_path / "plan.json"
    path.write_text(result.stdout)
    plans = json.loads(result.stdout)["plans"]
    for rank, entry in enumerate(plans, start=1):
        config = entry["config"]
        assert (config["tp"], config["pp"], config["cp"], config["dp"]) == (1, 1, 2, 4)
        assert config["runtime"]["expandable_segments"] is True
        assert entry["memory"]["fits"]
        again = run_cli("estimate", "--plan", str(path), "--rank", str(rank), "--json")
        assert again.exit_code == 0 and again.stderr == "", again.stderr
        estimate = json.loads(again.stdout)
        for block in ("config", "memory", "time"):
            assert estimate[block] == entry[block], (rank, block)
    default = run_cli(*JOB)
    assert default.exit_code == 2
    assert "no layout fits in memory" in default.stderr
    assert "tp 1 pp 1 dp 4 cp 2 mbs 1 recompute none" in default.stderr


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (("--framework", "deepspeed", "--grad-reduce-in-bf16"), "--grad-reduce-in-bf16"),
        (("--framework", "torchtitan", "--layer-spec", "local"), "--layer-spec"),
        (("--framework", "deepspeed", "--cross-entropy-loss-fusion"), "no such switch"),
    ],
)
def test_settings_a_framework_lacks_are_refused(run_cli, flags: tuple[str, ...], words: str):
    result = run_cli(*JOB[:-6], *flags)
    assert result.exit_code == 2
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_local_spec_and_switches_reach_every_plan_and_its_reproduction() -> None:
    runtime = Runtime(grad_reduce_in_bf16=True, gradient_accumulation_fusion=False)
    request = PlanRequest(
        model=load_model("llama-3.1-8b"),
        cluster=load_cluster("dgx-h100", gpus=8),
        workload=WorkloadSpec(seq_len=4096, global_batch=64),
        fixed={"tp": 2, "pp": 1, "cp": 1},
        top_k=2,
        runtime=runtime,
        layer_spec="local",
    )
    for entry in plan(request).plans:
        assert entry.config.runtime == runtime and entry.config.layer_spec == "local"
        assert not entry.config.tp_comm_overlap  # Transformer Engine's userbuffers only
        again = estimate_entry(entry)
        assert (again.config, again.memory, again.time) == (entry.config, entry.memory, entry.time)
