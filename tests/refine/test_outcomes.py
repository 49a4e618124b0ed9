"""Every trial is on record with its status; returned plans fit and are legal."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from planner.emit import emit_files
from planner.refine import (
    MEMORY_CONSTRAINT,
    RefineProblem,
    Space,
    collect,
    create_study,
    evaluate,
    refine,
    run_trials,
)
from planner.specs.layout import layout_violations, resolve_data_parallel


def _params_with(space: Space, *, want: str) -> dict:
    """Seed 0's parameters with the micro-batch (and, where seed 0 is not interleaved, the
    virtual stages, with an even split) changed so the layout becomes ``want``."""
    params, choices = space.seed_params(0), space.describe()
    name = next(key for key in params if key.startswith("mbs."))
    vpp_name = next(key for key in params if key.startswith("vpp."))
    pp = vpp_name.removeprefix("vpp.pp")
    for vpp in (params[vpp_name], *sorted(choices[vpp_name], reverse=True)):
        split = {f"split.pp{pp}.vpp{vpp}": params.get(f"split.pp{pp}.vpp{vpp}", "even")}
        for mbs in sorted(choices[name], reverse=True):
            trial = {**params, name: mbs, vpp_name: vpp, **split}
            layout = space.assign(trial["base"], lambda c, _v, t=trial: t[c.name])
            if evaluate(space.problem, layout).status == want:
                return trial
    raise AssertionError(f"no micro-batch of seed 0 gives a layout that is {want}")


def test_infeasible_and_illegal_trials_are_counted(problem: RefineProblem, storage: str) -> None:
    study = create_study(problem, storage=storage, study_name="outcomes")
    space = Space(problem)
    over = _params_with(space, want="infeasible")
    illegal = _params_with(space, want="illegal")
    study.enqueue_trial(over)
    study.enqueue_trial(illegal)
    seeds = len(problem.seeds)
    run_trials(study, problem, trials=seeds + 2)
    result = collect(study, problem, storage=storage)
    by_number = {t.number: t for t in result.trials}
    over_trial, illegal_trial = by_number[seeds], by_number[seeds + 1]
    assert over_trial.status == "infeasible" and over_trial.state == "complete"
    assert "GiB over" in (over_trial.reason or "")
    assert illegal_trial.status == "illegal" and illegal_trial.state == "pruned"
    assert "multiple of pp" in (illegal_trial.reason or "")
    frozen = study.get_trials(deepcopy=False)
    assert frozen[seeds].constraints[MEMORY_CONSTRAINT] > 0
    assert frozen[seeds + 1].state == TrialState.PRUNED
    counts = result.counts
    assert counts.infeasible >= 1 and counts.illegal >= 1
    assert counts.total == len(frozen) == seeds + 2
    assert (
        counts.feasible + counts.infeasible + counts.illegal + counts.failed
        + counts.running + counts.waiting
    ) == counts.total  # fmt: skip
    assert all(plan.trial not in (seeds, seeds + 1) for plan in result.best)


def _check_legal_and_fits(plan, problem: RefineProblem) -> None:
    layout = plan.config.layout
    resolved = resolve_data_parallel(layout, num_gpus=problem.cluster.num_gpus)
    problems = layout_violations(
        model=problem.model, cluster=problem.cluster, workload=problem.workload, layout=resolved
    )
    assert problems == []
    assert plan.memory.fits
    assert plan.memory.peak_gib + problem.headroom_gib <= plan.memory.capacity_gib


def test_every_returned_plan_fits_is_legal_and_emits(problem: RefineProblem, storage: str):
    result = refine(problem, trials=25, storage=storage, study_name="best")
    assert len(result.best) == 1
    best = result.best[0]
    _check_legal_and_fits(best, problem)
    feasible = [t for t in result.trials if t.status == "feasible"]
    assert best.time.tokens_per_s == max(t.tokens_per_s for t in feasible)
    assert result.gain_s == pytest.approx(problem.seeds[0].step_time_s - best.time.step_time_s)
    files = emit_files(best.model_dump(mode="json"), format="megatron")
    assert "launch_megatron.sh" in files


def test_pareto_front_is_non_dominated(make_problem, storage: str) -> None:
    problem = make_problem(("throughput", "headroom"))
    result = refine(problem, trials=30, storage=storage, study_name="front")
    front = result.best
    assert front
    points = {p.trial: (p.time.tokens_per_s, p.memory.headroom_gib) for p in front}
    feasible = [(t.tokens_per_s, t.headroom_gib) for t in result.trials if t.status == "feasible"]
    for number, (tokens, headroom) in points.items():
        for other in feasible:
            dominates = other[0] >= tokens and other[1] >= headroom and other != (tokens, headroom)
            assert not dominates, f"trial {number} is dominated by {other}"
    # and nothing feasible outside the front is non-dominated (the front is complete)
    for t in result.trials:
        if t.status != "feasible" or (t.tokens_per_s, t.headroom_gib) in points.values():
            continue
        assert any(a >= t.tokens_per_s and b >= t.headroom_gib for a, b in points.values()), (
            f"trial {t.number} should be on the front"
        )
    for plan in front:
        _check_legal_and_fits(plan, problem)
    tokens = [p.time.tokens_per_s for p in front]
    assert tokens == sorted(tokens, reverse=True)
    assert len({p.config.model_dump_json() for p in front}) == len(front)


def test_constraint_name_is_recorded(problem: RefineProblem, storage: str) -> None:
    study = create_study(problem, storage=storage, study_name="constraint")
    run_trials(study, problem, trials=1)
    trial = study.get_trials(deepcopy=False)[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.constraints[MEMORY_CONSTRAINT] <= 0
