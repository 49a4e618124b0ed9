"""The 0.3.0 Python recipe: a config function returning ``Trainer.Config`` from the settings."""

from __future__ import annotations

import json
import re
import textwrap

from planner.emit.base import (
    EmitInput,
    autopar_version,
)
from planner.emit.torchtitan._fields import (
    CURRENT_MODULE_NAMES,
    CURRENT_VERSION,
    LAUNCH_FILE,
    RECIPE_MODULE,
    TORCHTITAN_MODELS,
    V02_ABSENT,
    V02_FIELDS,
    Settings,
    current_home,
)

LINE_LENGTH = 100  # the emitted module is formatted as ruff/black would (tests check it)


def recipe_function_name(plan: EmitInput) -> str:
    """``autopar_<model>``: the ``--config`` name of the emitted recipe."""
    return "autopar_" + re.sub(r"[^0-9a-zA-Z]+", "_", plan.model.name).strip("_").lower()


def _py(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_py(item) for item in value) + "]"
    return repr(value)


def _kwargs(values: dict[str, object], indent: str) -> list[str]:
    return [f"{indent}{key}={_py(values[key])}," for key in sorted(values)]


def _import_lines(module: str, names: list[str]) -> list[str]:
    line = f"from {module} import {', '.join(sorted(names))}"
    if len(line) <= LINE_LENGTH:
        return [line]
    return [f"from {module} import (", *(f"    {name}," for name in sorted(names)), ")"]


def _homes(settings: Settings, prefix: str) -> dict[str, object]:
    """Settings whose 0.3.0 home is ``<prefix>.<field>``, by field name."""
    found = {}
    for section, values in settings.items():
        for key, value in values.items():
            known = key in V02_FIELDS.get(section, ()) or (section, key) in V02_ABSENT
            if not known:
                raise ValueError(f"{section}.{key} is not in the torchtitan field table")
            home = current_home(section, key)
            if home.startswith(prefix + "."):
                found[home.removeprefix(prefix + ".")] = value
    return found


def render_recipe(settings: Settings, plan: EmitInput) -> str:
    """A Python module whose function returns torchtitan 0.3.0's ``Trainer.Config``.

    The function starts from torchtitan's own recipe for the model (dataset, optimizer,
    schedule, checkpointing) and replaces the model, batch, parallelism, recomputation and
    compile settings with the plan's; ``dataclasses.replace`` re-runs the config classes'
    ``__post_init__`` checks.
    """
    model = settings["model"]
    entry = next(
        e
        for e in TORCHTITAN_MODELS.values()
        if (e.module, e.flavor) == (model["name"], model["flavor"])
    )
    ac_class = {"none": None, "selective": "SelectiveAC", "full": "FullAC"}[
        str(settings["activation_checkpoint"]["mode"])
    ]
    training, parallelism = _homes(settings, "training"), _homes(settings, "parallelism")
    if parallelism["pipeline_parallel_degree"] != 1 or parallelism["expert_parallel_degree"] != 1:
        # Trainer.Config._validate_cuda_graphs refuses CUDA graphs with PP, and with EP's
        # default token dispatcher (it synchronizes with the host)
        training["disable_cuda_graphs"] = True
    imports = {
        "torchtitan.components.loss": ["ChunkedLossWrapper", "CrossEntropyLoss"],
        "torchtitan.config": ["CompileConfig", "ParallelismConfig"],
        "torchtitan.models.common.config_utils": ["decoder_vocab_size"],
        f"torchtitan.models.{entry.module}": ["model_registry"],
        f"torchtitan.models.{entry.module}.config_registry": [entry.base_recipe],
        "torchtitan.trainer": ["Trainer"],
    }
    if ac_class:
        imports["torchtitan.distributed.activation_checkpoint"] = [ac_class]
    registry_args = _py(entry.flavor)
    if "converters" in model:
        imports["torchtitan.components.quantization"] = ["Float8LinearConverter"] + (
            ["Float8GroupedExpertsConverter"] if "quantize.grouped_mm.float8" in settings else []
        )
        registry_args += ", converters=converters"
    function = recipe_function_name(plan)
    about = (
        f"{plan.model.name} on {plan.num_gpus} GPUs: {summary(plan)}. Launch with "
        f"{LAUNCH_FILE}, which runs torchtitan.train --module {RECIPE_MODULE} --config "
        f"{function}."
    )
    lines = [
        f'"""torchtitan {CURRENT_VERSION} recipe written by autopar {autopar_version()}.',
        "",
        *textwrap.wrap(about, width=LINE_LENGTH - 8),
        '"""',
        "",
        "import dataclasses",
        "",
        *(line for name in sorted(imports) for line in _import_lines(name, imports[name])),
        "",
        "",
        f"def {function}() -> Trainer.Config:",
        "    # torchtitan's recipe for this model supplies dataset, optimizer and schedule",
        f"    base = {entry.base_recipe}()",
        *(_float8_lines(settings) if "converters" in model else []),
        f"    model_spec = model_registry({registry_args})",
        "    return dataclasses.replace(",
        "        base,",
        "        model_spec=model_spec,",
        f"        hf_assets_path={_py(model['hf_assets_path'])},",
        "        loss=ChunkedLossWrapper.Config(",
        "            loss_fn=CrossEntropyLoss.Config(",
        "                global_vocab_size=decoder_vocab_size(model_spec),",
        "            ),",
        "        ),",
        "        training=dataclasses.replace(",
        "            base.training,",
        *_kwargs(training, " " * 12),
        "        ),",
        "        parallelism=ParallelismConfig(",
        *_kwargs(parallelism, " " * 12),
        "        ),",
        f"        activation_checkpoint={f'{ac_class}.Config()' if ac_class else 'None'},",
        "        compile=CompileConfig(",
        *_kwargs(_homes(settings, "compile"), " " * 12),
        "        ),",
        "    )",
    ]
    return "\n".join(lines) + "\n"


def _float8_lines(settings: Settings) -> list[str]:
    linear = settings["quantize.linear.float8"]
    skipped = linear["filter_fqns"]
    assert isinstance(skipped, list)
    lines = [
        "    converters = [",
        "        Float8LinearConverter.Config(",
        f"            recipe_name={_py(linear['recipe_name'])},",
        f"            filter_fqns={_py([CURRENT_MODULE_NAMES.get(n, n) for n in skipped])},",
        "            model_compile_enabled=True,",
        "        ),",
    ]
    if "quantize.grouped_mm.float8" in settings:
        lines.append("        Float8GroupedExpertsConverter.Config(model_compile_enabled=True),")
    return [*lines, "    ]"]


def summary(plan: EmitInput) -> str:
    layout = plan.layout
    degrees = (
        f"dp {plan.dp} ({'FSDP' if layout.zero_stage == 3 else 'DDP'}) x tp {layout.tp} "
        f"x cp {layout.cp} x pp {layout.pp}"
    )
    if layout.interleaved:
        degrees += f" (vpp {layout.vpp})"
    if layout.ep > 1:
        degrees += f", ep {layout.ep}"
    if layout.pp > 1:
        batching = f"{plan.global_batch // (plan.dp * layout.mbs)} pipeline micro-batches"
    else:
        batching = f"gradient accumulation {plan.grad_accumulation}"
    return (
        f"{degrees}; micro-batch {layout.mbs}, {batching}; recompute {layout.recompute}; "
        f"{plan.precision}"
    )
