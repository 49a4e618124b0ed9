"""Each account-for flag alone, as Megatron-LM counts it (``get_num_layers_to_build`` in
megatron/core/transformer/transformer_block.py): num_layers + 1 layer slots split evenly
over pp (x vpp) chunks; the embedding takes a slot of the very first chunk, the output
layer and loss one of the very last."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from planner.catalog import load_model
from planner.emit import emit_files
from planner.emit.base import EmitError
from planner.emit.megatron import parse_megatron_arguments
from planner.errors import SpecError
from planner.specs.layout import ParallelConfig, stage_layer_counts, virtual_stage_layer_counts

EMBEDDING = "account_for_embedding_in_pipeline_split"
LOSS = "account_for_loss_in_pipeline_split"
FLAGS = {
    EMBEDDING: "--account-for-embedding-in-pipeline-split",
    LOSS: "--account-for-loss-in-pipeline-split",
}
RUN = (
    "estimate", "--model", "llama-3.1-8b", "--cluster", "dgx-h100", "--gpus", "6",
    "--seq-len", "2048", "--global-batch", "12", "--pp", "3",
)  # fmt: skip


@pytest.mark.parametrize(
    ("flag", "pp", "vpp", "layers", "chunks"),
    [
        # 32 + 1 = 33 slots over 3 ranks: 11 each, one fewer on the embedding's / loss's end
        (EMBEDDING, 3, None, 32, [10, 11, 11]),
        (LOSS, 3, None, 32, [11, 11, 10]),
        # 31 + 1 = 32 slots over 4 x 2 chunks: 4 each, the end chunk (not rank) loses one
        (EMBEDDING, 4, 2, 31, [3, 4, 4, 4, 4, 4, 4, 4]),
        (LOSS, 4, 2, 31, [4, 4, 4, 4, 4, 4, 4, 3]),
        # one slot per chunk: the embedding's chunk builds no transformer layer at all
        (EMBEDDING, 4, 8, 31, [0] + [1] * 31),
        # pp 1: the one stage is first and last
        (LOSS, 1, None, 31, [31]),
    ],
)
def test_one_flag_alone_counts_one_slot(flag, pp, vpp, layers, chunks) -> None:
    model = load_model("llama-3.1-8b").model_copy(update={"num_layers": layers})
    layout = ParallelConfig(pp=pp, vpp=vpp, **{flag: True})
    assert virtual_stage_layer_counts(model, layout) == chunks
    ranks = stage_layer_counts(model, layout)
    assert ranks == [sum(chunks[rank::pp]) for rank in range(pp)]
    assert sum(ranks) == layers


@pytest.mark.parametrize("flag", [EMBEDDING, LOSS])
def test_one_flag_alone_is_refused_where_its_slots_do_not_divide(flag) -> None:
    model = load_model("llama-3.1-8b")  # 32 + 1 = 33 slots: not over 4 ranks, not 11 over vpp 2
    with pytest.raises(SpecError, match="33 layer slots must be divisible by pp \\(4\\)"):
        stage_layer_counts(model, ParallelConfig(pp=4, **{flag: True}))
    with pytest.raises(SpecError, match="per pipeline rank \\(11\\) must be divisible by vpp"):
        stage_layer_counts(model, ParallelConfig(pp=3, vpp=2, **{flag: True}))


@pytest.mark.parametrize("flag", [EMBEDDING, LOSS])
def test_one_flag_alone_estimates_emits_and_reads_back(run_cli, tmp_path: Path, flag) -> None:
    result = run_cli(*RUN, FLAGS[flag], "--json")
    assert result.exit_code == 0, result.stderr
    planned = json.loads(result.stdout)
    config = planned["config"]
    assert config[flag] is True
    assert config[LOSS if flag == EMBEDDING else EMBEDDING] is False
    path = tmp_path / "plan.json"
    path.write_text(result.stdout)
    again = run_cli("estimate", "--plan", str(path), "--json")
    assert again.exit_code == 0 and json.loads(again.stdout) == planned
    args = emit_files(planned, format="megatron")["megatron_args.txt"]
    assert FLAGS[flag] in args
    assert FLAGS[LOSS if flag == EMBEDDING else EMBEDDING] not in args
    tokens = [token for line in args.splitlines() for token in shlex.split(line)]
    _, layout = parse_megatron_arguments(tokens, num_gpus=6)
    assert getattr(layout, flag) is True


def test_other_frameworks_refuse_to_emit_the_split(run_cli) -> None:
    result = run_cli(*RUN, FLAGS[LOSS], "--framework", "deepspeed", "--json")
    assert result.exit_code == 0, result.stderr
    with pytest.raises(EmitError, match="Megatron-LM's split; deepspeed has no such flag"):
        emit_files(json.loads(result.stdout), format="deepspeed")
