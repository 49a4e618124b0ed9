"""The options that describe model, cluster and workload, shared by ``estimate`` and ``plan``.

Each option is an ``Annotated`` alias so both commands declare the same flag the same way,
and :func:`load_inputs` turns their values into specs with one-line errors.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from planner import catalog
from planner.errors import SpecError
from planner.frameworks import framework_names
from planner.specs._base import spec_error
from planner.specs.hardware import ClusterSpec
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec

_SUFFIXES = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}

ModelOption = Annotated[str, typer.Option(help="Catalogue name, model file or HF config.json.")]
ClusterOption = Annotated[str, typer.Option(help="Cluster preset (dgx-h100) or cluster file.")]
SeqLenOption = Annotated[int, typer.Option("--seq-len", min=1, help="Tokens per sequence.")]
NodesOption = Annotated[int | None, typer.Option(min=1, help="Whole nodes.")]
GpusOption = Annotated[int | None, typer.Option(min=1, help="Total GPUs (a partial node is fine).")]
GlobalBatchOption = Annotated[
    int | None, typer.Option("--global-batch", min=1, help="Sequences per step.")
]
GlobalBatchTokensOption = Annotated[
    str | None, typer.Option("--global-batch-tokens", help="Tokens per step (e.g. 16M).")
]
PrecisionOption = Annotated[str, typer.Option(help="bf16 | fp16 | fp8 | fp32.")]
FrameworkOption = Annotated[
    str, typer.Option(help="megatron | deepspeed | torchtitan | pytorch: sets defaults.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON and nothing else.")]


def parse_count(text: str, *, option: str) -> int:
    """'16M' -> 16 * 2**20 (binary suffixes, as token batches are quoted); '4096' -> 4096."""
    match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", text)
    if match is None:
        raise SpecError(f"{option}: '{text}' is not a whole number (suffixes K, M, G allowed)")
    return int(match.group(1)) * _SUFFIXES[match.group(2).lower()]


def build_spec(cls: Any, what: str, **fields: Any) -> Any:
    """Construct a spec, turning a validation error into a one-line ``SpecError``."""
    try:
        return cls(**fields)
    except ValidationError as error:
        raise spec_error(error, what=what) from None


def check_framework(framework: str) -> None:
    if framework not in framework_names():
        known = ", ".join(framework_names())
        raise SpecError(f"--framework: unknown '{framework}'; known: {known}")


def load_inputs(
    *,
    model: str,
    cluster: str,
    nodes: int | None,
    gpus: int | None,
    seq_len: int,
    global_batch: int | None,
    global_batch_tokens: str | None,
    precision: str,
) -> tuple[ModelSpec, ClusterSpec, WorkloadSpec]:
    """The model, cluster and workload specs the options describe."""
    model_spec = catalog.load_model(model)
    cluster_spec = catalog.load_cluster(cluster, nodes=nodes, gpus=gpus)
    tokens = (
        None
        if global_batch_tokens is None
        else parse_count(global_batch_tokens, option="--global-batch-tokens")
    )
    workload = build_spec(
        WorkloadSpec,
        "workload",
        seq_len=seq_len,
        global_batch=global_batch,
        global_batch_tokens=tokens,
        precision=precision,
    )
    return model_spec, cluster_spec, workload
