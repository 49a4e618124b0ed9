"""The measuring script (benchmarks/measure) on CPU: records, counts, saved-tensor formulas.

Needs torch (the ``profile`` extra); CI has none, so the whole module is skipped there.
The distributed modes run under ``torch.distributed.run`` with two CPU processes (gloo).
"""

from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip(
    "torch", reason="the measuring script needs torch (autopar[profile]); CI has none"
)

MEASURE = Path(__file__).resolve().parents[2] / "benchmarks" / "measure"
sys.path.insert(0, str(MEASURE))  # the script's modules import each other by flat names

import llama  # noqa: E402
import options  # noqa: E402
import parallel  # noqa: E402
import saved  # noqa: E402
import train_step  # noqa: E402

TINY = options.PRESETS["tiny"]
RUN_TIMEOUT_S = 240


def _tiny_params_by_hand() -> int:
    # tiny: 2 layers, h 64, 4 heads of 16, 2 kv heads (kv width 32), ffn 128, vocab 256
    embedding = 256 * 64  # 16384
    per_layer = (
        2 * 64  # two RMSNorm weights
        + 64 * 64  # wq
        + 2 * 64 * 32  # wk, wv
        + 64 * 64  # wo
        + 3 * 64 * 128  # w1, w2, w3
    )  # 36992
    return embedding + 2 * per_layer + 64 + 256 * 64  # + final norm + untied output


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run(args: list[str], out: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=_env(), check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def _tiny_args(out: Path, *extra: str) -> list[str]:
    return [
        str(MEASURE / "train_step.py"),
        "--preset",
        "tiny",
        "--device",
        "cpu",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--out",
        str(out),
        *extra,
    ]


def test_param_count_matches_hand_count() -> None:
    assert TINY.num_params() == _tiny_params_by_hand() == 106816
    model = llama.Llama(TINY)
    assert sum(p.numel() for p in model.parameters()) == _tiny_params_by_hand()


def test_single_run_writes_a_complete_record(tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    (rec,) = _run([sys.executable, *_tiny_args(out, "--mbs", "2", "--grad-accum", "2")], out)
    assert set(rec) >= {"schema", "oom", "config", "memory", "time", "provenance"}
    assert rec["schema"] == 1 and rec["oom"] is False
    config = rec["config"]
    assert config["param_count"] == config["param_count_local"] == _tiny_params_by_hand()
    assert config["mbs"] == 2 and config["grad_accum"] == 2 and config["timed_steps"] == 1
    assert config["foreach"] is False and config["param_dtype"] == "float32"
    assert config["autocast"] is True and config["residual_dtype"] == "float32"
    times = rec["time"]
    assert len(times["step_s"]) == 1 and all(t > 0 for t in times["step_s"])
    assert times["median_s"] > 0 and times["tokens_per_step"] == 2 * 2 * 64
    memory = rec["memory"]
    assert "CPU" in memory.pop("note")
    assert all(value is None for value in memory.values())
    assert len(rec["losses"]) == 2 and all(math.isfinite(x) for x in rec["losses"])
    prov = rec["provenance"]
    for key in (
        "gpu_name",
        "gpu_count",
        "driver",
        "cuda",
        "torch",
        "nccl",
        "python",
        "hostname",
        "date_utc",
        "command",
        "code_sha256",
    ):
        assert key in prov
    assert prov["torch"] == torch.__version__ and "--preset" in prov["command"]
    census = rec["saved_tensors"]
    assert census["block"]["activation"] == census["expected"]["block_activation"]


@pytest.mark.parametrize("precision", ["bf16-autocast", "bf16"])
@pytest.mark.parametrize("mbs", [1, 3])
def test_census_matches_the_documented_formulas(precision: str, mbs: int) -> None:
    autocast = precision == "bf16-autocast"
    model = llama.Llama(TINY)
    model.init_weights(0)
    if not autocast:
        model = model.to(torch.bfloat16)
    got = saved.model_census(model, mbs, autocast=autocast)
    want = got["expected"]
    assert got["block"]["activation"] == want["block_activation"]
    assert got["block"]["weight_cast"] == want["block_weight_cast"]
    assert got["head"]["activation"] == want["head_activation"]
    assert got["head"]["weight_cast"] == want["head_weight_cast"]


def test_census_frees_the_graph_it_builds() -> None:
    # A saved output kept as-is would reference its own grad_fn and leak the graph.
    x = torch.randn(4, requires_grad=True)
    refs: list[weakref.ref[torch.Tensor]] = []

    def forward() -> torch.Tensor:
        y = x.exp()  # exp saves its output
        refs.append(weakref.ref(y))
        return y

    assert saved.census(forward, [x])["activation"] == 16
    gc.collect()
    assert refs[0]() is None


def test_rmsnorm_function_gradients() -> None:
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64, requires_grad=True)
    fn = llama._RMSNormFunction.apply
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, 1e-5), (x, w))


def test_stage_layers_are_contiguous_and_cover_all_layers() -> None:
    split = [parallel.stage_layers(7, 2, s) for s in range(2)]
    assert split == [range(0, 4), range(4, 7)]
    assert [list(parallel.stage_layers(4, 4, s)) for s in range(4)] == [[0], [1], [2], [3]]


def test_options_are_checked_with_numbers_in_the_message() -> None:
    args = options.build_parser().parse_args(["--preset", "tiny", "--mode", "tp"])
    opts = options.options_from_args(args)
    with pytest.raises(ValueError, match="tp=3 must divide num_attention_heads=4"):
        options.check(opts, 3)
    bad = options.options_from_args(
        options.build_parser().parse_args(["--preset", "tiny", "--steps", "2", "--warmup", "2"])
    )
    with pytest.raises(ValueError, match="steps=2, warmup=2"):
        options.check(bad, 1)


def test_out_of_memory_is_recorded_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    real_build = train_step.build_trainer

    def build_then_fail(opts: Any, ctx: Any) -> parallel.Trainer:
        trainer = real_build(opts, ctx)

        def step() -> None:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")

        trainer.step = step
        return trainer

    monkeypatch.setattr(train_step, "build_trainer", build_then_fail)
    args = options.build_parser().parse_args(["--preset", "tiny", "--device", "cpu"])
    opts = options.options_from_args(args)
    rec = train_step.measure(opts, parallel.DistContext(0, 1, torch.device("cpu")))
    assert rec["oom"] is True
    assert rec["oom_info"]["phase"] == "first_step" and rec["oom_info"]["steps_done"] == 0
    assert "out of memory" in rec["oom_info"]["error"]
    assert rec["time"]["median_s"] is None


def test_a_run_leaves_nothing_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    # The sweep runs many configurations in one process: a run must free its model,
    # its parameters and the census graph (which once leaked through a cycle).
    refs: list[weakref.ref[Any]] = []
    real_build = train_step.build_trainer

    def build_and_watch(opts: Any, ctx: Any) -> parallel.Trainer:
        trainer = real_build(opts, ctx)
        refs.extend([weakref.ref(trainer.model), weakref.ref(trainer.model.output.weight)])
        return trainer

    monkeypatch.setattr(train_step, "build_trainer", build_and_watch)
    args = ["--preset", "tiny", "--device", "cpu", "--steps", "2", "--warmup", "1"]
    opts = options.options_from_args(options.build_parser().parse_args(args))
    rec = train_step.measure(opts, parallel.DistContext(0, 1, torch.device("cpu")))
    assert rec["saved_tensors"]["block"]["activation"] > 0
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


def test_smoke_sweep_appends_two_records(tmp_path: Path) -> None:
    out = tmp_path / "sweep.jsonl"
    args = [
        sys.executable,
        str(MEASURE / "sweep.py"),
        "--sweep",
        "smoke",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    records = _run(args, out)
    assert [r["config"]["recompute"] for r in records] == ["none", "full"]
    assert all(r["oom"] is False and r["time"]["median_s"] > 0 for r in records)


def test_single_gpu_sweep_has_25_to_40_runs() -> None:
    import sweep

    runs = sweep.SWEEPS["single-gpu"]
    assert 25 <= len(runs) <= 40
    assert {r[0] for r in runs} == {"llama-1b", "llama-3b", "llama-8b"}


MODE_INFO = {
    "ddp": "ddp_bucket_cap_mb",
    "fsdp2": "fsdp_param_dtype",
    "tp": "tp_plan",
    "pp": "pp_stage_layers",
}


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)
@pytest.mark.parametrize("mode", sorted(MODE_INFO))
def test_two_process_modes_on_cpu(mode: str, tmp_path: Path) -> None:
    out = tmp_path / f"{mode}.jsonl"
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    extra = ["--mode", mode, "--grad-accum", "2", "--recompute", "full"]
    (rec,) = _run([*launcher, *_tiny_args(out, *extra)], out)
    config = rec["config"]
    assert config["world_size"] == 2 and MODE_INFO[mode] in config
    assert config["param_count"] == _tiny_params_by_hand()
    ranks = rec["per_rank"]
    assert len(ranks) == 2 and all(r["time"]["median_s"] > 0 for r in ranks)
    local = [r["param_count_local"] for r in ranks]
    if mode == "ddp":
        assert local == [_tiny_params_by_hand()] * 2
    else:  # sharded or split: each rank holds part of the model
        assert all(n < _tiny_params_by_hand() for n in local)
    if mode == "pp":
        assert sum(local) == _tiny_params_by_hand()
    losses = [x for r in ranks for x in r["losses"]]
    assert losses and all(math.isfinite(x) for x in losses)
