"""The first trials of a study are the solver's plans, reproduced exactly."""

from __future__ import annotations

import optuna

from planner.refine import RefineProblem, Space, create_study, refine


def test_first_trials_are_the_solver_plans(problem: RefineProblem, storage: str, solver_result):
    result = refine(problem, trials=6, storage=storage, study_name="seeded")
    seeds = len(solver_result.plans)
    assert result.counts.seeds == seeds
    first = result.trials[:seeds]
    assert [t.number for t in first] == list(range(seeds))
    assert [t.seed_rank for t in first] == list(range(seeds))
    assert all(t.seed_rank is None for t in result.trials[seeds:])
    for trial, entry in zip(first, solver_result.plans, strict=True):
        assert trial.status == "feasible"
        assert trial.layout == {k: getattr(entry.config, k) for k in trial.layout}
        assert trial.step_time_s == entry.time.step_time_s
        assert trial.tokens_per_s == entry.time.tokens_per_s
    # the solver's best is a trial, so refinement can only match or beat it
    assert result.gain_s is not None and result.gain_s >= 0
    assert result.solver_best.step_time_s == solver_result.plans[0].time.step_time_s


def test_seed_params_rebuild_every_seed(problem: RefineProblem) -> None:
    space = Space(problem)
    for rank, seed in enumerate(problem.seeds):
        params = space.seed_params(rank)
        rebuilt = space.assign(params["base"], lambda choice, _v, p=params: p[choice.name])
        assert rebuilt == seed.layout


def test_seeds_wait_until_a_worker_takes_them(problem: RefineProblem, storage: str) -> None:
    study = create_study(problem, storage=storage, study_name="waiting")
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [optuna.trial.TrialState.WAITING] * len(problem.seeds)
    # resuming the same problem enqueues nothing more
    again = create_study(problem, storage=storage, study_name="waiting")
    assert len(again.get_trials(deepcopy=False)) == len(problem.seeds)
