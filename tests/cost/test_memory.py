"""Per-stage memory (stage_memory through planner.estimate) against hand counts.

Model states follow the bytes-per-parameter counts of the ZeRO paper (Rajbhandari et al.
2020, section 3.1) and of Megatron-LM's distributed-optimizer table
(docs/source/api-guide/dist_optimizer.md): Megatron 2 + 4 + 12 = 18; distributed optimizer
6 + 12/(dp·cp); ZeRO-1/2/3 2 + 2 + 12/N, 2 + 14/N, 16/N; FSDP2 16/N; plain bf16 8;
autocast 16. The parameters of a stage are counted here from planner.graph.params, one
GPU's share by hand: Llama has no biases, so a layer's two RMSNorm weights (2h) are
replicated over the TP ranks and the rest is split.

Estimates report GiB rounded to 3 decimals, so GiB comparisons allow 0.0006 GiB; the
exact-byte tests call ``stage_memory`` on tiny models instead.
"""

from __future__ import annotations

from functools import cache
from itertools import pairwise

import pytest

from planner import ClusterSpec, ModelSpec, ParallelConfig, WorkloadSpec, load_cluster, load_model
from planner.cost.frameworks import implementation, state_layout
from planner.cost.memory import MemoryContext, MemoryReserve, StageMemory, stage_memory
from planner.graph.build import Implementation, build_graph
from planner.graph.params import count_params, layer_params
from planner.predict import Estimate, StageReport, estimate

GIB = 2**30
ROUNDING = 6e-4  # reports round to 0.001 GiB


@cache
def _model(name: str) -> ModelSpec:
    return load_model(name)


@cache
def _cluster(gpus: int) -> ClusterSpec:
    return load_cluster("dgx-h100", gpus=gpus)


def run(
    model: str = "llama-3.1-8b",
    *,
    gpus: int = 8,
    seq_len: int = 4096,
    global_batch: int = 64,
    framework: str = "megatron",
    state_layout_name: str | None = None,
    flash_attention: bool = True,
    **layout: object,
) -> Estimate:
    return estimate(
        model=_model(model),
        cluster=_cluster(gpus),
        workload=WorkloadSpec(seq_len=seq_len, global_batch=global_batch),
        layout=ParallelConfig(**layout),
        framework=framework,  # type: ignore[arg-type]
        state_layout_name=state_layout_name,
        flash_attention=flash_attention,
    )


def states_gib(stage: StageReport) -> float:
    return stage.weights_gib + stage.gradients_gib + stage.optimizer_gib


# --- llama-3.1-8b parameter shares ----------------------------------------------------
# h 4096, 32 heads of 128, 8 KV heads, f 14336, V 128256, 32 layers, untied.
# layer: wq, wo 2·4096² + wk, wv 2·4096·1024 + MLP 3·4096·14336 + norms 2·4096
LAYER = 2 * 4096**2 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096  # 218_112_000
NORMS = 2 * 4096
TABLE = 128256 * 4096  # embedding, and the untied output projection


def layer_share(tp: int) -> float:
    return (LAYER - NORMS) / tp + NORMS


def test_llama_8b_counts_agree_with_the_hand_count() -> None:
    spec = _model("llama-3.1-8b")
    counts = layer_params(spec, 0)
    assert counts.total == LAYER == 218_112_000 and counts.norms == NORMS
    assert count_params(spec).total == TABLE + 32 * LAYER + 4096 + TABLE == 8_030_261_248


def assert_states(
    stage: StageReport, params: float, *, weights: float, grads: float, opt: float
) -> None:
    """weights/grads/optimizer GiB equal bytes-per-parameter x ``params`` (rounded)."""
    assert stage.weights_gib == pytest.approx(weights * params / GIB, abs=ROUNDING)
    assert stage.gradients_gib == pytest.approx(grads * params / GIB, abs=ROUNDING)
    assert stage.optimizer_gib == pytest.approx(opt * params / GIB, abs=ROUNDING)


def test_megatron_states_are_18_bytes_per_parameter_on_every_stage() -> None:
    # tp 2, pp 4 on 8 GPUs (dp 1): 8 layers per stage, tables split over tp
    stages = run(tp=2, pp=4).memory.stages
    middle = 8 * layer_share(2)  # 872_480_768
    per_stage = [middle + TABLE / 2, middle, middle, middle + TABLE / 2 + 4096]
    for stage, params in zip(stages, per_stage, strict=True):
        assert_states(stage, params, weights=2, grads=4, opt=12)
        assert states_gib(stage) == pytest.approx(18 * params / GIB, abs=3 * ROUNDING)


@pytest.mark.parametrize(("gpus", "cp"), [(8, 1), (16, 2)])
def test_distributed_optimizer_is_6_plus_12_over_dp_cp_on_a_layer_only_stage(
    gpus: int, cp: int
) -> None:
    # tp 1, pp 4, dp 2 (x cp): stages 1 and 2 hold 8 layers and nothing else
    result = run(gpus=gpus, tp=1, pp=4, cp=cp, distributed_optimizer=True)
    assert result.config.dp == 2
    params = 8 * LAYER
    for stage in result.memory.stages[1:3]:
        assert_states(stage, params, weights=2, grads=4, opt=12 / (2 * cp))


TOTAL = 8_030_261_248  # one GPU holds everything at tp 1, pp 1


@pytest.mark.parametrize(
    ("zero", "bytes_per_param"),
    [
        (0, (2, 2, 12)),  # baseline data parallel: 16
        (1, (2, 2, 12 / 8)),  # P_os
        (2, (2, 2 / 8, 12 / 8)),  # P_os+g: 2 + 14/N
        (3, (2 / 8, 2 / 8, 12 / 8)),  # P_os+g+p: 16/N
    ],
)
def test_zero_stages_shard_states_over_dp(zero: int, bytes_per_param: tuple) -> None:
    result = run(framework="deepspeed", zero_stage=zero)
    assert result.config.state_layout == "zero" and result.config.dp == 8
    (stage,) = result.memory.stages
    weights, grads, opt = bytes_per_param
    assert_states(stage, TOTAL, weights=weights, grads=grads, opt=opt)


def test_fsdp_states_are_16_over_n() -> None:
    # torchtitan: fp32 sharded weights (the master copy) 4, fp32 grads 4, moments 8, all /N
    result = run(framework="torchtitan", zero_stage=3)
    assert result.config.state_layout == "fsdp"
    (stage,) = result.memory.stages
    assert_states(stage, TOTAL, weights=4 / 8, grads=4 / 8, opt=8 / 8)


def test_estimate_applies_the_torchtitan_fsdp_default() -> None:
    result = run(framework="torchtitan")
    assert result.config.zero_stage == 3
    (stage,) = result.memory.stages
    assert_states(stage, TOTAL, weights=4 / 8, grads=4 / 8, opt=8 / 8)


@pytest.mark.parametrize(
    ("layout_name", "bytes_per_param"), [("bf16", (2, 2, 4)), ("autocast", (4, 4, 8))]
)
def test_plain_pytorch_states(layout_name: str, bytes_per_param: tuple) -> None:
    # 64 sequences over dp 8: 8 micro-batches, so the gradients accumulate all step
    result = run(framework="pytorch", state_layout_name=layout_name)
    assert result.config.state_layout == layout_name and result.config.microbatches == 8
    (stage,) = result.memory.stages
    weights, grads, opt = bytes_per_param
    assert_states(stage, TOTAL, weights=weights, grads=grads, opt=opt)


# --- monotonicity ---------------------------------------------------------------------

RECOMPUTE_CONFIGS = [
    pytest.param({"tp": 2, "pp": 4}, id="tp2-pp4"),
    pytest.param({"tp": 2, "pp": 4, "flash_attention": False}, id="tp2-pp4-unfused"),
    pytest.param({"tp": 4, "pp": 2, "sequence_parallel": True}, id="tp4-pp2-sp"),
    pytest.param({"tp": 1, "pp": 1}, id="single"),
    pytest.param({"tp": 2, "pp": 2, "vpp": 2, "flash_attention": False}, id="interleaved"),
    pytest.param({"framework": "pytorch", "tp": 1, "pp": 1}, id="pytorch-autocast"),
]


@pytest.mark.parametrize("config", RECOMPUTE_CONFIGS)
def test_more_recomputation_never_increases_memory(config: dict) -> None:
    results = [run(recompute=mode, **config) for mode in ("none", "selective", "full")]
    for stage in range(len(results[0].memory.stages)):
        none, selective, full = (r.memory.stages[stage] for r in results)
        assert none.activations_in_flight_gib >= selective.activations_in_flight_gib
        assert selective.activations_in_flight_gib > full.activations_in_flight_gib
        assert none.total_gib >= selective.total_gib >= full.total_gib


def test_selective_recompute_drops_the_scores_of_unfused_attention() -> None:
    # tp 2, pp 4, stage 1: p - r = 3 in-flight micro-batches x 8 layers x s·b tokens x
    # the score bytes per token. Llama has no attention dropout, so no mask and no
    # dropped-out copy: only the 2-byte softmax output, 2·a·s per token, split over t.
    none = run(tp=2, pp=4, flash_attention=False).memory.stages[1]
    selective = run(tp=2, pp=4, flash_attention=False, recompute="selective").memory.stages[1]
    scores = 3 * 8 * 4096 * (2 * 32 * 4096) / 2  # 12 GiB
    assert none.activations_in_flight_gib - selective.activations_in_flight_gib == pytest.approx(
        scores / GIB, abs=2 * ROUNDING
    )


def test_zero_stages_never_increase_states() -> None:
    totals = [
        states_gib(run(framework="deepspeed", zero_stage=z).memory.stages[0]) for z in range(4)
    ]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == 4


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({"distributed_optimizer": True}, id="dist-opt"),
        pytest.param({"framework": "deepspeed", "zero_stage": 3}, id="zero3"),
        pytest.param({"framework": "torchtitan", "zero_stage": 3}, id="fsdp"),
    ],
)
def test_larger_dp_never_increases_states(config: dict) -> None:
    # tp 8, pp 1: dp 1, 2, 4, 8
    totals = [states_gib(run(gpus=g, tp=8, **config).memory.stages[0]) for g in (8, 16, 32, 64)]
    assert totals == sorted(totals, reverse=True)
    assert totals[-1] < totals[0]


@pytest.mark.parametrize("distributed_optimizer", [False, True])
@pytest.mark.parametrize(("pp", "tps"), [(1, (1, 2, 4, 8)), (2, (1, 2, 4))])
def test_doubling_tp_never_increases_states(
    distributed_optimizer: bool, pp: int, tps: tuple[int, ...]
) -> None:
    # 8 GPUs: dp shrinks as tp grows. Without sharding, states fall with 1/tp (plus the
    # replicated norms); with the distributed optimizer the 12/dp part grows only by the
    # norms' share, far less than the weights and gradients lose.
    worst = [
        max(
            states_gib(stage)
            for stage in run(
                tp=tp, pp=pp, distributed_optimizer=distributed_optimizer
            ).memory.stages
        )
        for tp in tps
    ]
    assert all(later < earlier for earlier, later in pairwise(worst))


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({"tp": 2, "pp": 4}, id="tp2-pp4"),
        pytest.param({"tp": 2, "pp": 4, "recompute": "selective"}, id="selective"),
        pytest.param({"tp": 1, "pp": 8, "flash_attention": False}, id="pp8-unfused"),
    ],
)
def test_first_stage_holds_the_most_activations_under_1f1b(config: dict) -> None:
    # Stage r holds min(p - r, m) micro-batches of L/p layers. (Under full recompute this
    # need not hold: the last stage's fp32 log-probabilities, 4V/t bytes per token, can
    # outweigh p micro-batches of layer inputs.)
    stages = run(**config).memory.stages
    first = stages[0].activations_in_flight_gib
    assert all(first > stage.activations_in_flight_gib for stage in stages[1:])
    assert stages[0].activations_gib == max(stage.activations_gib for stage in stages)


@pytest.mark.parametrize(
    ("config", "vpp"),
    [
        ({"tp": 2, "pp": 4}, 2),
        ({"tp": 2, "pp": 4}, 4),
        ({"tp": 2, "pp": 4, "sequence_parallel": True, "recompute": "selective"}, 2),
        ({"tp": 1, "pp": 8}, 2),
    ],
)
def test_interleaving_multiplies_first_stage_activations(config: dict, vpp: int) -> None:
    # Narayanan et al. 2021: 1 + (p - 1)/(p v). Rank 0 holds v·p + p - 1 chunks of L/(p v)
    # identical layers against p micro-batches of L/p layers under 1F1B. Only the
    # embedding's saved bytes (8-byte token ids per token, next to ~70 KB per layer) do
    # not scale with it: virtual stage 0 sits on rank 0 for 2p - 1 micro-batches under
    # interleaving and p under 1F1B, so the ratio differs from the closed form by < 0.01 %;
    # the 2 % bound leaves room for that and for GiB rounding, and still rejects an
    # off-by-one chunk (≥ 5 % here).
    p = config["pp"]
    plain = run(**config).memory.stages[0].activations_in_flight_gib
    interleaved = run(vpp=vpp, **config).memory.stages[0].activations_in_flight_gib
    assert interleaved / plain == pytest.approx(1 + (p - 1) / (p * vpp), rel=0.02)


# --- verdict and bookkeeping ----------------------------------------------------------


def test_405b_on_8_gpus_does_not_fit() -> None:
    # 405B params x 18 bytes / tp 8 ≈ 850 GiB of states per GPU against 80 GiB
    result = run("llama-3.1-405b", tp=8, seq_len=8192, global_batch=64)
    memory = result.memory
    assert memory.capacity_gib == pytest.approx(85_017_493_504 / 2**30, abs=1e-3)
    assert memory.fits is False
    assert memory.peak_gib > 800
    assert memory.headroom_gib < 0
    assert memory.headroom_gib == pytest.approx(memory.capacity_gib - memory.peak_gib, abs=0.002)


def test_70b_issue_example_fits() -> None:
    result = run(
        "llama-3.1-70b", gpus=64, seq_len=8192, global_batch=512, tp=8, pp=4,
        recompute="selective", sequence_parallel=True, distributed_optimizer=True,
    )  # fmt: skip
    memory = result.memory
    assert memory.fits is True and 0 < memory.peak_gib < memory.capacity_gib
    assert memory.headroom_gib == pytest.approx(memory.capacity_gib - memory.peak_gib, abs=0.002)


BOOKKEEPING_CONFIGS = [
    pytest.param("llama-3.1-8b", {"tp": 2, "pp": 4}, id="megatron"),
    pytest.param("llama-3.1-8b", {"framework": "deepspeed", "zero_stage": 3}, id="zero3"),
    pytest.param("llama-3.1-8b", {"framework": "pytorch"}, id="pytorch"),
    pytest.param("llama-3.1-8b", {"framework": "torchtitan", "zero_stage": 3, "tp": 2}, id="fsdp"),
    pytest.param("llama-3.1-405b", {"tp": 8}, id="405b"),
    pytest.param("llama-3.1-8b", {"tp": 2, "pp": 2, "vpp": 2, "recompute": "full"}, id="full"),
]


@pytest.mark.parametrize(("model", "config"), BOOKKEEPING_CONFIGS)
def test_totals_add_up_and_the_peak_is_the_largest_stage(model: str, config: dict) -> None:
    memory = run(model, **config).memory
    for stage in memory.stages:
        parts = (
            stage.weights_gib + stage.gradients_gib + stage.optimizer_gib
            + stage.activations_gib + stage.other_gib
        )  # fmt: skip
        assert stage.total_gib == pytest.approx(parts, abs=0.01)
    assert memory.peak_gib == max(stage.total_gib for stage in memory.stages)
    assert [stage.stage for stage in memory.stages] == list(range(len(memory.stages)))


# --- exact bytes on tiny models (stage_memory directly) -------------------------------

NO_RESERVE = MemoryReserve(fragmentation=0.0, non_allocator_bytes=0.0, source="test")


def tiny_gpt() -> ModelSpec:
    """h 64, a 4, f 256, 2 layers, V 1000, GELU, LayerNorm, dropout 0.1, biases."""
    return ModelSpec(
        name="tiny-gpt", num_layers=2, hidden_size=64, num_attention_heads=4,
        ffn_hidden_size=256, vocab_size=1000, max_position_embeddings=128,
        mlp_activation="gelu", normalization="layernorm", position_embedding="learned",
        qkv_bias=True, attention_output_bias=True, mlp_bias=True, hidden_dropout=0.1,
        attention_dropout=0.1,
    )  # fmt: skip


def tiny_stage(
    model: ModelSpec, impl: Implementation, states: str, layout: ParallelConfig
) -> StageMemory:
    (stage,) = stage_memory(
        MemoryContext(
            model=model,
            graph=build_graph(model, seq_len=128, implementation=impl),
            layout=layout,
            states=state_layout(states),
            num_gpus=layout.tp,
            microbatches=1,
            ddp_bucket_copy=False,
            communication_buckets=0.0,
            optimizer_kind="fused",
            reserve=NO_RESERVE,
        )
    )
    return stage


UNFUSED = Implementation(
    name="megatron-unfused", residual_bytes=2, activation_bytes=2, flash_attention=False,
    fused_gated_mlp=True,
)  # fmt: skip


def test_tiny_gpt_single_gpu_bytes_by_hand() -> None:
    # per token (s = 128, mbs 2 -> 256 tokens):
    #   embedding   token ids 8 + dropout mask h              = 72
    #   each layer  34h + 5as + 8 = 2176 + 2560 + 8          = 4744
    #   head        fp32 log-probs 4V + norm 2h + 4 + input 2h = 4000 + 260 = 4260
    stage = tiny_stage(tiny_gpt(), UNFUSED, "megatron", ParallelConfig(dp=1, mbs=2))
    assert stage.activations_in_flight == 256 * (72 + 2 * 4744 + 4260) == 3_537_920
    # params: embedding 1000·64 + 128·64 = 72192; layer 4h² + 4h + 8h² + 5h + 2·2h =
    # 49984; head 2h + 64000 = 64128; total 236288, at 2 / 4 / 12 bytes
    assert count_params(tiny_gpt()).total == 236_288
    assert (stage.weights, stage.gradients, stage.optimizer) == (472_576, 945_152, 2_835_456)


def test_tiny_gpt_tp2_sequence_parallel_bytes_by_hand() -> None:
    # everything per token halves: (72 + 2·4744 + 4260) / 2 = 6910
    layout = ParallelConfig(tp=2, dp=1, mbs=2, sequence_parallel=True)
    stage = tiny_stage(tiny_gpt(), UNFUSED, "megatron", layout)
    assert stage.activations_in_flight == 256 * 6910 == 1_768_960


def test_autocast_counts_every_weight_cast_on_the_last_stage() -> None:
    # benchmarks/measure tiny preset (h 64, 4 heads, 2 KV heads of 16, f 128, V 256),
    # pytorch autocast, s = 128, one sequence. Per token: ids 8; layer 2584 (see
    # tests/graph/test_activations.py); head 4V + (4h + 4) + 2h = 1024 + 388.
    # Per micro-batch: layer weight casts 2 x 73728 and the head's 2·V·h = 32768.
    model = ModelSpec(
        name="measure-tiny", num_layers=2, hidden_size=64, num_attention_heads=4,
        num_kv_heads=2, ffn_hidden_size=128, vocab_size=256, max_position_embeddings=128,
        rope_theta=500_000.0,
    )  # fmt: skip
    autocast = state_layout("autocast")
    impl = implementation(framework="pytorch", layout=autocast, precision="bf16")
    stage = tiny_stage(model, impl, "autocast", ParallelConfig(dp=1))
    saved = 128 * (8 + 2 * 2584 + 1024 + 388)  # 843_264
    assert stage.activations_in_flight == saved + 2 * 73728 + 2 * 256 * 64  # 1_023_488
