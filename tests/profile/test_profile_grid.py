"""What the profiler measures: model shapes from the catalogue, grids, collectives."""

from __future__ import annotations

from planner.profile.grid import (
    TINY,
    LayerDims,
    build_grid,
    collective_points,
    model_gemms,
    model_linears,
)
from planner.profile.provenance import gpu_id_for


def test_llama_8b_linears_split_by_tensor_parallel_size() -> None:
    # llama-3.1-8b: h 4096, 32 heads of 128, 8 kv heads, ffn 14336, vocab 128256
    dims = LayerDims.of("llama-3.1-8b")
    assert model_linears(dims, 1) == [
        ("llama-3.1-8b qkv tp1", (32 + 2 * 8) * 128, 4096),
        ("llama-3.1-8b o_proj tp1", 4096, 4096),
        ("llama-3.1-8b gate_up tp1", 2 * 14336, 4096),
        ("llama-3.1-8b down tp1", 4096, 14336),
        ("llama-3.1-8b lm_head tp1", 128256, 4096),
    ]
    tp4 = dict((label.split()[1], (out, inp)) for label, out, inp in model_linears(dims, 4))
    assert tp4["qkv"] == (1536, 4096)  # column parallel: output features split
    assert tp4["o_proj"] == (4096, 1024)  # row parallel: input features split
    assert tp4["down"] == (4096, 3584)
    assert tp4["lm_head"] == (32064, 4096)  # vocabulary split


def test_each_linear_gives_its_three_products() -> None:
    points = model_gemms("bf16", models=[LayerDims.of("llama-3.1-8b")], tps=(2,), tokens=(4096,))
    shapes = {(p.role, p.m, p.n, p.k) for p in points}
    # qkv at tp 2: out 3072, in 4096
    assert ("forward", 4096, 3072, 4096) in shapes  # y = x Wᵀ
    assert ("grad_input", 4096, 4096, 3072) in shapes  # dx = dy W
    assert ("grad_weight", 3072, 4096, 4096) in shapes  # dW = dyᵀ x
    assert len(points) == len(shapes)  # deduplicated
    assert all(p.labels for p in points)


def test_shared_shapes_are_measured_once_with_every_label() -> None:
    # the o-proj at tp 1 and the forward of any square 4096 product coincide across tokens
    points = model_gemms("bf16", models=[LayerDims.of("llama-3.1-8b")], tps=(1,), tokens=(4096,))
    square = [p for p in points if (p.m, p.n, p.k) == (4096, 4096, 4096)]
    assert len(square) == 3  # forward, grad_input, grad_weight of the o-proj
    forward = next(p for p in square if p.role == "forward")
    assert forward.labels == ("llama-3.1-8b o_proj tp1 tokens 4096",)


def test_default_grid_covers_the_three_llamas_and_a_power_of_two_cube() -> None:
    grid = build_grid(quick=False, gemm_dtypes=("bf16",), world_size=1)
    cube = [p for p in grid.gemm if p.role == "grid"]
    assert len(cube) == 8**3  # 256 .. 32768 in each dimension
    labels = " ".join(label for p in grid.gemm for label in p.labels)
    for name in ("llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b"):
        for tp in (1, 2, 4, 8):
            assert f"{name} qkv tp{tp} tokens 16384" in labels
    # 405b lm head over tp 8: vocabulary 128256 / 8
    assert any(p.n == 16032 and p.role == "forward" for p in grid.gemm)
    layouts = {(p.heads, p.kv_heads) for p in grid.attention if p.head_dim == 128}
    assert {(32, 8), (4, 1), (64, 8), (8, 1), (128, 8), (16, 1)} <= layouts
    assert {p.seq_len for p in grid.attention} == {1024, 2048, 4096, 8192, 16384}
    assert any(not p.causal for p in grid.attention)
    assert grid.collectives == ()


def test_collectives_groups_and_send_recv_pairs() -> None:
    points = collective_points(8, sizes=(1024,))
    groups = {(p.op, p.group_size) for p in points}
    assert {("all_reduce", 2), ("all_reduce", 4), ("all_reduce", 8)} <= groups
    assert {g for op, g in groups if op == "send_recv"} == {2}
    assert {p.group_size for p in collective_points(6, sizes=(1024,))} == {2, 4, 6}
    assert collective_points(1, sizes=(1024,)) == []


def test_quick_grid_is_tiny() -> None:
    grid = build_grid(quick=True, gemm_dtypes=("bf16",), world_size=2)
    assert max(max(p.m, p.n, p.k) for p in grid.gemm) <= max(TINY.vocab, 128)
    assert len(grid.gemm) < 100 and len(grid.attention) < 20
    assert {p.op for p in grid.collectives} == {
        "all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv",
    }  # fmt: skip


def test_gpu_names_map_to_hardware_ids() -> None:
    assert gpu_id_for("NVIDIA H100 80GB HBM3") == "h100-sxm"
    assert gpu_id_for("NVIDIA H100 PCIe") == "h100-pcie"
    assert gpu_id_for("NVIDIA H200") == "h200-sxm"
    assert gpu_id_for("NVIDIA A100-SXM4-40GB") == "a100-sxm-40gb"
    assert gpu_id_for("NVIDIA A100-SXM4-80GB") == "a100-sxm-80gb"
    assert gpu_id_for("NVIDIA A100 80GB PCIe") == "a100-pcie-80gb"
    assert gpu_id_for("Some Future GPU") is None
    assert gpu_id_for(None) is None
