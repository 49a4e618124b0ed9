"""Megatron-LM emitter: what only Megatron has, and Megatron's own checks of the output.

The contract every emitter keeps (golden files, determinism, round trip, refusals) is in
``test_contract.py``; the plans are ``megatron_cases.MEGATRON_CASES``. Here: the launch
script's header, environment and torchrun call; every catalogue model read back; the
parser's own refusals; and Megatron's rules checked three ways: always against the flag
table in ``planner.emit.megatron`` and Megatron-LM's argument validation restated here on
the emitted values (``validate_args`` in ``megatron/training/arguments.py`` and the
``__post_init__`` checks of ``TransformerConfig``/``ModelParallelConfig``); where
``megatron.core`` is importable, by building those configs from the emitted values; and
where ``MEGATRON_PATH`` names a Megatron-LM checkout, by Megatron's own ``parse_args`` +
``validate_args`` + ``core_transformer_config_from_args`` in a subprocess.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from emitter_cases import built, make_plan, mixtral_variant
from megatron_cases import MEGATRON_CASES, canonical

from planner.catalog import list_catalog_models
from planner.emit.base import EmitError, EmitInput
from planner.emit.megatron import (
    MEGATRON_FLAGS,
    MegatronEmitter,
    megatron_arguments,
    megatron_flag_values,
    parse_megatron_arguments,
)
from planner.specs.model import ModelSpec

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
    "Megatron-LM rules restated instead"
)


PLANS_TO_CHECK = built(MEGATRON_CASES)


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


# -- the launch script ----------------------------------------------------------------------


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


# -- every catalogue model, and the reader ----------------------------------------------------


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
    model = mixtral_variant(first_dense_layers=first_dense, layer_freq=freq).model_copy(
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


# -- Megatron's flags and rules, as a table (always runs) -----------------------------------


@pytest.mark.parametrize("name", sorted(PLANS_TO_CHECK))
def test_every_flag_is_in_the_table_with_a_value_of_its_kind(name: str) -> None:
    for flag, values in split_arguments(megatron_arguments(PLANS_TO_CHECK[name])).items():
        spec = MEGATRON_FLAGS.get(flag)
        assert spec is not None, f"{flag} is not a known Megatron-LM flag"
        assert spec.source.startswith("megatron/training/arguments.py "), flag
        if spec.kind == "switch":
            assert values == [], flag
            continue
        assert len(values) >= 1 if spec.kind in ("list", "ints") else len(values) == 1, flag
        for given in values:
            value = PLACEHOLDER_VALUES.get(given, given)
            if spec.kind in ("int", "ints", "float"):
                {"int": int, "ints": int, "float": float}[spec.kind](value)
            if spec.choices:
                assert value in spec.choices, flag


def rule_violations(plan: EmitInput, args: list[str], launch: str) -> list[str]:
    """Megatron-LM's argument validation restated on emitted values, each rule named in words.

    From ``validate_args`` (``megatron/training/arguments.py``), the ``__post_init__`` of
    ``ModelParallelConfig``/``TransformerConfig``, ``initialize_model_parallel``
    (``megatron/core/parallel_state.py``), the micro-batch calculator and the interleaved
    schedule (``megatron/core/pipeline_parallel/schedules.py``); and the launch script's
    environment, which ``validate_args`` asserts before Blackwell GPUs.
    """
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

    def rule(name: str, holds: bool) -> None:
        if not holds:
            problems.append(name)

    rule("world size divisible by tp x pp x cp", world % (t * p * c) == 0)
    d = world // (t * p * c)
    rule("world size divisible by etp x ep x pp", world % (et * e * p) == 0)
    rule("attention heads divisible by tp", heads % t == 0)
    rule(
        "query groups divisible by tp", "--multi-latent-attention" in given or groups % t == 0
    )  # strict, as core_v0.15 and before
    rule("ffn hidden size divisible by tp", num("--ffn-hidden-size") % t == 0)
    rule(
        "expert ffn hidden size divisible by etp",
        "--num-experts" not in given or num("--moe-ffn-hidden-size") % et == 0,
    )
    rule(
        "hidden size divisible by heads without --kv-channels",
        "--kv-channels" in given or num("--hidden-size") % heads == 0,
    )
    rule("seq length divisible by 2 x cp", c == 1 or seq % (2 * c) == 0)
    levels = [int(size) for size in given.get("--hierarchical-context-parallel-sizes", [])]
    rule(
        "a2a+p2p needs hierarchical group sizes",
        given.get("--cp-comm-type", ["p2p"]) != ["a2a+p2p"] or bool(levels),
    )
    rule("hierarchical sizes multiply to cp", not levels or math.prod(levels) == c)
    rule("sequence parallel only with tp > 1", "--sequence-parallel" not in given or t > 1)
    rule(
        "tp comm overlap needs sequence parallel",
        "--tp-comm-overlap" not in given or "--sequence-parallel" in given,
    )
    rule(
        "sequence parallel with tp > 1 and ep > 1",
        not (t > 1 and e > 1) or "--sequence-parallel" in given,
    )
    rule(
        "a2a context parallel splits the heads per tp rank over cp",
        given.get("--cp-comm-type", ["p2p"]) != ["a2a"] or (heads // t) % c == 0,
    )
    rule(
        "a2a+p2p splits the heads and query groups per tp rank over the a2a group",
        given.get("--cp-comm-type", ["p2p"]) != ["a2a+p2p"]
        or ((heads // t) % levels[0] == 0 and (groups // t) % levels[0] == 0),
    )
    first = num("--decoder-first-pipeline-num-layers")
    last = num("--decoder-last-pipeline-num-layers")
    if first is None and last is None:
        rule("layers divisible by pp", layers % p == 0)
        rule("layers per pipeline rank divisible by vpp", v is None or (layers // p) % v == 0)
    else:
        middle_stages = p - (first is not None) - (last is not None)
        middle = layers - (first or 0) - (last or 0)
        rule(
            "uneven split: middle layers only with middle stages",
            (middle_stages == 0) == (middle == 0),
        )
        rule(
            "uneven split: middle layers divide over the middle stages",
            middle_stages == 0 or middle % middle_stages == 0,
        )
        rule(
            "uneven split: first and last stage layers divisible by vpp",
            v is None or all(n is None or n % v == 0 for n in (first, last)),
        )
    microbatches = batch // (b * d)
    rule("vpp needs pp > 1", v is None or p > 1)
    rule(
        "interleaved schedule: micro-batches a multiple of pp",
        v is None or (microbatches >= p and microbatches % p == 0),
    )
    rule(
        "global batch divisible by micro-batch x dp",
        b > 0 and batch % (b * d) == 0 and microbatches >= 1,
    )
    overlap_needs = {"--use-distributed-optimizer", "--overlap-grad-reduce"}
    rule(
        "overlap param gather needs distributed optimizer and overlap grad reduce",
        "--overlap-param-gather" not in given or overlap_needs <= set(given),
    )
    granularity = given.get("--recompute-granularity", [None])[0]
    per_stage = max(first or 0, last or 0, layers // p)
    rule(
        "full recompute needs a method and 1 to layers-per-stage layers",
        granularity != "full"
        or (
            given["--recompute-method"][0] in ("uniform", "block")
            and 1 <= num("--recompute-num-layers") <= per_stage
        ),
    )
    recompute_details = {"--recompute-method", "--recompute-num-layers"}
    rule(
        "selective recompute takes no method or layer count",
        granularity != "selective" or not recompute_details & set(given),
    )
    offload_needs = {"--use-precision-aware-optimizer", "--use-distributed-optimizer"}
    rule(
        "optimizer CPU offload needs precision-aware and distributed optimizer",
        "--optimizer-cpu-offload" not in given or offload_needs <= set(given),
    )
    rule(
        "experts divisible by ep",
        e == 1 or ("--num-experts" in given and num("--num-experts") % e == 0),
    )
    rule(
        "top-1 softmax routing needs pre-softmax",
        "--num-experts" not in given
        or num("--moe-router-topk", 2) > 1
        or "--moe-router-pre-softmax" in given
        or given.get("--moe-router-score-function") == ["sigmoid"],
    )
    rule(
        "MLA excludes GQA",
        not {"--multi-latent-attention", "--group-query-attention"} <= set(given),
    )
    rule("fp16 and bf16 are exclusive", not {"--fp16", "--bf16"} <= set(given))
    rule("max position embeddings at least seq length", num("--max-position-embeddings") >= seq)
    exported = "\nexport CUDA_DEVICE_MAX_CONNECTIONS=1\n" in launch
    if exported != (t > 1 or c > 1):
        problems.append("CUDA_DEVICE_MAX_CONNECTIONS=1 iff tp > 1 or cp > 1")
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
    expected = {"world size divisible by tp x pp x cp", "attention heads divisible by tp"}
    assert expected <= set(rule_violations(plan, broken, launch))
    without_env = launch.replace("export CUDA_DEVICE_MAX_CONNECTIONS=1", "")
    assert rule_violations(plan, args, without_env) == [
        "CUDA_DEVICE_MAX_CONNECTIONS=1 iff tp > 1 or cp > 1"
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
    "--moe-layer-freq", "--cp-comm-type", "--no-rope-fusion", "--grad-reduce-in-bf16",
    "--transformer-impl", "--no-gradient-accumulation-fusion",
}  # fmt: skip
# flag -> TransformerConfig field, where ArgumentGroupFactory (megatron/training/
# argument_utils.py) does not spell the field as the flag
RENAMED = {
    "--norm-epsilon": "layernorm_epsilon",
    "--num-experts": "num_moe_experts",
    "--fp8-format": "fp8",
    "--num-virtual-stages-per-pipeline-rank": "virtual_pipeline_model_parallel_size",
    "--decoder-first-pipeline-num-layers": "num_layers_in_first_pipeline_stage",
    "--decoder-last-pipeline-num-layers": "num_layers_in_last_pipeline_stage",
    "--microbatch-group-size-per-virtual-pipeline-stage": "microbatch_group_size_per_vp_stage",
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
        value = (
            list(values)
            if kind == "list"
            else [int(value) for value in values]
            if kind == "ints"
            else {"switch": lambda _: True, "int": int, "float": float, "str": str}[kind](
                values[0] if values else None
            )
        )
        kwargs[RENAMED.get(flag, flag[2:].replace("-", "_"))] = value
    if "--swiglu" in given:
        kwargs.update(gated_linear_unit=True, activation_func=F.silu)
    if "--squared-relu" in given:
        kwargs["activation_func"] = squared_relu
    kwargs["add_bias_linear"] = "--disable-bias-linear" not in given
    kwargs["apply_rope_fusion"] = "--no-rope-fusion" not in given  # argparse's default: on
    # --no-gradient-accumulation-fusion is the store_false of TransformerConfig's field
    kwargs["gradient_accumulation_fusion"] = "--no-gradient-accumulation-fusion" not in given
    if "--cp-comm-type" in given:
        kwargs["cp_comm_type"] = given["--cp-comm-type"][0]
    if "--moe-layer-freq" in given:
        pattern = given["--moe-layer-freq"][0]
        kwargs["moe_layer_freq"] = eval(pattern) if "[" in pattern else int(pattern)
    dtype = torch.float16 if "--fp16" in given else torch.bfloat16 if "--bf16" in given else None
    if dtype is not None:
        kwargs["params_dtype"] = dtype
        kwargs["pipeline_dtype"] = dtype  # pretrain_gpt.py sets it from the params dtype
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


def test_hierarchical_cp_writes_both_group_sizes_and_reads_them_back() -> None:
    """a2a+p2p is launched with its two levels (validate_args asserts them, their product
    cp): the a2a group first, the p2p ring second, as Megatron-LM's parallel_state builds
    them; the arguments read back to the same layout."""
    plan = PLANS_TO_CHECK["llama-3.1-8b-cp16-a2a-p2p"]
    args = megatron_arguments(plan)
    given = split_arguments(args)
    assert given["--cp-comm-type"] == ["a2a+p2p"]
    assert given["--hierarchical-context-parallel-sizes"] == ["8", "2"]
    _, layout = parse_megatron_arguments(args, num_gpus=plan.num_gpus)
    assert layout.hierarchical_cp_sizes == (8, 2)
    assert (layout.cp_a2a_size, layout.cp_ring_size) == (8, 2)
    with pytest.raises(EmitError, match="a2a and the p2p group size"):
        parse_megatron_arguments(_with_sizes(args, ["2", "2", "4"]))


def _with_sizes(args: list[str], sizes: list[str]) -> list[str]:
    at = args.index("--hierarchical-context-parallel-sizes")
    return [*args[: at + 1], *sizes, *args[at + 3 :]]
