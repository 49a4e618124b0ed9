"""torchtitan: the plans it is tested on, what each version refuses, and both formats read
back (the v0.2.x TOML job file and the 0.3.0 recipe)."""

from __future__ import annotations

import ast
import dataclasses
from typing import Any

from emitter_cases import (
    PLANS,
    Build,
    Contract,
    Files,
    golden_folder,
    load_plan,
    with_model,
)

from planner.emit.base import EmitInput
from planner.emit.torchtitan import (
    RECIPE_FILE,
    TOML_FILE,
    current_home,
    parse_toml,
    torchtitan_settings,
)

EIGHT_B = "llama-3.1-8b-8xh100-fsdp"  # 32 layers, 32 heads, 8 KV heads; 8 GPUs, 64 x 4096
SEVENTY_B = "llama-3.1-70b-64xh100"  # 80 layers; 64 GPUs (8 nodes), 512 x 8192


def _titan(stem: str, **overrides: Any) -> Build:
    return lambda: load_plan(stem, **overrides)


TORCHTITAN_CASES: dict[str, Build] = {
    EIGHT_B: _titan(EIGHT_B),
    "llama-3.1-70b-64xh100-fsdp-pp4-vpp2": _titan(
        SEVENTY_B, distributed_optimizer=False, zero_stage=3
    ),
    "llama-3.1-8b-tp2-cp2-fp8-async-tp": _titan(
        EIGHT_B, tp=2, cp=2, dp=2, sequence_parallel=True, tp_comm_overlap=True,
        cp_comm_type="all_gather", recompute="selective", precision="fp8",
    ),
    "llama-3.1-8b-pp4-uneven": _titan(
        EIGHT_B, pp=4, dp=2, mbs=2, recompute="none", first_stage_layers=7, last_stage_layers=7
    ),
    "qwen3-30b-a3b-8xh100-ep8": _titan(EIGHT_B, model="qwen3-30b-a3b", ep=8),
}  # fmt: skip
# name: (fixture, overrides, formats refusing, phrases the message must contain)
TORCHTITAN_REFUSALS: dict[str, tuple[str, dict[str, Any], tuple[str, ...], tuple[str, ...]]] = {
    "mixtral": ("mixtral-8x7b-16xh100", {}, ("current", "v0.2"),
                ("no model definition for mixtral/mixtral-8x7b", "supported: llama-3.1-8b")),
    "every reason at once": ("mixtral-8x7b-16xh100", dict(precision="fp16"), ("current", "v0.2"),
                             ("mixtral", "use FSDP", "fp16")),
    "distributed-optimizer": (SEVENTY_B, {}, ("current", "v0.2"), ("use FSDP (zero 3)",)),
    "zero2": ("llama-3.1-8b-8xh100-zero2", {}, ("current", "v0.2"), ("ZeRO-2",)),
    "fp16": (EIGHT_B, dict(precision="fp16"), ("current", "v0.2"), ("fp16",)),
    "offload": (EIGHT_B, dict(offload_optimizer_fraction=0.5), ("current", "v0.2"),
                ("enable_cpu_offload",)),
    "ulysses": (EIGHT_B, dict(cp=2, dp=4, cp_comm_type="a2a"), ("current", "v0.2"), ("Ulysses",)),
    "ddp-with-cp": (EIGHT_B, dict(cp=2, dp=4, zero_stage=0), ("current", "v0.2"), ("CP ranks",)),
    "recompute-block": (EIGHT_B, dict(recompute_method="block", recompute_num_layers=4),
                        ("current", "v0.2"), ("block with 4 of 32 layers",)),
    "recompute-uniform-2": (EIGHT_B, dict(recompute_method="uniform", recompute_num_layers=2),
                            ("current", "v0.2"), ("uniform",)),
    "heavy-first-stage": (EIGHT_B, dict(pp=4, dp=2, first_stage_layers=11, last_stage_layers=5),
                          ("current", "v0.2"), ("module_fqns_per_model_part",)),
    "uneven-vpp": (EIGHT_B, dict(pp=2, dp=4, vpp=2, first_stage_layers=14, last_stage_layers=18),
                   ("current", "v0.2"), ("vpp > 1",)),
    "expert-tp-without-ep": (EIGHT_B, dict(model="qwen3-30b-a3b", tp=2, dp=4, etp=1,
                             sequence_parallel=True), ("current", "v0.2"), ("etp 1 with ep 1",)),
    "seq_len tp and cp do not divide": (
        "llama-3.1-8b-tp2-cp2-fp8-async-tp", dict(seq_len=4100), ("current", "v0.2"),
        ("seq_len 4100 must be divisible by 8",),
    ),
    "model shaped unlike torchtitan's": (
        EIGHT_B, dict(num_layers=40), ("current", "v0.2"),
        ("has 40 layers of width 4096 but torchtitan's llama3 8B",),
    ),
    "cp-ring": (EIGHT_B, dict(cp=2, dp=4), ("current",), ("runs all_gather only", "version 0.2")),
    "expert-tp": (EIGHT_B, dict(model="qwen3-30b-a3b", tp=2, dp=4, ep=4, sequence_parallel=True),
                  ("current",), ("etp > 1",)),
    "tp-without-sp": (EIGHT_B, dict(tp=2, dp=4), ("v0.2",), ("sequence parallelism",)),
    "ddp-with-tp": (EIGHT_B, dict(tp=2, dp=4, sequence_parallel=True, zero_stage=0), ("v0.2",),
                    ("DDP has not supported > 1D parallelism",)),
}  # fmt: skip


def torchtitan_refusal_plan(name: str) -> EmitInput:
    """The plan of ``TORCHTITAN_REFUSALS[name]``: a fixture or case, with its overrides
    (``seq_len`` and ``num_layers`` edit the plan and its model, the rest the layout)."""
    stem, overrides, _, _ = TORCHTITAN_REFUSALS[name]
    overrides = dict(overrides)
    seq_len, num_layers = overrides.pop("seq_len", None), overrides.pop("num_layers", None)
    if (PLANS / f"{stem}.json").exists():
        plan = load_plan(stem, **overrides)
    else:
        assert not overrides, name
        plan = TORCHTITAN_CASES[stem]()
    if seq_len is not None:
        plan = dataclasses.replace(plan, seq_len=seq_len)
    return plan if num_layers is None else with_model(plan, num_layers=num_layers)


def _titan_refusals(fmt: str) -> dict[str, tuple[Build, tuple[str, ...]]]:
    return {
        name: ((lambda name=name: torchtitan_refusal_plan(name)), phrases)
        for name, (_, _, refusing, phrases) in TORCHTITAN_REFUSALS.items()
        if fmt in refusing
    }


def _titan_view(par: dict[str, Any], train: dict[str, Any], recompute: str) -> dict[str, Any]:
    return {
        "dp_replicate": par["data_parallel_replicate_degree"],
        "dp_shard": par["data_parallel_shard_degree"],
        **{axis: par[f"{axis}_parallel_degree"] for axis in ("tensor", "context", "pipeline")},
        "expert": par["expert_parallel_degree"],
        "schedule": par.get("pipeline_parallel_schedule"),
        "global_batch": train["global_batch_size"],
        "seq_len": train["seq_len"],
        "recompute": recompute,
    }


def _titan_expected(plan: EmitInput) -> dict[str, Any]:
    layout, fsdp = plan.layout, plan.layout.zero_stage == 3
    return {
        "dp_replicate": 1 if fsdp else plan.dp,
        "dp_shard": plan.dp if fsdp else 1,
        "tensor": layout.tp,
        "context": layout.cp,
        "pipeline": layout.pp,
        "expert": layout.ep,
        "schedule": None
        if layout.pp == 1
        else ("Interleaved1F1B" if layout.interleaved else "1F1B"),
        "global_batch": plan.global_batch,
        "seq_len": plan.seq_len,
        "recompute": layout.recompute,
    }


def _toml_read_back(files: Files, plan: EmitInput) -> tuple[Any, Any]:
    settings = parse_toml(files[TOML_FILE])
    view = _titan_view(
        settings["parallelism"], settings["training"], settings["activation_checkpoint"]["mode"]
    )
    return (view, settings), (_titan_expected(plan), torchtitan_settings(plan))


def read_recipe(text: str) -> dict[str, Any]:
    """``section.field`` -> value of the training, parallelism and compile settings and the
    activation checkpointing a 0.3.0 recipe returns, read from its syntax tree."""
    tree = ast.parse(text)
    returned = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Return))
    assert isinstance(returned, ast.Call)
    keywords = {keyword.arg: keyword.value for keyword in returned.keywords}
    found: dict[str, Any] = {}
    for section in ("training", "parallelism", "compile"):
        call = keywords[section]
        assert isinstance(call, ast.Call)
        for keyword in call.keywords:
            found[f"{section}.{keyword.arg}"] = ast.literal_eval(keyword.value)
    checkpoint = ast.unparse(keywords["activation_checkpoint"])
    modes = {"None": "none", "SelectiveAC.Config()": "selective", "FullAC.Config()": "full"}
    found["activation_checkpoint"] = modes[checkpoint]
    return found


def _recipe_read_back(files: Files, plan: EmitInput) -> tuple[Any, Any]:
    found = read_recipe(files[RECIPE_FILE])
    prefixes = ("training.", "parallelism.")
    sections = {
        prefix: {
            name.removeprefix(prefix): value
            for name, value in found.items()
            if name.startswith(prefix)
        }
        for prefix in prefixes
    }
    view = _titan_view(
        sections["parallelism."], sections["training."], found["activation_checkpoint"]
    )
    expected: dict[str, Any] = {}
    for section, values in torchtitan_settings(plan).items():
        for key, value in values.items():
            home = current_home(section, key)
            if home.startswith((*prefixes, "compile.")):
                expected[home] = value
    if plan.layout.pp > 1 or plan.layout.ep > 1:
        expected["training.disable_cuda_graphs"] = True
    expected["activation_checkpoint"] = plan.layout.recompute
    return (view, found), (_titan_expected(plan), expected)


def _contract(emitter: str, fmt: str, read_back: Any) -> Contract:
    """Both formats: the same cases and golden tree (one folder per format)."""
    return Contract(
        emitter=emitter,
        golden_folder=golden_folder("torchtitan", fmt),
        golden_cases=tuple(TORCHTITAN_CASES),
        plans=TORCHTITAN_CASES,
        read_back=read_back,
        refusal=r"torchtitan( [0-9.]+)? cannot express this plan: ",
        refusals=_titan_refusals(fmt),
    )


CONTRACTS = {
    "torchtitan": _contract("torchtitan", "current", _recipe_read_back),
    "torchtitan-toml": _contract("torchtitan-toml", "v0.2", _toml_read_back),
}
