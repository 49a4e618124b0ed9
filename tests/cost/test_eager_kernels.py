"""Kernel launches of a layer: eager PyTorch modules against fused framework kernels.

The host's time per launch is calibrated per kernel the work model lists, so the lists
must match what the frameworks launch: eager modules (``benchmarks/measure/llama.py``,
HuggingFace Llama) run one kernel per op, Megatron with Transformer Engine fuses them.
"""

from __future__ import annotations

from planner.catalog import load_model
from planner.cost.compute import LayerShape, layer_work
from planner.cost.frameworks import implementation, state_layout

SHAPE = LayerShape(tokens=4096, seq_len=4096, tp=1, etp=1, ep=1, cp=1)


def _forward_kernels(framework: str, layout: str) -> int:
    impl = implementation(
        framework=framework,  # type: ignore[arg-type]
        layout=state_layout(layout),
        precision="bf16",
    )
    work = layer_work(load_model("llama-3.1-8b"), 0, shape=SHAPE, impl=impl)
    return sum(w.kernels for w in work.forward)


def test_eager_bf16_layer_launches_one_kernel_per_op() -> None:
    # two RMSNorms (cast up, pow, mean, add eps, rsqrt, scale, cast down, weight): 16;
    # q, k, v and o projections: 4; RoPE on q and k (negate, cat, two products, add): 10;
    # SDPA 1 and its transposed output made contiguous 1; gate and up 2, SiLU and the
    # product 2, down 1; two residual adds 2
    assert _forward_kernels("pytorch", "bf16") == 16 + 4 + 10 + 2 + 2 + 2 + 1 + 2 == 39


def test_autocast_adds_the_casts_it_launches() -> None:
    # fp32 residual: each norm skips its two casts (-4); autocast casts the fp32 inputs
    # of q, k, v, gate and up (+5) and the seven weights (+7)
    assert _forward_kernels("pytorch", "autocast") == 39 - 4 + 5 + 7


def test_megatron_fuses_the_element_wise_chains() -> None:
    # fused qkv 1, attention 1, RoPE 2, o 1, fused gate+up 1, SwiGLU 2, down 1, two norms
    # 2, two residual adds 2
    assert _forward_kernels("megatron", "megatron") == 13
    assert _forward_kernels("torchtitan", "fsdp") == 39  # torchtitan's modules are eager
