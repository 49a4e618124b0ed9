"""Megatron-LM's account-for split (``--account-for-embedding-in-pipeline-split``,
``--account-for-loss-in-pipeline-split``) as the planner's uneven split.

Megatron-LM refuses first/last stage sizes together with the account-for flags
(``validate_args``), so pinning the flags must make them the split, and where the layers
do not divide by pp the account-for split is searched beside the first/last sizes.
Llama 3.1 405B on 16 stages is the case Meta and NVIDIA run: 126 layers + embedding +
output layer = 128 slots = 16 x 8.
"""

from __future__ import annotations

import pytest

from planner.catalog import load_cluster, load_model
from planner.emit import emit_files
from planner.frameworks import get_profile
from planner.plan import PlanRequest, plan
from planner.predict import estimate
from planner.search.candidates import (
    ACCOUNT_FOR_FLAGS,
    accounted_splits,
    enumerate_layouts,
    stage_splits,
)
from planner.specs import WorkloadSpec
from planner.specs.layout import stage_layer_counts

EMBEDDING, LOSS = ACCOUNT_FOR_FLAGS
BOTH = {EMBEDDING: True, LOSS: True}
MEGATRON = get_profile("megatron")


def _405b_request(fixed: dict[str, object]) -> PlanRequest:
    return PlanRequest(
        model=load_model("llama-3.1-405b"),
        cluster=load_cluster("dgx-h100", gpus=16384),
        workload=WorkloadSpec(seq_len=8192, global_batch=2048),
        fixed={"pp": 16, "tp": 8, **fixed},
        top_k=3,
    )


def test_accounted_splits_are_the_ones_whose_slots_divide() -> None:
    assert accounted_splits(126, 16) == [BOTH]
    assert accounted_splits(126, 8) == [BOTH]
    assert accounted_splits(61, 16) == []  # 61, 62, 63 slots: none divides by 16
    assert accounted_splits(3, 2) == [
        {EMBEDDING: True, LOSS: False},
        {EMBEDDING: False, LOSS: True},
    ]
    assert accounted_splits(2, 3) == []  # 3 slots on 3 stages: a stage with no layer


def test_stage_splits_keep_even_splits_and_honour_pins() -> None:
    assert stage_splits(80, 16, profile=MEGATRON, fixed={}) == [{}]
    uneven = stage_splits(126, 16, profile=MEGATRON, fixed={})
    assert uneven == [{"first_stage_layers": 7, "last_stage_layers": 7}, BOTH]
    # pinned flags are the split: no first/last sizes beside them
    assert stage_splits(126, 16, profile=MEGATRON, fixed=BOTH) == [{}]
    # flags pinned off, or stage sizes pinned: no account-for alternative
    off = {EMBEDDING: False, LOSS: False}
    assert stage_splits(126, 16, profile=MEGATRON, fixed=off) == [uneven[0]]
    assert stage_splits(126, 16, profile=MEGATRON, fixed={"first_stage_layers": 6}) == [uneven[0]]
    # the flags are Megatron-LM's: other frameworks keep the first/last sizes only
    assert stage_splits(126, 16, profile=get_profile("pytorch"), fixed={}) == [uneven[0]]


def test_candidates_take_the_accounted_split_as_the_uneven_one() -> None:
    request = _405b_request({"cp": 4, "mbs": 1, "recompute": "none"})
    layouts = enumerate_layouts(
        request.model, request.cluster, request.workload, fixed=request.fixed
    )
    accounted = [layout for layout in layouts if layout.account_for_loss_in_pipeline_split]
    ends = [layout for layout in layouts if layout.first_stage_layers is not None]
    assert accounted and ends and len(accounted) + len(ends) == len(layouts)
    # 8 slots per rank: interleaving by 2 and 4 divides them, 3 does not
    assert {layout.vpp for layout in accounted} == {None, 2, 4}
    for layout in accounted:
        assert layout.account_for_embedding_in_pipeline_split
        assert layout.last_stage_layers is None
        assert stage_layer_counts(request.model, layout) == [7, *[8] * 14, 7]


@pytest.fixture(scope="module")
def pinned_405b():
    request = _405b_request(BOTH)
    return request, plan(request)


def test_pinning_both_flags_on_405b_pp16_plans_the_accounted_split(pinned_405b) -> None:
    _, result = pinned_405b
    assert result.plans
    for entry in result.plans:
        config = entry.config
        assert config.account_for_embedding_in_pipeline_split
        assert config.account_for_loss_in_pipeline_split
        assert config.first_stage_layers is None and config.last_stage_layers is None


def test_the_pinned_plan_is_emitted_for_megatron(pinned_405b) -> None:
    _, result = pinned_405b
    best = result.model_dump(mode="json")["plans"][0]
    script = emit_files(best, format="megatron")["launch_megatron.sh"]
    assert "--account-for-embedding-in-pipeline-split" in script
    assert "--account-for-loss-in-pipeline-split" in script
    assert "--decoder-first-pipeline-num-layers" not in script
    assert "--decoder-last-pipeline-num-layers" not in script


def test_estimate_of_the_pinned_layout_equals_the_plan(pinned_405b) -> None:
    request, result = pinned_405b
    for entry in result.plans:
        again = estimate(
            model=request.model,
            cluster=request.cluster,
            workload=request.workload,
            layout=entry.config.layout,
        )
        assert again.model_dump() == {
            k: v
            for k, v in entry.model_dump().items()
            if k not in ("explanation", "uncertainty")  # the plan's words and band
        }
