"""Megatron-Core's local attention (``layer_spec="local"``) in the graph and memory model.

The hand counts follow megatron-core 0.16.1's ``DotProductAttention`` without Transformer
Engine (``planner/graph/build.py`` docstring): per token, per layer, ``a`` heads, ``kv``
groups of ``d`` channels, sequence ``s``, bf16 activations (2 bytes):

- scores: the softmax's fp32 output and its bf16 cast, (4 + 2)·a·s;
- without recomputation, K and V repeated to all heads: 2·(a - kv)·d·2 more;
- under selective recomputation: none of that, but the fused QKV output kept whole by the
  checkpoint's view of V: (a + kv)·d·2;
- in the core's backward: (2·4 - 2)·a·s of fp32 gradients beside the saved set;
- one persistent bf16 a·s² score buffer per sequence of a micro-batch;
- one s x s boolean causal mask per layer and micro-batch (not under selective).
"""

from __future__ import annotations

import pytest

from planner.catalog import load_cluster
from planner.cost.compute import LayerShape, layer_work
from planner.cost.frameworks import DEFAULT_RUNTIME, Runtime, implementation, state_layout
from planner.cost.stage_work import selective_recompute
from planner.errors import SpecError
from planner.graph.build import build_graph
from planner.predict import estimate, prepare
from planner.specs import ModelSpec
from planner.specs.layout import ParallelConfig
from planner.specs.workload import WorkloadSpec

A, KV, D, S = 32, 8, 64, 4096


def llama_1b() -> ModelSpec:
    return ModelSpec(
        name="llama-1b-shape", family="llama", num_layers=4, hidden_size=A * D,
        num_attention_heads=A, num_kv_heads=KV, ffn_hidden_size=8192, vocab_size=32000,
        max_position_embeddings=S, rope_theta=500000.0,
    )  # fmt: skip


def _graphs(seq_len: int = S):
    states = state_layout("megatron")
    local = implementation(
        framework="megatron", layout=states, precision="bf16", flash_attention=False,
        layer_spec="local",
    )  # fmt: skip
    fused = implementation(framework="megatron", layout=states, precision="bf16",
                           flash_attention=False)  # fmt: skip
    model = llama_1b()
    return build_graph(model, seq_len=seq_len, implementation=local), build_graph(
        model, seq_len=seq_len, implementation=fused
    )


def test_local_attention_saved_bytes_per_token() -> None:
    local, fused = _graphs()
    mine, theirs = local.layers[0].saved, fused.layers[0].saved
    assert mine.attention_scores == (4 + 2) * A * S
    assert theirs.attention_scores == 2 * A * S
    assert mine.core_copies == 2 * (A - KV) * D * 2
    assert mine.checkpoint_extra == (A + KV) * D * 2
    none = mine.sharded(tp=1, sp_divisor=1, etp=1, selective=False)
    selective = mine.sharded(tp=1, sp_divisor=1, etp=1, selective=True)
    assert none - selective == (4 + 2) * A * S + 2 * (A - KV) * D * 2 - (A + KV) * D * 2
    assert mine.tp == theirs.tp and mine.sp == theirs.sp


def test_local_attention_workspace_and_score_buffer() -> None:
    local, fused = _graphs()
    assert local.layers[0].attention_workspace_per_token == (3 * 4 - 2) * A * S
    assert fused.layers[0].attention_workspace_per_token == 0.0
    assert local.persistent_bytes_per_sequence == 2 * A * S * S
    assert fused.persistent_bytes_per_sequence == 0.0
    assert local.layers[0].score_mask_bytes == S * S
    assert fused.layers[0].score_mask_bytes == 0.0


def test_forward_keeps_the_local_attention_extras_per_layer() -> None:
    """Against Transformer Engine's unfused attention, the local spec's forward leaves per
    layer and micro-batch the fp32 probabilities and repeated K and V per token, and one
    s x s boolean mask (not per token, not per head)."""
    layers = llama_1b().num_layers
    per_token = 4 * A * S + 2 * (A - KV) * D * 2
    for mbs in (1, 2):
        local = _estimate("none", "local", mbs=mbs).memory.stages[0]
        fused = _estimate("none", "transformer_engine", mbs=mbs).memory.stages[0]
        extra = (local.activations_in_flight_gib - fused.activations_in_flight_gib) * 2**30
        expected = layers * (mbs * S * per_token + S * S)
        assert extra == pytest.approx(expected, abs=2**21)  # reports round to 1e-3 GiB


def _estimate(recompute: str, layer_spec: str, mbs: int = 2):
    full = recompute == "full"
    return estimate(
        model=llama_1b(), cluster=load_cluster("hgx-h200", gpus=1),
        workload=WorkloadSpec(seq_len=S, global_batch=mbs),
        layout=ParallelConfig(mbs=mbs, recompute=recompute,
                              recompute_method="uniform" if full else None,
                              recompute_num_layers=1 if full else None),
        framework="megatron", flash_attention=False, layer_spec=layer_spec,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_score_buffer_is_held_at_every_moment(recompute: str) -> None:
    """The score buffer adds exactly mbs·2·a·s² to the states of every moment: the
    optimizer moment (weights, gradients, states and buffers only) shows it."""
    local, fused = _estimate(recompute, "local"), _estimate(recompute, "transformer_engine")
    assert local.config.layer_spec == "local"
    buffer_gib = 2 * 2 * A * S * S / 2**30
    stage, other = local.memory.stages[0], fused.memory.stages[0]
    assert stage.weights_gib == other.weights_gib
    assert stage.allocated_gib > other.allocated_gib + buffer_gib * 0.999


def test_selective_recompute_holds_the_recomputed_core_in_its_backward() -> None:
    """Under selective recomputation a layer's backward re-creates the core's saved set
    (scores, repeated K and V, the causal mask) and then needs the softmax's fp32
    gradients and the CUDA kernel's grad * output temporary: the peak's temporaries are
    exactly those for one layer (besides the persistent score buffer)."""
    stage = _estimate("selective", "local", mbs=1).memory.stages[0]
    recomputed = S * ((4 + 2) * A * S + 2 * (A - KV) * D * 2)
    workspace = S * (3 * 4 - 2) * A * S  # output and input gradients, grad * output
    buffer = 2 * A * S * S
    held = stage.weights_gib + stage.gradients_gib + stage.optimizer_gib + stage.activations_gib
    transient_gib = stage.allocated_gib - held - buffer / 2**30
    assert stage.peak_moment.startswith("backward")
    mask = S * S
    assert transient_gib == pytest.approx((recomputed + workspace + mask) / 2**30, abs=2e-3)


@pytest.mark.parametrize(
    ("framework", "flash"), [("megatron", True), ("pytorch", False), ("deepspeed", False)]
)
def test_local_spec_needs_megatron_and_unfused_attention(framework: str, flash: bool) -> None:
    states = state_layout("megatron")
    with pytest.raises(SpecError, match="layer_spec"):
        implementation(framework=framework, layout=states, precision="bf16",  # type: ignore[arg-type]
                       flash_attention=flash, layer_spec="local")  # fmt: skip


def test_prepare_keeps_the_layer_spec() -> None:
    prepared = prepare(
        model=llama_1b(), cluster=load_cluster("hgx-h200", gpus=1),
        workload=WorkloadSpec(seq_len=S, global_batch=1), layout=ParallelConfig(mbs=1),
        framework="megatron", flash_attention=False, layer_spec="local",
    )  # fmt: skip
    assert prepared.layer_spec == "local"
    assert prepared.impl.eager_fp32_softmax


def _local(runtime: Runtime = DEFAULT_RUNTIME, flash_attention: bool = False):
    return implementation(
        framework="megatron", layout=state_layout("megatron"), precision="bf16",
        flash_attention=flash_attention, runtime=runtime, layer_spec="local",
    )  # fmt: skip


def test_local_spec_repeats_kv_once() -> None:
    """The local spec repeats K and V itself: ``Runtime.repeat_kv`` adds no second copy
    to the saved bytes or the traffic, and an ``unfused`` backend is the local spec's."""
    plain, repeated = _local(), _local(Runtime(repeat_kv=True))
    assert not repeated.repeat_kv
    assert plain == repeated
    assert _local(Runtime(attention_backend="unfused"), flash_attention=True) == plain
    shape = LayerShape(tokens=S, seq_len=S, tp=1, etp=1, ep=1, cp=1)
    model = llama_1b()
    work = layer_work(model, 0, shape=shape, impl=plain)
    repeat = 2 * S * 2 * (KV + A) * D  # (RoPE on q and k moves as many bytes, outside the core)
    copies = [w for w in work.forward if w.attention_core and w.kind == "memory"]
    assert sum(1 for w in copies if w.bytes == repeat) == 1


def test_selective_recompute_reruns_the_local_core() -> None:
    """Selective recomputation re-runs the whole ``DotProductAttention``: both batched
    products, the eager fp32 softmax ops, the K/V repeat, the context's permute and the
    causal mask, and nothing else."""
    shape = LayerShape(tokens=S, seq_len=S, tp=1, etp=1, ep=1, cp=1)
    work = layer_work(llama_1b(), 0, shape=shape, impl=_local())
    core = selective_recompute(work)
    square = A * S * S
    assert [w.kind for w in core] == ["gemm", "gemm"] + ["memory"] * 7
    # .float(), masked_fill_, softmax, .bfloat16(): 28 bytes per score in four passes
    assert sum(w.bytes for w in core[2:6]) == square * (2 * 2 + 6 * 4)
    assert core[6].bytes == 2 * S * 2 * (KV + A) * D
    assert core[7].bytes == 2 * 2 * S * A * D  # the context made contiguous
    assert core[8].bytes == 17 * S * S  # ones, triu, bool


def test_local_softmax_backward_is_counted_pass_by_pass() -> None:
    """The eager fp32 softmax chain's backward is its own six passes (cast up, the
    softmax backward's two, the masked fill's clone and fill, cast down: 52 bytes per
    score), not twice the forward's traffic; the cast up and the broadcast fill run in
    PyTorch's generic kernel, timed per element."""
    shape = LayerShape(tokens=S, seq_len=S, tp=1, etp=1, ep=1, cp=1)
    work = layer_work(llama_1b(), 0, shape=shape, impl=_local())
    square = A * S * S
    scores = [w for w in work.backward if w.kind == "memory" and w.bytes >= square * 6]
    assert sum(w.bytes for w in scores) == square * (6 + 12 + 12 + 8 + 8 + 6)
    assert sum(w.generic_elements for w in scores) == 2 * square


def test_main_grad_hooks_follow_gradient_accumulation_fusion() -> None:
    """Megatron's main_grad accumulation hook (fp32 += bf16 per parameter and micro-batch)
    adds every layer parameter's gradient with ``gradient_accumulation_fusion`` off, on
    either layer spec; with it on (Megatron-LM's default) the weight-gradient GEMMs
    accumulate the matrices themselves and only the norms' gradients are hooked."""
    shape = LayerShape(tokens=S, seq_len=S, tp=1, etp=1, ep=1, cp=1)
    model = llama_1b()
    norms = 2 * model.hidden_size
    params = model.hidden_size * (A * D + 2 * KV * D) + model.hidden_size * A * D
    params += 3 * model.hidden_size * model.ffn_hidden_size + norms
    unfused = Runtime(gradient_accumulation_fusion=False)
    for impl in (_local(unfused), _te(unfused)):
        hook = layer_work(model, 0, shape=shape, impl=impl).backward[-1]
        assert hook.bytes == params * (4 + 2 + 4)
        assert hook.generic_elements == params
    for impl in (_local(), _te()):
        assert impl.main_grad_hooks and impl.wgrad_accumulation_fusion
        hook = layer_work(model, 0, shape=shape, impl=impl).backward[-1]
        assert hook.generic_elements == norms


def test_cross_entropy_and_optimizer_passes_on_the_te_path() -> None:
    """The Transformer Engine path runs the vocab-parallel cross entropy op by op unless
    ``cross_entropy_loss_fusion`` (off by default in Megatron-LM), and the optimizer's
    norm/clip/copy passes through multi-tensor kernels (the clip in place: 8 bytes fewer
    per parameter than the local spec's fallbacks)."""
    from planner.cost.compute import head_work
    from planner.cost.time import distributed_optimizer_passes

    model = llama_1b()
    assert _te().eager_vocab_cross_entropy and _local().eager_vocab_cross_entropy
    fused = _te(Runtime(cross_entropy_loss_fusion=True))
    assert not fused.eager_vocab_cross_entropy
    eager = head_work(model, tokens=S, tp=1, impl=_te())
    one_pass = head_work(model, tokens=S, tp=1, impl=fused)
    assert sum(w.bytes for w in eager.forward) > sum(w.bytes for w in one_pass.forward)
    assert _te().multi_tensor_optimizer_passes and not _local().multi_tensor_optimizer_passes
    te = distributed_optimizer_passes(1e9, 0.0, multi_tensor=True)
    local = distributed_optimizer_passes(1e9, 0.0, multi_tensor=False)
    assert (te.bytes, local.bytes) == (18e9, 26e9)


def _te(runtime: Runtime = DEFAULT_RUNTIME):
    return implementation(
        framework="megatron", layout=state_layout("megatron"), precision="bf16",
        flash_attention=False, runtime=runtime,
    )  # fmt: skip
