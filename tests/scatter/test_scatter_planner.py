"""planner.scattering: lengths in, costs from autopar's model, every sequence placed once
within memory on exactly the cluster's GPUs, never slower than the best static degree."""

from __future__ import annotations

import json
import tomllib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import planner
from planner import load_cluster, load_model
from planner.errors import SpecError, UnknownNameError
from planner.scattering import (
    ScatterResult,
    list_distributions,
    load_distribution,
    read_lengths_file,
    sample_batches,
    sequence_cost,
)
from planner.scattering.lengths import cut, sample_lengths
from planner.scattering.profile import fit_alphas

MODEL = load_model("llama-3.1-8b")
CLUSTER = load_cluster("hgx-h200", gpus=16)


def test_shipped_distributions_cite_their_source() -> None:
    assert {"wikipedia-flexsp", "code-files", "uniform", "fixed"} <= set(list_distributions())
    wiki = load_distribution("wikipedia-flexsp")
    assert "ASPLOS 2025" in wiki.source and "Hetu-Galvatron" in wiki.source
    assert (50.0, 347) in wiki.percentiles and (99.9, 37353) in wiki.percentiles
    with pytest.raises(UnknownNameError, match="length-dist: unknown 'nope'; known:"):
        load_distribution("nope")


def test_wikipedia_samples_keep_the_published_percentiles() -> None:
    lengths = np.array(
        sample_lengths(
            load_distribution("wikipedia-flexsp"),
            20_000,
            max_seq_len=1 << 30,
            rng=np.random.default_rng(3),
        )
    )
    for percentile, tokens in ((25, 146), (50, 347), (90, 2112)):
        assert abs(np.percentile(lengths, percentile) / tokens - 1) < 0.08
    over_4k = lengths > 4096
    assert abs(over_4k.mean() - 0.0439) < 0.01


def test_code_distribution_is_the_committed_measurement() -> None:
    code = load_distribution("code-files")
    assert code.kind == "percentiles" and "benchmarks/code_lengths.py" in code.source
    root = Path(__file__).parents[2]
    provenance = json.loads((root / "benchmarks/data/code_lengths.json").read_text())
    raw = tomllib.loads((root / "planner/scattering/data/code-files.toml").read_text())
    assert code.percentiles == tuple((float(p), int(t)) for p, t in provenance["percentiles"])
    assert raw["repositories"] == [
        f"{repo['repository']}@{repo['commit']}" for repo in provenance["repositories"]
    ]
    assert provenance["document"].startswith("one source file")
    assert sum(c for _, c in provenance["histogram"]) == provenance["samples"]


def test_code_samples_keep_the_measured_percentiles() -> None:
    code = load_distribution("code-files")
    lengths = np.array(
        sample_lengths(code, 20_000, max_seq_len=1 << 30, rng=np.random.default_rng(5))
    )
    table = dict(code.percentiles)
    for percentile in (25.0, 50.0, 90.0, 99.0):
        assert abs(np.percentile(lengths, percentile) / table[percentile] - 1) < 0.08
    share_4k = next(p for p, t in code.percentiles if t == 4096) / 100
    assert abs((lengths <= 4096).mean() - share_4k) < 0.01


def test_sampling_is_seeded_and_batches_reach_the_tokens() -> None:
    first = sample_batches(
        "wikipedia-flexsp", batches=2, global_batch_tokens=50_000, max_seq_len=8192, seed=7
    )
    again = sample_batches(
        "wikipedia-flexsp", batches=2, global_batch_tokens=50_000, max_seq_len=8192, seed=7
    )
    assert first == again
    for batch in first:
        assert sum(batch) >= 50_000 and max(batch) <= 8192
    assert cut([10, 25], 10) == [10, 10, 10, 5]


def test_lengths_files_and_their_errors(tmp_path: Path) -> None:
    lines = tmp_path / "lengths.txt"
    lines.write_text("512\n\n4096\n")
    assert read_lengths_file(lines) == [[512, 4096]]
    batches = tmp_path / "batches.json"
    batches.write_text(json.dumps([[1, 2], [3]]))
    assert read_lengths_file(batches) == [[1, 2], [3]]
    cases = {
        "": "is empty",
        "12\nabc\n": "line 2 is not a number",
        "12\n0\n": "line 2 must be a positive number of tokens, got 0",
        "-5\n": "line 1 must be a positive number of tokens, got -5",
        "[[1, 2], []]": "batch 1 is empty",
        '[1, "x"]': "batch 0 item 1 is not a number",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(SpecError, match=message):
            read_lengths_file(bad)


def test_cost_comes_from_the_memory_and_time_models() -> None:
    cost = sequence_cost(model=MODEL, cluster=CLUSTER)
    assert 0 < cost.fixed_bytes < cost.capacity_bytes
    assert cost.bytes_per_token > 0 and cost.tokens_per_gpu > 1000
    assert cost.alpha1_s > 0 and cost.alpha2_s > 0
    assert cost.inside_node(8) and not cost.inside_node(16)
    one, _ = cost.time_s(8192, 1)
    eight, exchange = cost.time_s(8192, 8)
    assert eight < one and exchange in ("ulysses", "ring")
    # a group across nodes pays the NICs: more exchange time per GPU than inside a node
    inside = cost.time_s(8192, 8)[0] - (cost.alpha1_s * 8192**2 + cost.alpha2_s * 8192) / 8
    across = cost.time_s(8192, 16)[0] - (cost.alpha1_s * 8192**2 + cost.alpha2_s * 8192) / 16
    assert across > inside
    assert "analytical" in cost.time_source or "measured" in cost.time_source


def _check(result: ScatterResult, batches: list[list[int]]) -> None:
    capacity = result.cost.capacity_gib
    for batch, lengths in zip(result.batches, batches, strict=True):
        seen = Counter(i for m in batch.micro_batches for g in m.groups for i in g.sequences)
        assert seen == Counter(range(len(lengths)))
        for micro in batch.micro_batches:
            if batch.method == "scatter" or batch.method == "best_fit_decreasing":
                assert sum(g.size for g in micro.groups) == result.gpus
            for group in micro.groups:
                assert group.lengths == [lengths[i] for i in group.sequences]
                assert group.memory_per_gpu_gib <= capacity + 1e-9
        static = next(b for b in batch.baselines if b.name == "static")
        assert batch.step_time_s <= static.step_time_s + 1e-9
        assert static.speedup >= 1 - 1e-9


def test_scatter_places_every_sequence_once_within_memory() -> None:
    batches = [[300, 120, 9000, 70, 33_000, 2100, 800, 64, 5000, 1500, 260, 12_000] * 3]
    result = planner.scatter(model=MODEL, cluster=CLUSTER, batches=batches, time_limit_s=0.5)
    _check(result, batches)
    assert result.summary.step_time_s == pytest.approx(result.batches[0].step_time_s)
    assert set(result.summary.speedups) == {"static", "megatron_hybrid_cp", "best_fit_decreasing"}
    assert ScatterResult.model_validate_json(result.model_dump_json()) == result


def test_a_sequence_larger_than_the_cluster_is_refused() -> None:
    cost = sequence_cost(model=MODEL, cluster=CLUSTER)
    too_long = cost.tokens_per_gpu * 16 + 1
    with pytest.raises(SpecError, match=r"seq_lengths: batch 0 sequence 1 has .* tokens"):
        planner.scatter(model=MODEL, cluster=CLUSTER, batches=[[100, too_long]])
    with pytest.raises(SpecError, match="seq_lengths: batch 0 item 0 must be a positive"):
        planner.scatter(model=MODEL, cluster=CLUSTER, batches=[[0]])
    with pytest.raises(SpecError, match=r"gpus: .* powers of two"):
        planner.scatter(model=MODEL, cluster=load_cluster("hgx-h200", gpus=24), batches=[[8]])


def test_profile_fit_recovers_a_quadratic_and_reports_held_out_error() -> None:
    lengths = [512, 1024, 2048, 4096, 8192, 16384]
    seconds = [2e-12 * s * s + 3e-8 * s for s in lengths]
    alpha1, alpha2, error, fit, held = fit_alphas(lengths, seconds)
    assert alpha1 == pytest.approx(2e-12) and alpha2 == pytest.approx(3e-8)
    assert error < 1e-9 and fit == (512, 2048, 8192) and held == (1024, 4096, 16384)


def test_a_measured_attention_profile_replaces_the_analytical_quadratic(monkeypatch) -> None:
    from planner.scattering import cost as cost_module
    from planner.scattering.profile import AttentionFit

    monkeypatch.setattr(cost_module, "attention_fit", lambda gpu_id, model: None)
    sequence_cost.cache_clear()
    analytical = sequence_cost(model=MODEL, cluster=CLUSTER)
    fit = AttentionFit(
        q_heads=32, kv_heads=8, head_dim=128, alpha1_s=1e-13, alpha2_s=1e-9,
        heldout_error=0.01, fit_lengths=(512,), heldout_lengths=(1024,),
        api="varlen_attn", source="hardware_db/profiles/h200-sxm/test",
    )  # fmt: skip
    monkeypatch.setattr(cost_module, "attention_fit", lambda gpu_id, model: fit)
    sequence_cost.cache_clear()
    try:
        measured = sequence_cost(model=MODEL, cluster=CLUSTER)
    finally:
        sequence_cost.cache_clear()
    assert measured.alpha1_s == pytest.approx(MODEL.num_layers * 1e-13)
    assert measured.alpha2_s == pytest.approx(analytical.alpha2_s + MODEL.num_layers * 1e-9)
    assert "measured varlen attention (hardware_db/profiles/h200-sxm/test)" in measured.time_source
    assert analytical.time_source.startswith("analytical")


def test_the_shipped_h200_varlen_profile_is_read_and_fitted() -> None:
    from planner.scattering.profile import load_fits

    fits = {(f.q_heads, f.kv_heads, f.head_dim): f for f in load_fits("h200-sxm")}
    assert {(32, 8, 128), (64, 8, 128), (32, 32, 128)} <= set(fits)
    llama8b = fits[(32, 8, 128)]
    assert llama8b.api == "varlen_attn" and llama8b.alpha1_s > 0
    assert len(llama8b.heldout_lengths) >= 5 and 0 <= llama8b.heldout_error < 0.05
    cost = sequence_cost(model=MODEL, cluster=CLUSTER)
    assert cost.time_source.startswith("measured varlen attention (hardware_db/profiles/h200-sxm/")
    assert sequence_cost(
        model=MODEL, cluster=load_cluster("dgx-h100", gpus=8)
    ).time_source.startswith("analytical")
