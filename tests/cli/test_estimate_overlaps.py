"""The overlap and runtime flags of ``autopar estimate``, with the frameworks' names.

Each flag changes the cost model the way the framework's switch changes the run
(``planner.cost.time``): ``--tp-comm-overlap`` hides the tensor-parallel collectives behind
the adjacent GEMMs, ``--overlap-grad-reduce`` runs the data-parallel reduction during the
backward, ``--overlap-param-gather`` the distributed optimizer's all-gather during the next
forward, ``--cp-comm-type`` picks the context-parallel algorithm, and ``--ddp-bucket-view``
makes plain PyTorch DDP's gradients views of its buckets (no second copy). Combinations a
framework refuses are one-line errors naming the flag.
"""

from __future__ import annotations

import json

import pytest

SEVENTY_B = (
    "estimate", "--model", "llama-3.1-70b", "--cluster", "dgx-h100", "--nodes", "8",
    "--seq-len", "8192", "--global-batch", "512", "--tp", "8", "--pp", "4",
    "--sequence-parallel", "--distributed-optimizer", "--json",
)  # fmt: skip


def _estimate(run_cli, *args: str) -> dict:
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_tp_comm_overlap_hides_tensor_parallel_communication(run_cli) -> None:
    plain = _estimate(run_cli, *SEVENTY_B)
    overlapped = _estimate(run_cli, *SEVENTY_B, "--tp-comm-overlap")
    assert overlapped["config"]["tp_comm_overlap"] is True
    assert plain["config"]["tp_comm_overlap"] is False  # Megatron's default: off
    before, after = plain["time"]["breakdown_s"], overlapped["time"]["breakdown_s"]
    assert after["tp_comm"] < before["tp_comm"]
    assert after["compute"] == before["compute"]
    assert overlapped["time"]["step_time_s"] < plain["time"]["step_time_s"]
    assert overlapped["memory"] == plain["memory"]


def test_overlap_grad_reduce_and_param_gather_shrink_the_exposed_dp_time(run_cli) -> None:
    plain = _estimate(run_cli, *SEVENTY_B)
    reduce = _estimate(run_cli, *SEVENTY_B, "--overlap-grad-reduce")
    both = _estimate(run_cli, *SEVENTY_B, "--overlap-grad-reduce", "--overlap-param-gather")
    dp = [e["time"]["breakdown_s"]["dp_comm"] for e in (plain, reduce, both)]
    assert dp[0] > dp[1] > dp[2] > 0
    steps = [e["time"]["step_time_s"] for e in (plain, reduce, both)]
    assert steps[0] > steps[1] > steps[2]


def test_cp_comm_type_picks_the_algorithm_and_defaults_per_framework(run_cli) -> None:
    base = (
        "estimate", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--seq-len",
        "16384", "--global-batch", "64", "--cp", "4", "--json",
    )  # fmt: skip
    ring = _estimate(run_cli, *base)
    ulysses = _estimate(run_cli, *base, "--cp-comm-type", "a2a")
    assert ring["config"]["cp_comm_type"] == "p2p"  # Megatron's default
    assert ulysses["config"]["cp_comm_type"] == "a2a"
    assert ring["time"]["breakdown_s"]["cp_comm"] != ulysses["time"]["breakdown_s"]["cp_comm"]
    deepspeed = _estimate(run_cli, *base, "--framework", "deepspeed")
    assert deepspeed["config"]["cp_comm_type"] == "a2a"  # DeepSpeed's only: Ulysses


def test_ddp_bucket_view_drops_the_bucket_copy_of_the_gradients(run_cli) -> None:
    base = (
        "estimate", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "2",
        "--seq-len", "2048", "--global-batch", "2", "--framework", "pytorch", "--json",
    )  # fmt: skip
    # one micro-batch per replica: no no_sync accumulation into separate gradients
    copy = _estimate(run_cli, *base)
    view = _estimate(run_cli, *base, "--ddp-bucket-view")
    assert view["config"]["runtime"]["ddp_bucket_view"] is True
    assert view["memory"]["peak_gib"] < copy["memory"]["peak_gib"]
    assert view["time"] == copy["time"]


def test_megatron_kernel_switches_change_the_time_not_the_memory(run_cli) -> None:
    """Megatron-LM's --cross-entropy-loss-fusion (off by default) fuses the vocab-parallel
    cross entropy's passes; --no-gradient-accumulation-fusion (on by default) adds a hook
    pass per weight and micro-batch; neither changes what is held in memory."""
    base = (
        "estimate", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
        "--seq-len", "4096", "--global-batch", "64", "--tp", "2", "--mbs", "2", "--json",
    )  # fmt: skip
    default = _estimate(run_cli, *base)
    fused = _estimate(run_cli, *base, "--cross-entropy-loss-fusion")
    hooked = _estimate(run_cli, *base, "--no-gradient-accumulation-fusion")
    assert default["config"]["runtime"]["cross_entropy_loss_fusion"] is None  # Megatron's
    assert fused["config"]["runtime"]["cross_entropy_loss_fusion"] is True
    steps = [e["time"]["step_time_s"] for e in (fused, default, hooked)]
    assert steps[0] < steps[1] < steps[2]
    assert fused["memory"] == default["memory"] == hooked["memory"]


def _refused(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autopar: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


EIGHT_B = (
    "estimate", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "8",
    "--seq-len", "4096", "--global-batch", "64",
)  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        # Megatron-LM validate_args: --tp-comm-overlap needs --sequence-parallel (tp > 1)
        (("--tp", "2", "--tp-comm-overlap"), ("tp_comm_overlap requires sequence_parallel",)),
        (("--tp-comm-overlap", "--sequence-parallel"), ("sequence_parallel requires tp > 1",)),
        # --overlap-param-gather needs the distributed optimizer and --overlap-grad-reduce
        (("--overlap-param-gather",), ("overlap_param_gather requires a sharded optimizer",)),
        (
            ("--distributed-optimizer", "--overlap-param-gather"),
            ("overlap_param_gather", "overlap_grad_reduce"),
        ),
        (("--cp", "2", "--cp-comm-type", "ring"), ("cp_comm_type", "p2p")),
        (
            ("--framework", "deepspeed", "--cp", "2", "--cp-comm-type", "p2p"),
            ("--cp-comm-type p2p", "deepspeed runs a2a"),
        ),
        (
            (
                "--framework",
                "deepspeed",
                "--zero",
                "1",
                "--overlap-grad-reduce",
                "--overlap-param-gather",
            ),
            ("--overlap-param-gather", "deepspeed"),
        ),
        (("--framework", "torchtitan", "--overlap-grad-reduce"), ("--overlap-grad-reduce",)),
        (("--ddp-bucket-view",), ("--ddp-bucket-view", "megatron", "--framework pytorch")),
        (
            ("--framework", "torchtitan", "--cross-entropy-loss-fusion"),
            ("--cross-entropy-loss-fusion", "torchtitan"),
        ),
    ],
)
def test_combinations_the_framework_refuses_are_one_line_errors(
    run_cli, flags: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    _refused(run_cli(*EIGHT_B, *flags), *needles)


def test_the_overlap_flags_have_help_with_the_frameworks_names(run_cli) -> None:
    text = run_cli("estimate", "--help").stdout
    for flag in (
        "--tp-comm-overlap", "--no-tp-comm-overlap", "--overlap-grad-reduce",
        "--no-overlap-grad-reduce", "--overlap-param-gather", "--cp-comm-type",
        "--ddp-bucket-view", "--plan", "--rank", "--cross-entropy-loss-fusion",
        "--no-gradient-accumulation-fusion",
    ):  # fmt: skip
        assert flag in text
