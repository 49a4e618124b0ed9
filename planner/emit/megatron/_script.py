"""The files: ``launch_megatron.sh`` (torchrun and the arguments in bash arrays) and
``megatron_args.txt`` (the same arguments, one flag per line)."""

from __future__ import annotations

import re
import shlex

from planner.emit.base import (
    EmitInput,
    EmittedFiles,
    activation_lines,
    allocator_lines,
    autopar_version,
)
from planner.emit.megatron._arguments import argument_groups
from planner.emit.megatron._flags import (
    ARGS_FILE,
    DEFAULT_MASTER_PORT,
    LAUNCH_FILE,
    PLACEHOLDERS,
    Item,
)
from planner.emit.megatron._refusals import checked


def _shell_word(token: str) -> str:
    if re.fullmatch(r"\$[A-Z_][A-Z0-9_]*", token):
        return f'"{token}"'
    return shlex.quote(token)


def _one_line(text: str) -> str:
    """Text safe inside a one-line shell comment."""
    return " ".join(text.split())


def _line(flag: str, values: tuple[str, ...]) -> str:
    return " ".join([flag, *(_shell_word(value) for value in values)])


def _prediction(plan: EmitInput, key: str, scale: float, fmt: str, unit: str) -> str:
    value = plan.predictions.get(key)
    return "not predicted" if value is None else f"{value * scale:{fmt}} {unit}"


def _header(plan: EmitInput) -> list[str]:
    layout, model = plan.layout, plan.model
    vpp = f", vpp {layout.vpp}" if layout.interleaved else ""
    lines = [
        "#!/usr/bin/env bash",
        f"# Megatron-LM pretrain_gpt.py launch for {_one_line(model.name)}, written by autopar "
        f"{autopar_version()}.",
        "#",
        f"# Plan: {plan.num_gpus} GPUs ({plan.nodes} node(s) x {plan.nproc_per_node}); tp "
        f"{layout.tp}, pp {layout.pp}{vpp}, cp {layout.cp}, dp {plan.dp}, ep {layout.ep}; "
        f"{plan.precision}",
        "# Predicted by autopar (an estimate, not a measurement):",
        f"#   step time     {_prediction(plan, 'step_time_s', 1, '.3f', 's')}",
        f"#   throughput    {_prediction(plan, 'tokens_per_s', 1, '.1f', 'tokens/s')}",
        f"#   MFU           {_prediction(plan, 'mfu', 100, '.2f', '%')}",
        f"#   peak memory   {_prediction(plan, 'peak_gib', 1, '.2f', 'GiB per GPU')}",
        "#",
        "# Environment it reads (run it on every node, each with its own NODE_RANK):",
        "#   MASTER_ADDR      rendezvous host, the address of node 0 (default: localhost)",
        f"#   MASTER_PORT      rendezvous port (default: {DEFAULT_MASTER_PORT})",
        "#   NODE_RANK        this node's index, 0 .. NNODES-1 (default: 0)",
        f"#   NNODES           number of nodes (default: {plan.nodes}, the plan's)",
        "#   MEGATRON_PATH    a checkout of NVIDIA/Megatron-LM (required)",
    ]
    for name, (meaning, default) in PLACEHOLDERS.items():
        when = "required" if default is None else f"default: {default}"
        lines.append(f"#   {name:<16} {meaning} ({when}; yours to set)")
    return lines


def _script(plan: EmitInput, groups: list[tuple[str, str, list[Item]]]) -> str:
    lines = [*_header(plan), "set -euo pipefail", ""]
    for name in ("MEGATRON_PATH", *PLACEHOLDERS):
        default = PLACEHOLDERS.get(name, ("", None))[1]
        if default is None:
            lines.append(f': "${{{name}:?set {name} (see the header of this script)}}"')
    for name, default in (
        ("MASTER_ADDR", "localhost"),
        ("MASTER_PORT", str(DEFAULT_MASTER_PORT)),
        ("NODE_RANK", "0"),
        ("NNODES", str(plan.nodes)),
        *((name, spec[1]) for name, spec in PLACEHOLDERS.items() if spec[1] is not None),
    ):
        lines.append(f'{name}="${{{name}:-{default}}}"')
    lines += [
        f'if [ "$NNODES" != {plan.nodes} ]; then',
        f'  echo "warning: the plan is for {plan.nodes} node(s) of {plan.nproc_per_node} GPUs;'
        ' Megatron will derive another data-parallel size" >&2',
        "fi",
        "",
    ]
    if plan.layout.tp > 1 or plan.layout.cp > 1:
        lines += [
            "# Megatron-LM asserts this with tp > 1 or cp > 1 on GPUs before Blackwell.",
            "export CUDA_DEVICE_MAX_CONNECTIONS=1",
            "",
        ]
    lines += allocator_lines(plan)
    lines += activation_lines(plan)
    for array, heading, items in groups:
        if array == "MODEL_ARGS":
            source = f" ({plan.model.source})" if plan.model.source else ""
            heading = _one_line(f"model: {plan.model.name}{source}")
        lines += [f"# {heading}", f"{array}=("]
        for flag, values, comment in items:
            lines += [f"  # {part}" for part in comment.splitlines()]
            lines.append(f"  {_line(flag, values)}")
        lines += [")", ""]
    lines += [
        "torchrun \\",
        f"  --nproc_per_node {plan.nproc_per_node} \\",
        '  --nnodes "$NNODES" \\',
        '  --node_rank "$NODE_RANK" \\',
        '  --master_addr "$MASTER_ADDR" \\',
        '  --master_port "$MASTER_PORT" \\',
        '  "$MEGATRON_PATH"/pretrain_gpt.py \\',
    ]
    arrays = [f'  "${{{array}[@]}}"' for array, _, _ in groups]
    lines += [line + " \\" for line in arrays[:-1]] + arrays[-1:]
    return "\n".join(lines) + "\n"


class MegatronEmitter:
    """Megatron-LM ``pretrain_gpt.py``: a torchrun launch script and its argument list."""

    name = "megatron"

    def emit(self, plan: EmitInput) -> EmittedFiles:
        plan = checked(plan)
        groups = argument_groups(plan)
        arguments = [_line(flag, values) for _, _, items in groups for flag, values, _ in items]
        return EmittedFiles(
            files=(
                (LAUNCH_FILE, _script(plan, groups)),
                (ARGS_FILE, "\n".join(arguments) + "\n"),
            )
        )
