"""The problem stored on a study, and the errors a user can make."""

from __future__ import annotations

import hashlib
import json

import pytest

from planner.cost.frameworks import Runtime
from planner.errors import SpecError, UnknownNameError
from planner.refine import RefineProblem, create_study, join_study, open_storage, parse_objectives
from planner.refine.objective import evaluate


def test_user_attrs_round_trip(problem: RefineProblem) -> None:
    attrs = problem.to_user_attrs()
    assert {"model", "cluster", "workload", "framework", "seeds"} <= set(attrs)
    rebuilt = RefineProblem.from_user_attrs(attrs, study="s")
    assert rebuilt == problem and rebuilt.fingerprint == attrs["fingerprint"]


def test_join_rebuilds_the_problem(problem: RefineProblem, storage: str) -> None:
    create_study(problem, storage=storage, study_name="joined")
    _, stored = join_study("joined", storage=storage)
    assert stored == problem


def test_name_reused_for_another_problem_is_refused(make_problem, storage: str) -> None:
    create_study(make_problem(), storage=storage, study_name="taken")
    other = make_problem(("throughput", "headroom"))
    with pytest.raises(SpecError, match="already exists for another problem"):
        create_study(other, storage=storage, study_name="taken")


def test_unknown_study_names_the_known_ones(problem: RefineProblem, storage: str) -> None:
    create_study(problem, storage=storage, study_name="known")
    with pytest.raises(UnknownNameError, match=r"no study 'missing'.*known"):
        join_study("missing", storage=storage)


def test_bad_storage_url() -> None:
    with pytest.raises(SpecError, match="--storage: 'not a url' is not a database URL"):
        open_storage("not a url")


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "give one or more"), ("speed", "unknown 'speed'"), ("throughput,throughput", "twice")],
)
def test_objectives_are_checked(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_objectives(text)


def test_cli_unknown_study_is_one_line(run_cli, storage: str) -> None:
    open_storage(storage)
    result = run_cli("refine-worker", "--study", "nope", "--storage", storage)
    assert result.exit_code == 2
    assert result.stderr.startswith("autopar: error: --study: no study 'nope'")
    assert result.stderr.count("\n") == 1


def test_run_time_settings_are_stored_priced_and_fingerprinted(problem: RefineProblem) -> None:
    """The search's run-time settings travel with the problem: each trial is priced with
    them, a study stores them, and a problem without them keeps its old fingerprint."""
    runtime = Runtime(expandable_segments=True, gradient_accumulation_fusion=False)
    settled = problem.model_copy(update={"runtime": runtime})
    old = problem.model_dump(mode="json", exclude={"framework_version", "runtime", "layer_spec"})
    text = json.dumps(old, sort_keys=True, separators=(",", ":"))
    assert problem.fingerprint == hashlib.sha256(text.encode()).hexdigest()
    assert settled.fingerprint != problem.fingerprint
    assert RefineProblem.from_user_attrs(settled.to_user_attrs(), study="s") == settled
    layout = dict(problem.seeds[0].layout)
    plain, priced = evaluate(problem, layout), evaluate(settled, layout)
    assert plain.estimate is not None and priced.estimate is not None
    assert priced.estimate.config.runtime == runtime
    assert priced.estimate.memory.peak_gib < plain.estimate.memory.peak_gib
