"""The reserve over the allocated peak: the measured fragmentation share, and on the stage
that holds the output layer at least one fp32 logits block (``planner.cost.memory``)."""

from __future__ import annotations

import pytest

from planner.catalog import load_cluster, load_gpu, load_model
from planner.cost.memory import LOGITS_BLOCK_BYTES
from planner.cost.reserve import memory_reserve
from planner.predict import estimate
from planner.specs.layout import ParallelConfig
from planner.specs.workload import WorkloadSpec

GIB = 2**30


def _reserves(seq_len: int) -> tuple[list[float], list[float], float]:
    """Per stage: reserve beyond the allocated peak, allocated peak (bytes); logits block."""
    model = load_model("llama-3.1-8b")
    layout = ParallelConfig(pp=2, mbs=1, recompute="full")
    result = estimate(
        model=model,
        cluster=load_cluster("dgx-h100", gpus=2),
        workload=WorkloadSpec(seq_len=seq_len, global_batch=8),
        layout=layout,
        framework="pytorch",
        state_layout_name="bf16",
    )
    stages = result.memory.stages
    reserve = memory_reserve(load_gpu("h100-sxm"), layout=layout)
    over = [(s.total_gib - s.allocated_gib) * GIB - reserve.non_allocator_bytes for s in stages]
    block = seq_len * model.vocab_size * LOGITS_BLOCK_BYTES
    return over, [s.allocated_gib * GIB for s in stages], block


def test_long_sequences_reserve_a_logits_block_on_the_last_stage() -> None:
    over, allocated, block = _reserves(32768)
    fragmentation = memory_reserve(load_gpu("h100-sxm"), layout=ParallelConfig(pp=2)).fragmentation
    assert block > fragmentation * allocated[-1]  # 15.7 GiB of fp32 logits
    assert over[-1] == pytest.approx(block, rel=1e-3)
    # the first stage has no output layer: the fragmentation share only
    assert over[0] == pytest.approx(fragmentation * allocated[0], rel=1e-3)


def test_short_sequences_keep_the_fragmentation_share() -> None:
    over, allocated, block = _reserves(2048)
    fragmentation = memory_reserve(load_gpu("h100-sxm"), layout=ParallelConfig(pp=2)).fragmentation
    assert block < fragmentation * allocated[-1]
    assert over == pytest.approx([fragmentation * a for a in allocated], rel=1e-3)


def _shares(steps: tuple[dict, ...]) -> list[float]:
    return [s["memory"]["timed_peak_reserved"] / s["memory"]["timed_peak_allocated"] - 1
            for s in steps]  # fmt: skip


def test_megatron_takes_its_fragmentation_from_megatron_core_steps() -> None:
    import statistics

    from planner.cost.reserve import megatron_steps

    steps = megatron_steps("h200-sxm")
    # megatron_steps.jsonl's 8 completed steps and the 7 default-allocator snapshot runs;
    # the expandable-segments runs, the out-of-memory one, the fused-attention steps and
    # plain PyTorch's are not in
    assert len(steps) == 15
    assert all(s["config"]["framework"] == "megatron" and not s.get("alloc_conf") for s in steps)
    shares = _shares(steps)
    layout = ParallelConfig(tp=2)
    for gpu in ("h100-sxm", "h200-sxm"):  # the H100 has no Megatron-Core step: the H200's
        megatron = memory_reserve(
            load_gpu(gpu), layout=layout, framework="megatron", fused_attention=False
        )
        plain = memory_reserve(load_gpu(gpu), layout=layout, framework="pytorch")
        assert megatron.fragmentation == pytest.approx(statistics.median(shares))
        assert megatron.fragmentation != plain.fragmentation
        assert megatron.non_allocator_bytes == plain.non_allocator_bytes
        assert (
            "Megatron-Core steps with unfused attention and the default allocator on "
            "h200-sxm (15 runs)" in megatron.source
        )
    # other frameworks keep the plain-PyTorch share
    torchtitan = memory_reserve(load_gpu("h100-sxm"), layout=layout, framework="torchtitan")
    assert (
        torchtitan.fragmentation
        == memory_reserve(load_gpu("h100-sxm"), layout=layout).fragmentation
    )


@pytest.mark.parametrize(
    ("fused", "expandable", "runs", "low", "high"),
    [(True, False, 10, 0.05, 0.07), (True, True, 10, 0.0, 0.002), (False, True, 7, 0.04, 0.06)],
)
def test_megatron_share_follows_the_allocation_pattern(
    fused: bool, expandable: bool, runs: int, low: float, high: float
) -> None:
    """Fused attention (the flash-SDPA core attention steps) and expandable segments each
    take the share measured with them; only the default allocator keeps the logits floor."""
    import statistics

    from planner.cost.reserve import megatron_steps

    steps = megatron_steps("h200-sxm", fused_attention=fused, expandable_segments=expandable)
    assert len(steps) == runs
    reserve = memory_reserve(
        load_gpu("h200-sxm"),
        layout=ParallelConfig(tp=2),
        framework="megatron",
        fused_attention=fused,
        expandable_segments=expandable,
    )
    assert reserve.fragmentation == pytest.approx(statistics.median(_shares(steps)))
    assert low < reserve.fragmentation < high
    assert reserve.logits_floor is not expandable
    assert f"({runs} runs)" in reserve.source


def test_expandable_segments_keep_the_default_share_where_not_measured() -> None:
    layout = ParallelConfig(tp=2)
    plain = memory_reserve(load_gpu("h100-sxm"), layout=layout, framework="pytorch")
    expandable = memory_reserve(
        load_gpu("h100-sxm"), layout=layout, framework="pytorch", expandable_segments=True
    )
    assert expandable.fragmentation == plain.fragmentation and expandable.logits_floor
    assert "expandable segments not measured" in expandable.source
