"""The options that describe model, cluster and workload, shared by ``estimate`` and ``plan``.

Each option is an ``Annotated`` alias so both commands declare the same flag the same way,
and :func:`load_inputs` turns their values into specs with one-line errors.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from planner import catalog
from planner.errors import SpecError
from planner.frameworks import framework_names
from planner.specs import limits as L
from planner.specs._base import spec_error
from planner.specs.hardware import ClusterSpec
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec

TOKEN_SUFFIXES: dict[str, int] = {
    "": 1,
    "K": 10**3,
    "M": 10**6,
    "B": 10**9,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
"""Token counts are decimal, as papers quote them (15T tokens, a 4M-token batch): K, M,
B or G, T are 10^3, 10^6, 10^9, 10^12; Ki, Mi, Gi, Ti are the binary 2^10 ... 2^40
(a 16Mi-token batch is 2,048 sequences of 8,192). Letters are case-insensitive."""
TOKEN_SUFFIX_HELP = "K/M/B/T = 10^3/10^6/10^9/10^12, Ki/Mi/Gi = 2^10/2^20/2^30"
_TOKEN_COUNT = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kmbgtKMBGT][iI]?)?\s*")

ModelOption = Annotated[str, typer.Option(help="Catalogue name, model file or HF config.json.")]
ClusterOption = Annotated[str, typer.Option(help="Cluster preset (dgx-h100) or cluster file.")]
SeqLenOption = Annotated[int, typer.Option("--seq-len", min=1, help="Tokens per sequence.")]
NodesOption = Annotated[int | None, typer.Option(min=1, help="Whole nodes.")]
GpusOption = Annotated[int | None, typer.Option(min=1, help="Total GPUs (a partial node is fine).")]
GlobalBatchOption = Annotated[
    int | None,
    typer.Option(
        "--global-batch", min=1, help=f"Sequences per step (at most {L.MAX_GLOBAL_BATCH:,})."
    ),
]
GlobalBatchTokensOption = Annotated[
    str | None,
    typer.Option(
        "--global-batch-tokens",
        help=f"Tokens per step, a whole number of sequences: 2M, 16Mi ({TOKEN_SUFFIX_HELP}).",
    ),
]
PrecisionOption = Annotated[str, typer.Option(help="bf16 | fp16 | fp8 | fp32.")]
FrameworkOption = Annotated[
    str, typer.Option(help="megatron | deepspeed | torchtitan | pytorch: sets defaults.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON and nothing else.")]
MemplanOption = Annotated[
    bool,
    typer.Option(
        "--memplan",
        help="Also replay each stage through the caching-allocator simulation and the planned "
        "placement (autopar memplan; seconds per stage) and report the peaks; fits is then "
        "decided on the simulation where allocator snapshots validate it.",
    ),
]


def parse_tokens(text: str, *, option: str, whole: bool = False) -> float:
    """A token count with the suffixes of ``TOKEN_SUFFIXES``: '15T' -> 1.5e13, '2.5B' ->
    2.5e9, '16Mi' -> 16 x 2^20, '1e12' -> 1e12. ``whole``: it must be a whole number
    (returned as an int then)."""
    match = _TOKEN_COUNT.fullmatch(text)
    suffix = (match.group(2) or "") if match is not None else ""
    unit = TOKEN_SUFFIXES.get(suffix[:1].upper() + suffix[1:].lower())
    if match is None or unit is None:
        raise SpecError(
            f"{option}: '{text}' is not a number of tokens (e.g. 15T, 2.5B, 16Mi; "
            f"{TOKEN_SUFFIX_HELP})"
        )
    number = match.group(1)
    if "." not in number and "e" not in number.lower():
        count: float = int(number) * unit  # exact for integers of any size
    else:
        count = float(number) * unit
    if not math.isfinite(count):
        raise SpecError(f"{option}: '{text}' is not a finite number of tokens")
    if whole:
        if count != int(count):
            raise SpecError(f"{option}: '{text}' is {count:g} tokens, not a whole number")
        return int(count)
    return count


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
        else parse_tokens(global_batch_tokens, option="--global-batch-tokens", whole=True)
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
