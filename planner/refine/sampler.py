"""TPE interleaved with a local search around the best trial: the refinement's sampler.

TPE explores the whole space, but some knobs only ever cost time in the cost model when
switched off (the overlap switches), and TPE, sampling each group of knobs from its own
density, rarely combines the best value of every knob in a budget of tens of trials. So
before each trial that is not enqueued (the solver's plans are), with probability
``POLISH_SHARE`` the trial becomes a *neighbour* trial:

1. take the best feasible trial so far (one objective: the highest value; several: a
   random point of the Pareto front), over every worker's trials in the storage;
2. list its neighbours: the layouts that differ from it in exactly one parameter (every
   other choice of a categorical parameter, +-1 of an integer one, the ``NEAREST_SPLITS``
   nearest stage splits rather than all of them; a parameter that a
   change makes apply, such as the stage split after vpp changes, takes the base plan's
   value, or the first of its domain where that value is not in it), built with
   ``Space.assign``;
3. drop those already tried (any trial's ``layout`` user attribute, or a neighbour trial
   running in this process) and run a random one of the rest.

Otherwise, or when the best has no untried neighbour left, TPE proposes the trial. The
result is hill climbing by single-knob moves interleaved with TPE's exploration, and the
best plan a study returns is a local optimum once its neighbours are all tried. How each
trial was proposed is recorded in its ``proposed_by`` user attribute ("tpe", or
"neighbour of N: PARAM") by the objective, which asks :meth:`proposal`.
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from planner.refine.problem import RefineProblem
from planner.refine.result import pareto_front
from planner.refine.space import Choice, Space, decode_split

POLISH_SHARE = 0.5
"""Share of the sampler's trials spent on neighbours of the best while any are untried."""
NEAREST_SPLITS = 4
"""Stage splits that count as neighbours of a split: the nearest ones, not all of them."""


class NeighbourhoodSampler(BaseSampler):
    """``base`` (TPE) with neighbour trials of the best trial (see the module docstring)."""

    def __init__(self, problem: RefineProblem, base: BaseSampler, *, seed: int | None) -> None:
        self.space = Space(problem)
        self.objectives = len(problem.objectives)
        self.base = base
        self._rng = random.Random(seed)
        self._targets: dict[int, dict[str, Any]] = {}
        self._proposals: dict[int, str] = {}

    # -- Optuna's sampler protocol --------------------------------------------------------

    def reseed_rng(self) -> None:
        self._rng = random.Random()
        self.base.reseed_rng()

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)
        if "fixed_params" in trial.system_attrs:
            self._proposals[trial.number] = "enqueued"
            return
        self._proposals[trial.number] = "tpe"
        if self._rng.random() >= POLISH_SHARE:
            return
        chosen = self._neighbour(study.get_trials(deepcopy=False))
        if chosen is not None:
            label, params = chosen
            self._targets[trial.number] = params
            self._proposals[trial.number] = label

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if trial.number in self._targets:
            return {}
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if trial.number in self._targets:
            return {}
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        target = self._targets.get(trial.number)
        if target is not None and param_name in target:
            return target[param_name]
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._targets.pop(trial.number, None)
        self.base.after_trial(study, trial, state, values)

    def proposal(self, number: int) -> str:
        """How trial ``number`` (run in this process) was proposed."""
        return self._proposals.get(number, "tpe")

    # -- neighbours -----------------------------------------------------------------------

    def _neighbour(self, trials: list[FrozenTrial]) -> tuple[str, dict[str, Any]] | None:
        best = self._best(trials)
        if best is None:
            return None
        tried = {
            json.dumps(t.user_attrs["layout"], sort_keys=True)
            for t in trials
            if "layout" in t.user_attrs
        }
        tried.update(json.dumps(layout, sort_keys=True) for layout in self._pending_layouts())
        fresh = []
        for name, params, layout in neighbours(self.space, dict(best.params)):
            if json.dumps(layout, sort_keys=True) not in tried:
                fresh.append((f"neighbour of {best.number}: {name}", params))
        return self._rng.choice(fresh) if fresh else None

    def _best(self, trials: list[FrozenTrial]) -> FrozenTrial | None:
        feasible = [
            t
            for t in trials
            if t.state == TrialState.COMPLETE and t.user_attrs.get("status") == "feasible"
        ]
        if not feasible:
            return None
        if self.objectives == 1:
            return max(feasible, key=lambda t: (t.values[0], -t.number))
        front = pareto_front([tuple(t.values) for t in feasible])
        return feasible[self._rng.choice(front)]

    def _pending_layouts(self) -> list[dict[str, Any]]:
        layouts = []
        for params in self._targets.values():
            layouts.append(self.space.assign(params["base"], _replay(params)))
        return layouts


def neighbours(
    space: Space, params: dict[str, Any]
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(changed parameter, full parameters, layout) of each one-parameter change of
    ``params``; parameters a change brings in take the base plan's value."""
    applicable: list[Choice] = [Choice("base", tuple(range(len(space.bases))))]

    def record(choice: Choice, base_value: Any) -> Any:
        applicable.append(choice)
        return params.get(choice.name, base_value)

    space.assign(params["base"], record)
    found = []
    for choice in applicable:
        current = params.get(choice.name)
        if choice.low is not None:
            assert choice.high is not None
            options = [v for v in (current - 1, current + 1) if choice.low <= v <= choice.high]
        elif choice.name.startswith("split."):
            options = _nearest_splits(choice, current, space)
        else:
            options = [v for v in choice.choices if v != current]
        for value in options:
            changed = {**params, choice.name: value}
            target: dict[str, Any] = {"base": changed["base"]}

            def pick(c: Choice, base_value: Any, changed: dict = changed, target=target) -> Any:
                value = changed.get(c.name, base_value)
                if c.low is not None and c.high is not None:
                    value = min(max(value, c.low), c.high)
                elif value not in c.choices:
                    value = base_value if base_value in c.choices else c.choices[0]
                target[c.name] = value
                return value

            layout = space.assign(changed["base"], pick)
            found.append((choice.name, target, layout))
    return found


def _nearest_splits(choice: Choice, current: str, space: Space) -> list[str]:
    """The ``NEAREST_SPLITS`` other stage splits closest to ``current`` (L1 distance of the
    first and last stage layer counts; "even" counts as layers / pp on both)."""
    pp = int(choice.name.split(".")[1].removeprefix("pp"))
    even = space.problem.model.num_layers / pp

    def ends(split: str) -> tuple[float, float]:
        first, last = decode_split(split)
        return (even, even) if first is None or last is None else (first, last)

    here = ends(current)
    others = [c for c in choice.choices if c != current]
    others.sort(key=lambda c: (abs(ends(c)[0] - here[0]) + abs(ends(c)[1] - here[1]), c))
    return others[:NEAREST_SPLITS]


def _replay(params: dict[str, Any]) -> Any:
    def pick(choice: Choice, base_value: Any) -> Any:
        return params.get(choice.name, base_value)

    return pick


def make_sampler(problem: RefineProblem, *, seed: int | None) -> NeighbourhoodSampler:
    """TPE (``multivariate``, ``group``, ``constant_liar``) inside the neighbour sampler."""
    with warnings.catch_warnings():  # these TPE switches are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        tpe = optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True
        )
    return NeighbourhoodSampler(problem, tpe, seed=seed)
