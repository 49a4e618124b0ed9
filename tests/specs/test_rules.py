"""Layout rules: every rule is named, sourced, and reported as a typed violation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from planner.catalog import load_cluster
from planner.specs.layout import ParallelConfig, layout_violations, resolve_data_parallel
from planner.specs.model import ModelSpec
from planner.specs.rules import LayoutRuleError, LayoutViolation, Rule
from planner.specs.workload import WorkloadSpec


@pytest.mark.parametrize("rule", list(Rule), ids=lambda rule: rule.name)
def test_every_rule_has_words_and_a_source_or_an_origin(rule: Rule) -> None:
    assert rule.text and str(rule) == rule.text
    if rule.source is None:
        assert rule.value.origin, f"{rule.name}: no upstream source and no origin"
    else:
        source = rule.source
        assert source.project and source.version and source.file and source.function
        assert str(source).startswith(source.project)


def test_rule_texts_are_distinct() -> None:
    assert len({rule.text for rule in Rule}) == len(Rule)


def test_layout_violations_are_typed(tiny_model: ModelSpec) -> None:
    layout = resolve_data_parallel(ParallelConfig(tp=4, pp=8), num_gpus=64)
    problems = layout_violations(
        model=tiny_model,
        cluster=load_cluster("dgx-h100", gpus=64),
        workload=WorkloadSpec(seq_len=256, global_batch=64),
        layout=layout,
    )
    assert all(isinstance(p, LayoutViolation) for p in problems)
    rules = {p.rule for p in problems}
    assert Rule.KV_HEADS_DIVISIBLE_BY_TP in rules and Rule.LAYERS_DIVISIBLE_BY_PP in rules
    assert all("rule" not in p.message for p in problems)


def test_own_rules_travel_typed_inside_the_validation_error() -> None:
    with pytest.raises(ValidationError) as caught:
        ParallelConfig(sequence_parallel=True, vpp=2)
    (item,) = caught.value.errors()
    cause = item["ctx"]["error"]
    assert isinstance(cause, LayoutRuleError)
    rules = [v.rule for v in cause.violations]
    assert rules == [Rule.SEQUENCE_PARALLEL_NEEDS_TP, Rule.VPP_NEEDS_PP]
    assert str(cause) == "sequence_parallel requires tp > 1; vpp > 1 requires pp > 1"
