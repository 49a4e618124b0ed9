"""Megatron-LM emitter: golden files, refusals, round trip, determinism, Megatron's rules.

The rules are checked three ways: always against the flag table in
``planner.emit.megatron`` and the validation rules of frameworks.md 1.9 (re-implemented
here on the emitted values); where ``megatron.core`` is importable, by building its
``TransformerConfig``/``ModelParallelConfig``/``OptimizerConfig`` from the emitted values
(their ``__post_init__`` checks run); and where ``MEGATRON_PATH`` names a Megatron-LM
checkout, by Megatron's own ``parse_args`` + ``validate_args`` +
``core_transformer_config_from_args`` in a subprocess. Regenerate the golden files with
``UPDATE_GOLDEN=1``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from planner.catalog import catalog_model, list_catalog_models
from planner.emit.base import EmitError, EmitInput, emit_input_from_estimate, get_emitter
from planner.emit.megatron import (
    MEGATRON_FLAGS,
    MegatronEmitter,
    megatron_arguments,
    megatron_flag_values,
    parse_megatron_arguments,
)
from planner.specs.layout import ParallelConfig, resolve_data_parallel
from planner.specs.model import ModelSpec

PLANS = Path(__file__).parents[1] / "fixtures" / "plans"
GOLDEN = Path(__file__).parent / "golden" / "megatron"
EXPRESSIBLE = ["llama-3.1-70b-64xh100", "mixtral-8x7b-16xh100"]
OTHER_FRAMEWORKS = ["llama-3.1-8b-8xh100-zero2", "llama-3.1-8b-8xh100-fsdp"]
FIXED_PREDICTIONS = {"step_time_s": 3.25, "tokens_per_s": 80000.0, "mfu": 0.5, "peak_gib": 60.0}
PLACEHOLDER_VALUES = {
    "$DATA_PATH": "/data/corpus_text_document",
    "$TOKENIZER_MODEL": "gpt2",
    "$CHECKPOINT_PATH": "/tmp/autopar-ckpt",
    "$TRAIN_ITERS": "10",
    "$LR": "0.0003",
    "$SAVE_INTERVAL": "5",
}
MEGATRON_CORE_MISSING = (
    "megatron-core (needs torch) is not installed; CI checks the flag table and the "
    "frameworks.md 1.9 rules instead"
)


@pytest.fixture(autouse=True)
def _fixed_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Goldens must not change with the installed autopar version."""
    monkeypatch.setattr("planner.emit.megatron.autopar_version", lambda: "0.0.0+test")


def load_plan(stem: str, **layout: Any) -> EmitInput:
    """A fixture plan with fixed predictions; ``layout`` overrides ParallelConfig fields."""
    plan = emit_input_from_estimate(json.loads((PLANS / f"{stem}.json").read_text()))
    fields = {**plan.layout.model_dump(), **layout}
    return dataclasses.replace(
        plan, layout=ParallelConfig(**fields), predictions=dict(FIXED_PREDICTIONS)
    )


def make_plan(
    model: ModelSpec | str,
    *,
    num_gpus: int,
    seq_len: int = 4096,
    global_batch: int = 64,
    precision: str = "bf16",
    **layout: Any,
) -> EmitInput:
    """A synthetic Megatron plan for ``model`` (a catalogue name or a spec)."""
    spec = catalog_model(model).spec if isinstance(model, str) else model
    return EmitInput(
        model=spec,
        num_gpus=num_gpus,
        gpus_per_node=8,
        seq_len=seq_len,
        global_batch=global_batch,
        precision=precision,
        layout=resolve_data_parallel(ParallelConfig(**layout), num_gpus=num_gpus),
        framework="megatron",
        predictions=dict(FIXED_PREDICTIONS),
    )


def _mixtral_variant(**moe: Any) -> ModelSpec:
    base = catalog_model("mixtral-8x7b").spec
    return base.model_copy(update={"moe": base.moe.model_copy(update=moe)})  # type: ignore[union-attr]


def synthetic_plans() -> dict[str, EmitInput]:
    return {
        # the 8B ZeRO-2 fixture's layout, but as Megatron runs it: distributed optimizer
        # with both overlaps, full recompute with Megatron's defaults for method/layers
        "llama-3.1-8b-dist-opt-full": dataclasses.replace(
            load_plan(
                "llama-3.1-8b-8xh100-zero2", zero_stage=0, distributed_optimizer=True,
                overlap_grad_reduce=True, overlap_param_gather=True, recompute="full",
            ),
            framework="megatron",
        ),
        "llama-3.1-8b-cp2-allgather-fp8": make_plan(
            "llama-3.1-8b", num_gpus=8, precision="fp8", tp=2, cp=2, dp=2,
            cp_comm_type="all_gather", sequence_parallel=True, tp_comm_overlap=True,
            recompute="full", recompute_method="block", recompute_num_layers=2,
        ),
        "deepseek-v3-256xh100": make_plan(
            "deepseek-v3", num_gpus=256, global_batch=512, precision="fp8", tp=2, pp=8,
            dp=16, ep=32, etp=1, first_stage_layers=7, last_stage_layers=6,
            distributed_optimizer=True, overlap_grad_reduce=True, overlap_param_gather=True,
            sequence_parallel=True, recompute="full", recompute_method="block",
            recompute_num_layers=2,
        ),
        "gpt-175b-fp16-offload": make_plan(
            "gpt-175b", num_gpus=64, seq_len=2048, global_batch=64, precision="fp16", tp=8,
            pp=4, vpp=3, dp=2, sequence_parallel=True, tp_comm_overlap=True,
            distributed_optimizer=True, offload_optimizer_fraction=0.5, recompute="selective",
        ),
        "qwen1.5-moe-ep4": make_plan(
            "qwen1.5-moe-a2.7b", num_gpus=8, ep=4, dp=8, distributed_optimizer=True
        ),
        "qwen3-32b-tp8": make_plan("qwen3-32b", num_gpus=8, tp=8, sequence_parallel=True),
        "nemotron-4-340b-pp12": make_plan(
            "nemotron-4-340b", num_gpus=96, global_batch=96, tp=8, pp=12,
            sequence_parallel=True, distributed_optimizer=True, recompute="selective",
        ),
        "moe-every-2nd-after-1-dense-top1": make_plan(
            _mixtral_variant(first_dense_layers=1, layer_freq=2, top_k=1, capacity_factor=1.25),
            num_gpus=8, ep=8,
        ),
        "moe-every-2nd": make_plan(_mixtral_variant(layer_freq=2), num_gpus=8, ep=2),
        "fp32-cp2-a2a": make_plan(
            "llama-3.1-8b", num_gpus=8, precision="fp32", cp=2, cp_comm_type="a2a"
        ),
    }  # fmt: skip


PLANS_TO_CHECK = {stem: load_plan(stem) for stem in EXPRESSIBLE} | synthetic_plans()
GOLDEN_CASES = [*EXPRESSIBLE, "llama-3.1-8b-dist-opt-full", "deepseek-v3-256xh100"]


def split_arguments(args: list[str]) -> dict[str, list[str]]:
    """Flag -> values, written here independently of the module's own reader."""
    given: dict[str, list[str]] = {}
    for token in args:
        if token.startswith("--"):
            assert token not in given, f"{token} repeated"
            given[token] = []
        else:
            given[list(given)[-1]].append(token)
    return given


# -- golden files ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_golden_files(name: str) -> None:
    files = MegatronEmitter().emit(PLANS_TO_CHECK[name]).as_dict()
    folder = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.iterdir():
            stale.unlink()
        for file_name, text in files.items():
            (folder / file_name).write_text(text)
    assert sorted(path.name for path in folder.iterdir()) == sorted(files)
    for file_name, text in files.items():
        assert (folder / file_name).read_text() == text, f"{name}/{file_name} differs"


def test_registered_under_its_name() -> None:
    assert isinstance(get_emitter("megatron"), MegatronEmitter)


def test_header_records_version_model_predictions_and_environment() -> None:
    files = MegatronEmitter().emit(PLANS_TO_CHECK["llama-3.1-70b-64xh100"]).as_dict()
    assert list(files) == ["launch_megatron.sh", "megatron_args.txt"]
    launch = files["launch_megatron.sh"]
    assert launch.startswith("#!/usr/bin/env bash\n")
    for expected in (
        "autopar 0.0.0+test",
        "for llama-3.1-70b",
        "#   step time     3.250 s",
        "#   throughput    80000.0 tokens/s",
        "#   MFU           50.00 %",
        "#   peak memory   60.00 GiB per GPU",
        "#   NNODES           number of nodes (default: 8, the plan's)",
        'NNODES="${NNODES:-8}"',
        "--nproc_per_node 8",
        '"$MEGATRON_PATH"/pretrain_gpt.py',
        "multiple of 128 x tp = 1024: 128256 -> 129024",
    ):
        assert expected in launch
    for variable in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "NNODES", "MEGATRON_PATH",
                     "DATA_PATH", "TOKENIZER_MODEL", "CHECKPOINT_PATH"):  # fmt: skip
        assert f"#   {variable} " in launch and f"${{{variable}" in launch


def test_missing_predictions_are_said_so() -> None:
    plan = dataclasses.replace(PLANS_TO_CHECK["mixtral-8x7b-16xh100"], predictions={"mfu": 0.4})
    launch = MegatronEmitter().emit(plan).as_dict()["launch_megatron.sh"]
    assert "#   step time     not predicted" in launch
    assert "#   MFU           40.00 %" in launch


@pytest.mark.parametrize("name", sorted(PLANS_TO_CHECK))
def test_cuda_device_max_connections_only_with_tp_or_cp(name: str) -> None:
    plan = PLANS_TO_CHECK[name]
    launch = MegatronEmitter().emit(plan).as_dict()["launch_megatron.sh"]
    needed = plan.layout.tp > 1 or plan.layout.cp > 1
    assert ("\nexport CUDA_DEVICE_MAX_CONNECTIONS=1\n" in launch) == needed


@pytest.mark.parametrize("name", sorted(PLANS_TO_CHECK))
def test_args_file_is_the_argument_list(name: str) -> None:
    plan = PLANS_TO_CHECK[name]
    text = MegatronEmitter().emit(plan).as_dict()["megatron_args.txt"]
    lines = text.splitlines()
    assert all(line.startswith("--") for line in lines)
    assert [token for line in lines for token in shlex.split(line)] == megatron_arguments(plan)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("name", ["llama-3.1-70b-64xh100", "deepseek-v3-256xh100", "fp32-cp2-a2a"])
def test_script_passes_the_arguments_to_torchrun(name: str, tmp_path: Path) -> None:
    """Run the script with a fake ``torchrun`` that records its argv, one per line."""
    plan = PLANS_TO_CHECK[name]
    script = tmp_path / "launch_megatron.sh"
    script.write_text(MegatronEmitter().emit(plan).as_dict()["launch_megatron.sh"])
    record = tmp_path / "argv.txt"
    fake = tmp_path / "bin" / "torchrun"
    fake.parent.mkdir()
    fake.write_text(
        f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {record}\n'
        f'echo "$CUDA_DEVICE_MAX_CONNECTIONS" >> {record}\n'
    )
    fake.chmod(0o755)
    env = {
        "PATH": f"{fake.parent}:{os.environ['PATH']}",
        "MEGATRON_PATH": "/opt/Megatron-LM",
        "NODE_RANK": "1",
        "MASTER_ADDR": "node0",
        **{key[1:]: value for key, value in PLACEHOLDER_VALUES.items()},
    }
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # NNODES defaults to the plan's: no warning
    argv = record.read_text().splitlines()
    connections = argv.pop()
    launcher = [str(plan.nproc_per_node), str(plan.nodes), "1", "node0", "6000"]
    assert argv[:11] == [
        token
        for pair in zip(
            ["--nproc_per_node", "--nnodes", "--node_rank", "--master_addr", "--master_port"],
            launcher,
            strict=True,
        )
        for token in pair
    ] + ["/opt/Megatron-LM/pretrain_gpt.py"]
    expected = [PLACEHOLDER_VALUES.get(token, token) for token in megatron_arguments(plan)]
    assert argv[11:] == expected
    assert connections == ("1" if plan.layout.tp > 1 or plan.layout.cp > 1 else "")


def test_script_refuses_to_start_without_megatron_path(tmp_path: Path) -> None:
    script = tmp_path / "launch_megatron.sh"
    script.write_text(
        MegatronEmitter().emit(PLANS_TO_CHECK["qwen3-32b-tp8"]).as_dict()[script.name]
    )
    done = subprocess.run(["bash", str(script)], env={"PATH": os.environ["PATH"]},
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode != 0 and "MEGATRON_PATH" in done.stderr


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("stem", OTHER_FRAMEWORKS)
def test_zero_2_and_3_fixtures_are_refused(stem: str) -> None:
    with pytest.raises(EmitError, match="Megatron-LM has no ZeRO-2/3: use --framework deepspeed"):
        MegatronEmitter().emit(load_plan(stem))


def test_a_plan_for_another_framework_is_refused() -> None:
    plan = load_plan("llama-3.1-8b-8xh100-zero2", zero_stage=1)
    with pytest.raises(EmitError, match="estimated for framework 'deepspeed'"):
        megatron_arguments(plan)


LLAMA = catalog_model("llama-3.1-8b").spec
REFUSALS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    # case: (model fields, layout fields, what the message names)
    "geglu": ({"mlp_activation": "geglu"}, {}, "--quick-geglu is a different activation"),
    "relu": ({"mlp_activation": "relu"}, {}, "mlp_activation relu"),
    "alibi": ({"position_embedding": "alibi", "rope_theta": None}, {}, "ALiBi"),
    "zero 3": ({}, {"zero_stage": 3}, "Megatron-LM has no ZeRO-2/3"),
    "sliding window": ({"sliding_window": 4096}, {}, "--window-size"),
    "parallel residual": ({"parallel_residual": True}, {}, "parallel_residual"),
    "sandwich norms": ({"norms_per_layer": 4}, {}, "norms_per_layer"),
    "learned offset": (
        {"position_embedding": "learned", "learned_position_offset": 2}, {},
        "learned_position_offset",
    ),
    "mlp-only bias": ({"mlp_bias": True}, {}, "--add-qkv-bias the only exception"),
    "fractional rope base": ({"rope_theta": 10000.5}, {}, "--rotary-base takes an integer"),
    "ep on a dense model": ({}, {"ep": 2}, "expert parallelism needs an MoE model"),
    "a2a+p2p": ({}, {"cp": 4, "cp_comm_type": "a2a+p2p"}, "--hierarchical-context-parallel"),
    "uneven split that leaves a layer over": (
        {}, {"pp": 2, "first_stage_layers": 15, "last_stage_layers": 16},
        "leave 1 layers for 0 middle stages",
    ),
    "offload without dist-opt": (
        {}, {"offload_optimizer_fraction": 0.5}, "needs --use-distributed-optimizer"
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refuses_what_megatron_cannot_express(case: str) -> None:
    model_fields, layout, reason = REFUSALS[case]
    model = LLAMA.model_copy(update=model_fields)
    plan = make_plan(model, num_gpus=8, **layout)
    with pytest.raises(EmitError, match="cannot emit Megatron-LM arguments") as refused:
        MegatronEmitter().emit(plan)
    assert reason in str(refused.value)


def test_refuses_gpus_that_do_not_fill_the_nodes() -> None:
    plan = dataclasses.replace(make_plan(LLAMA, num_gpus=12), gpus_per_node=8)
    with pytest.raises(EmitError, match="12 GPUs do not fill 2 nodes of 8"):
        megatron_arguments(plan)


# Catalogue models Megatron cannot express, and a feature each refusal names.
CATALOGUE_REFUSALS = {
    "bloom-176b": "alibi",
    "falcon-180b": "parallel_residual",
    "gemma-2-27b": "geglu",
    "gemma-2-9b": "geglu",
    "gpt-neox-20b": "parallel_residual",
    "mistral-7b": "sliding_window",
    "opt-175b": "relu",
}


@pytest.mark.parametrize("entry", list_catalog_models(), ids=lambda entry: entry.spec.name)
def test_every_catalogue_model_round_trips_or_is_refused(entry: Any) -> None:
    model: ModelSpec = entry.spec
    plan = make_plan(model, num_gpus=1, seq_len=min(2048, model.max_position_embeddings))
    if model.name in CATALOGUE_REFUSALS:
        with pytest.raises(EmitError, match=CATALOGUE_REFUSALS[model.name]):
            megatron_arguments(plan)
        return
    fields, _ = parse_megatron_arguments(megatron_arguments(plan))
    assert canonical(ModelSpec(name=model.name, **fields)) == canonical(model)


# -- round trip and determinism -------------------------------------------------------------


def canonical(model: ModelSpec) -> dict[str, Any]:
    """A model's architecture as Megatron's flags carry it.

    Megatron does not carry the catalogue's bookkeeping (family, source), spells MHA as "no
    GQA flag" and a natural head_dim as "no --kv-channels", and knows only the total width
    of the shared experts.
    """
    data = model.model_dump(exclude={"name", "family", "source"})
    data["num_kv_heads"] = None if model.mla else model.kv_heads
    data["head_dim"] = None if model.mla else model.kv_channels
    if model.moe is not None:
        total = model.moe.num_shared_experts * model.moe.shared_ffn_hidden_size
        data["moe"].update(shared_total=total)
        for key in ("num_shared_experts", "shared_expert_ffn_hidden_size"):
            data["moe"].pop(key)
    return data


def megatron_equivalent(layout: ParallelConfig) -> ParallelConfig:
    """The layout as Megatron runs it: defaults filled where the plan left them open."""
    update: dict[str, Any] = {}
    if layout.recompute == "full":
        update["recompute_method"] = layout.recompute_method or "uniform"
        update["recompute_num_layers"] = layout.recompute_num_layers or 1
    if layout.zero_stage == 1:
        update.update(zero_stage=0, distributed_optimizer=True)
    if layout.tp > 1 and layout.ep > 1:
        update["sequence_parallel"] = True
    return layout.model_copy(update=update)


@pytest.mark.parametrize("name", sorted(PLANS_TO_CHECK))
def test_round_trip(name: str) -> None:
    plan = PLANS_TO_CHECK[name]
    fields, layout = parse_megatron_arguments(megatron_arguments(plan), num_gpus=plan.num_gpus)
    assert layout == megatron_equivalent(plan.layout)
    model = plan.model.model_copy(
        update={"max_position_embeddings": max(plan.model.max_position_embeddings, plan.seq_len)}
    )
    assert canonical(ModelSpec(name=model.name, **fields)) == canonical(model)


def test_parse_leaves_dp_open_without_a_gpu_count() -> None:
    _, layout = parse_megatron_arguments(megatron_arguments(PLANS_TO_CHECK["qwen3-32b-tp8"]))
    assert layout.dp is None and layout.tp == 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num-layers", "2", "--num-layers", "2"], "given twice"),
        (["--window-size", "(4095,0)"], "unknown flag --window-size"),
        (["--num-layers", "two"], "is not int"),
        (["--cp-comm-type", "allgather"], "not in"),
        (["--swiglu", "yes"], "takes switch"),
        (["80"], "before any flag"),
    ],
)
def test_parse_rejects_what_megatron_would(args: list[str], message: str) -> None:
    with pytest.raises(EmitError, match=message):
        megatron_flag_values(args)


@pytest.mark.parametrize(
    ("first_dense", "freq", "layers", "expected"),
    [
        (0, 1, 32, None),
        (0, 2, 32, "2"),
        (3, 1, 61, "([0]*3+[1]*58)"),
        (1, 2, 32, "([0]*1+([1]+[0]*1)*15+[1])"),
        (2, 3, 12, "([0]*2+([1]+[0]*2)*3+[1])"),
        (2, 4, 12, "([0]*2+([1]+[0]*3)*2+[1]+[0]*1)"),
    ],
)
def test_moe_layer_pattern_matches_the_model(
    first_dense: int, freq: int, layers: int, expected: str | None
) -> None:
    model = _mixtral_variant(first_dense_layers=first_dense, layer_freq=freq).model_copy(
        update={"num_layers": layers}
    )
    given = split_arguments(megatron_arguments(make_plan(model, num_gpus=8)))
    pattern = given["--moe-layer-freq"][0] if "--moe-layer-freq" in given else None
    assert pattern == expected
    # What Megatron's moe_freq_type makes of it (an int N: layer i is MoE when i % N == 0)
    if pattern is None or "[" not in pattern:
        megatron_layers = [int(i % int(pattern or 1) == 0) for i in range(layers)]
    else:
        megatron_layers = eval(pattern)  # test-only; Megatron evaluates it the same way
    assert megatron_layers == [int(model.is_moe_layer(i)) for i in range(layers)]
    fields, _ = parse_megatron_arguments(megatron_arguments(make_plan(model, num_gpus=8)))
    assert (fields["moe"]["first_dense_layers"], fields["moe"]["layer_freq"]) == (
        first_dense,
        freq,
    )


@pytest.mark.parametrize("name", sorted(PLANS_TO_CHECK))
def test_deterministic(name: str) -> None:
    first = MegatronEmitter().emit(PLANS_TO_CHECK[name])
    rebuilt = load_plan(name) if name in EXPRESSIBLE else synthetic_plans()[name]
    assert MegatronEmitter().emit(rebuilt) == first


# -- Megatron's flags and rules, as a table (always runs) -----------------------------------


@pytest.mark.parametrize("name", sorted(PLANS_TO_CHECK))
def test_every_flag_is_in_the_table_with_a_value_of_its_kind(name: str) -> None:
    for flag, values in split_arguments(megatron_arguments(PLANS_TO_CHECK[name])).items():
        spec = MEGATRON_FLAGS.get(flag)
        assert spec is not None, f"{flag} is not a known Megatron-LM flag"
        assert spec.source.startswith(("frameworks.md 1.", "megatron/training/arguments.py"))
        if spec.kind == "switch":
            assert values == [], flag
            continue
        assert len(values) == 1, flag
        value = PLACEHOLDER_VALUES.get(values[0], values[0])
        if spec.kind in ("int", "float"):
            {"int": int, "float": float}[spec.kind](value)
        if spec.choices:
            assert value in spec.choices, flag


def rule_violations(plan: EmitInput, args: list[str], launch: str) -> list[str]:
    """The rules of frameworks.md 1.9 (and 1.2's environment rule) on emitted values."""
    given = split_arguments(args)

    def num(flag: str, default: int | None = None) -> int:
        return int(given[flag][0]) if flag in given else default  # type: ignore[return-value]

    world = plan.num_gpus
    t, p = num("--tensor-model-parallel-size", 1), num("--pipeline-model-parallel-size", 1)
    c, e = num("--context-parallel-size", 1), num("--expert-model-parallel-size", 1)
    et, v = num("--expert-tensor-parallel-size", t), num("--num-virtual-stages-per-pipeline-rank")
    layers, heads = num("--num-layers"), num("--num-attention-heads")
    groups = num("--num-query-groups") if "--group-query-attention" in given else heads
    b, batch, seq = num("--micro-batch-size"), num("--global-batch-size"), num("--seq-length")
    problems = []

    def rule(number: int, holds: bool) -> None:
        if not holds:
            problems.append(f"rule {number}")

    rule(1, world % (t * p * c) == 0)
    d = world // (t * p * c)
    rule(2, world % (et * e * p) == 0)
    rule(6, heads % t == 0)
    rule(7, "--multi-latent-attention" in given or groups % t == 0)  # the strict (<= 0.15) form
    rule(8, num("--ffn-hidden-size") % t == 0)
    rule(8, "--num-experts" not in given or num("--moe-ffn-hidden-size") % et == 0)
    rule(9, "--kv-channels" in given or num("--hidden-size") % heads == 0)
    rule(10, c == 1 or seq % (2 * c) == 0)
    rule(11, given.get("--cp-comm-type", ["p2p"]) != ["a2a+p2p"])
    rule(13, "--sequence-parallel" not in given or t > 1)
    rule(14, "--tp-comm-overlap" not in given or "--sequence-parallel" in given)
    rule(15, not (t > 1 and e > 1) or "--sequence-parallel" in given)
    rule(16, given.get("--cp-comm-type", ["p2p"]) != ["a2a"] or (heads // t) % c == 0)
    first = num("--decoder-first-pipeline-num-layers")
    last = num("--decoder-last-pipeline-num-layers")
    if first is None and last is None:
        rule(17, layers % p == 0)
        rule(19, v is None or (layers // p) % v == 0)
    else:
        middle_stages = p - (first is not None) - (last is not None)
        middle = layers - (first or 0) - (last or 0)
        rule(22, (middle_stages == 0) == (middle == 0))
        rule(22, middle_stages == 0 or middle % middle_stages == 0)
        rule(22, v is None or all(n is None or n % v == 0 for n in (first, last)))
    microbatches = batch // (b * d)
    rule(23, v is None or p > 1)
    rule(24, v is None or (microbatches >= p and microbatches % p == 0))
    rule(26, b > 0 and batch % (b * d) == 0 and microbatches >= 1)
    rule(28, "--overlap-param-gather" not in given or {
        "--use-distributed-optimizer", "--overlap-grad-reduce"} <= set(given))  # fmt: skip
    granularity = given.get("--recompute-granularity", [None])[0]
    per_stage = max(first or 0, last or 0, layers // p)
    rule(33, granularity != "full" or (
        given["--recompute-method"][0] in ("uniform", "block")
        and 1 <= num("--recompute-num-layers") <= per_stage))  # fmt: skip
    rule(34, granularity != "selective" or not {
        "--recompute-method", "--recompute-num-layers"} & set(given))  # fmt: skip
    offload_needs = {"--use-precision-aware-optimizer", "--use-distributed-optimizer"}
    rule(37, "--optimizer-cpu-offload" not in given or offload_needs <= set(given))
    rule(38, e == 1 or ("--num-experts" in given and num("--num-experts") % e == 0))
    rule(40, "--num-experts" not in given or num("--moe-router-topk", 2) > 1
         or "--moe-router-pre-softmax" in given
         or given.get("--moe-router-score-function") == ["sigmoid"])  # fmt: skip
    rule(41, not {"--multi-latent-attention", "--group-query-attention"} <= set(given))
    rule(42, not {"--fp16", "--bf16"} <= set(given))
    rule(43, num("--max-position-embeddings") >= seq)
    exported = "\nexport CUDA_DEVICE_MAX_CONNECTIONS=1\n" in launch
    if exported != (t > 1 or c > 1):
        problems.append("CUDA_DEVICE_MAX_CONNECTIONS=1 iff tp > 1 or cp > 1 (1.2)")
    return problems


@pytest.mark.parametrize("name", sorted(PLANS_TO_CHECK))
def test_megatron_validation_rules_hold(name: str) -> None:
    plan = PLANS_TO_CHECK[name]
    args = megatron_arguments(plan)
    launch = MegatronEmitter().emit(plan).as_dict()["launch_megatron.sh"]
    assert rule_violations(plan, args, launch) == []
    given = split_arguments(args)
    layout = plan.layout
    assert ("--sequence-parallel" in given) == (
        layout.tp > 1 and (layout.sequence_parallel or layout.ep > 1)
    )


def test_rule_check_catches_broken_arguments() -> None:
    """The table check is not vacuous: hand-broken argument lists fail it."""
    plan = PLANS_TO_CHECK["llama-3.1-70b-64xh100"]
    args = megatron_arguments(plan)
    launch = MegatronEmitter().emit(plan).as_dict()["launch_megatron.sh"]
    broken = [("7" if token == "8" else token) for token in args]  # tp 7, 7 KV groups, ...
    assert {"rule 1", "rule 6"} <= set(rule_violations(plan, broken, launch))
    without_env = launch.replace("export CUDA_DEVICE_MAX_CONNECTIONS=1", "")
    assert rule_violations(plan, args, without_env) == [
        "CUDA_DEVICE_MAX_CONNECTIONS=1 iff tp > 1 or cp > 1 (1.2)"
    ]


# -- the real thing: megatron.core's configs (skipped where it is not installed) -----------

# Flags that are not TransformerConfig fields (training, data, optimizer, shape extras)
NOT_TRANSFORMER_CONFIG = {
    "--group-query-attention", "--untie-embeddings-and-output-weights",
    "--position-embedding-type", "--rotary-base", "--rotary-percent",
    "--max-position-embeddings", "--vocab-size", "--micro-batch-size", "--global-batch-size",
    "--seq-length", "--use-distributed-optimizer", "--overlap-grad-reduce",
    "--overlap-param-gather", "--optimizer-cpu-offload", "--use-precision-aware-optimizer",
    "--optimizer-offload-fraction", "--data-path", "--tokenizer-type", "--tokenizer-model",
    "--train-iters", "--lr", "--save", "--load", "--save-interval", "--log-interval",
    "--log-throughput", "--swiglu", "--squared-relu", "--disable-bias-linear",
    "--moe-layer-freq", "--cp-comm-type", "--no-rope-fusion",
}  # fmt: skip
RENAMED = {  # flag -> TransformerConfig field, where the name is not the flag's (1.1)
    "--norm-epsilon": "layernorm_epsilon",
    "--num-experts": "num_moe_experts",
    "--fp8-format": "fp8",
    "--num-virtual-stages-per-pipeline-rank": "virtual_pipeline_model_parallel_size",
    "--decoder-first-pipeline-num-layers": "num_layers_in_first_pipeline_stage",
    "--decoder-last-pipeline-num-layers": "num_layers_in_last_pipeline_stage",
}


def megatron_core_configs(plan: EmitInput) -> dict[str, Any]:
    """megatron.core's configs built from the emitted values (their checks run)."""
    import dataclasses as dc

    import torch
    import torch.nn.functional as F
    from megatron.core import ModelParallelConfig
    from megatron.core.activations import squared_relu
    from megatron.core.optimizer import OptimizerConfig
    from megatron.core.transformer import MLATransformerConfig, TransformerConfig

    given = split_arguments(megatron_arguments(plan))
    kwargs: dict[str, Any] = {}
    for flag, values in given.items():
        if flag in NOT_TRANSFORMER_CONFIG:
            continue
        kind = MEGATRON_FLAGS[flag].kind
        value = {"switch": lambda _: True, "int": int, "float": float, "str": str}[kind](
            values[0] if values else None
        )
        kwargs[RENAMED.get(flag, flag[2:].replace("-", "_"))] = value
    if "--swiglu" in given:
        kwargs.update(gated_linear_unit=True, activation_func=F.silu)
    if "--squared-relu" in given:
        kwargs["activation_func"] = squared_relu
    kwargs["add_bias_linear"] = "--disable-bias-linear" not in given
    kwargs["apply_rope_fusion"] = "--no-rope-fusion" not in given  # argparse's default: on
    if "--cp-comm-type" in given:
        kwargs["cp_comm_type"] = given["--cp-comm-type"][0]
    if "--moe-layer-freq" in given:
        pattern = given["--moe-layer-freq"][0]
        kwargs["moe_layer_freq"] = eval(pattern) if "[" in pattern else int(pattern)
    dtype = torch.float16 if "--fp16" in given else torch.bfloat16 if "--bf16" in given else None
    if dtype is not None:
        kwargs["params_dtype"] = dtype
        kwargs["pipeline_dtype"] = dtype  # rule 44: set from the params dtype by the script
    mla = "--multi-latent-attention" in given
    config = (MLATransformerConfig if mla else TransformerConfig)(**kwargs)
    parallel_fields = {field.name for field in dc.fields(ModelParallelConfig)}
    parallel = ModelParallelConfig(**{k: v for k, v in kwargs.items() if k in parallel_fields})
    optimizer = OptimizerConfig(
        optimizer="adam",
        lr=3e-4,
        bf16="--bf16" in given,
        fp16="--fp16" in given,
        params_dtype=dtype or torch.float32,
        use_distributed_optimizer="--use-distributed-optimizer" in given,
        optimizer_cpu_offload="--optimizer-cpu-offload" in given,
        use_precision_aware_optimizer="--use-precision-aware-optimizer" in given,
        optimizer_offload_fraction=float(given.get("--optimizer-offload-fraction", ["1.0"])[0]),
    )
    return {"transformer": config, "parallel": parallel, "optimizer": optimizer}


@pytest.mark.parametrize("name", sorted(PLANS_TO_CHECK))
def test_megatron_core_accepts_the_emitted_values(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("megatron.core", reason=MEGATRON_CORE_MISSING)
    import megatron.core.models.common.embeddings.rope_utils as rope_utils
    import megatron.core.utils
    from packaging.version import Version

    if megatron.core.utils.get_te_version() is None:
        # Without Transformer Engine (the CPU test machine), fp8 and the precision-aware
        # optimizer crash on its version check; answer as a GPU machine with TE 2.x would.
        monkeypatch.setattr(megatron.core.utils, "get_te_version", lambda: Version("2.9.0"))
        monkeypatch.setattr(rope_utils, "fused_apply_rotary_pos_emb", lambda *a, **k: None)
    plan = PLANS_TO_CHECK[name]
    configs = megatron_core_configs(plan)
    config = configs["transformer"]
    assert config.num_layers == plan.model.num_layers
    assert config.tensor_model_parallel_size == plan.layout.tp
    assert config.sequence_parallel == (plan.layout.tp > 1 and "--sequence-parallel" in
                                        megatron_arguments(plan))  # fmt: skip
    assert configs["parallel"].pipeline_model_parallel_size == plan.layout.pp
    if plan.model.moe is not None:
        assert config.num_moe_experts == plan.model.moe.num_experts
        assert config.expert_tensor_parallel_size == plan.layout.expert_tp


def test_megatron_core_rejects_a_broken_layout() -> None:
    """The real check is not vacuous: megatron.core refuses 64 heads over tp 7."""
    pytest.importorskip("megatron.core", reason=MEGATRON_CORE_MISSING)
    from megatron.core.transformer import TransformerConfig

    with pytest.raises(ValueError, match="num_attention_heads"):
        TransformerConfig(
            num_layers=80, hidden_size=8192, num_attention_heads=64, tensor_model_parallel_size=7
        )


# -- the real thing: Megatron-LM's own argument parser (needs a checkout) ------------------

MEGATRON_CHECK = r"""
import json, os, sys
import torch
argv, world = json.loads(sys.argv[1]), int(sys.argv[2])
os.environ.update(WORLD_SIZE=str(world), RANK="0")
from packaging.version import Version
# Validate as on an H100 with Transformer Engine 2.x, which this CPU machine may lack: the
# device, TE version and fused-RoPE availability checks answer as there.
torch.cuda.get_device_capability = lambda *a, **k: (9, 0)
import megatron.core.utils
import megatron.core.models.common.embeddings.rope_utils as rope_utils
if megatron.core.utils.get_te_version() is None:
    megatron.core.utils.get_te_version = lambda: Version("2.9.0")
    rope_utils.fused_apply_rotary_pos_emb = lambda *a, **k: None
import megatron.training.arguments as arguments
arguments.get_device_arch_version = lambda: 9
sys.argv = ["pretrain_gpt.py", *argv]
args = arguments.parse_args()
arguments.validate_args(args)
config = arguments.core_transformer_config_from_args(args)
parser = arguments.add_megatron_arguments(__import__("argparse").ArgumentParser())
print(json.dumps({
    "dp": args.data_parallel_size, "vpp": args.virtual_pipeline_model_parallel_size,
    "sp": args.sequence_parallel, "layers": config.num_layers,
    "tp": config.tensor_model_parallel_size,
    "moe_layer_freq": config.moe_layer_freq, "known": sorted(parser._option_string_actions),
}))
"""


def megatron_checkout() -> Path:
    path = Path(os.environ.get("MEGATRON_PATH", "/nonexistent"))
    if not (path / "megatron" / "training" / "arguments.py").exists():
        pytest.skip("MEGATRON_PATH does not name a Megatron-LM checkout (with torch installed)")
    pytest.importorskip("torch", reason="Megatron-LM's argument parser needs torch")
    return path


@pytest.mark.parametrize("name", sorted(PLANS_TO_CHECK))
def test_megatron_lm_parses_and_validates_the_arguments(name: str) -> None:
    checkout = megatron_checkout()
    plan = PLANS_TO_CHECK[name]
    args = [PLACEHOLDER_VALUES.get(token, token) for token in megatron_arguments(plan)]
    env = dict(os.environ, PYTHONPATH=str(checkout))
    env.pop("CUDA_DEVICE_MAX_CONNECTIONS", None)
    launch = MegatronEmitter().emit(plan).as_dict()["launch_megatron.sh"]
    if "\nexport CUDA_DEVICE_MAX_CONNECTIONS=1\n" in launch:
        env["CUDA_DEVICE_MAX_CONNECTIONS"] = "1"  # Megatron asserts it with tp or cp > 1
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", MEGATRON_CHECK, json.dumps(args),
         str(plan.num_gpus)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["dp"] == plan.dp
    assert result["vpp"] == (plan.layout.vpp if plan.layout.interleaved else None)
    assert result["sp"] == ("--sequence-parallel" in args)
    assert (result["layers"], result["tp"]) == (plan.model.num_layers, plan.layout.tp)
    if plan.model.moe is not None:
        pattern = [int(plan.model.is_moe_layer(i)) for i in range(plan.model.num_layers)]
        freq = result["moe_layer_freq"]
        if not isinstance(freq, list):
            freq = [int(i % freq == 0) for i in range(len(pattern))]
        assert freq == pattern
    assert set(MEGATRON_FLAGS) <= set(result["known"])
