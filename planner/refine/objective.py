"""Score one trial with the full cost model, and say plainly when it cannot count.

A trial's layout (``Space.assign``) goes through the same checks and the same
``estimate()`` as ``autopar estimate``. Three outcomes, each recorded on the trial as user
attributes (``status``, ``reason``, ``worker``, ``layout`` and ``prediction``) so that no trial
disappears from the result:

  feasible    the layout is legal and its fullest GPU keeps ``headroom_gib`` free: the
              trial completes with its objective values and constraint ``<= 0``
  infeasible  legal but over memory: the trial still completes with its predicted values,
              and ``trial.set_constraint("memory_excess_gib", excess)`` with excess > 0 tells
              the sampler (TPE and NSGA-II read constraints) and the result that it does not
              count; excess = peak + headroom - capacity, in GiB
  illegal     a framework rule is broken (``ParallelConfig`` validation or
              ``layout_violations``: e.g. the interleaved schedule's micro-batch count), or
              the framework's launch files cannot express the layout at the release planned
              for (``planner.frameworks.refusals``, as in the search and the emitters):
              nothing to predict, so the trial is pruned (state PRUNED) with the rules named

Estimates are cached per layout within a process: the sampler often proposes a layout
again, and ``estimate()`` of a 70B model on 64 GPUs takes about 0.1 s.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from planner.errors import SpecError
from planner.frameworks import get_profile
from planner.frameworks.refusals import LayoutQuery, layout_refusals
from planner.predict import Estimate, estimate
from planner.refine.problem import RefineProblem
from planner.refine.space import Choice, Space
from planner.specs.layout import ParallelConfig

if TYPE_CHECKING:
    import optuna

MEMORY_CONSTRAINT = "memory_excess_gib"


@dataclass(frozen=True)
class Outcome:
    """What the cost model says about one layout."""

    status: str
    """feasible | infeasible | illegal"""
    reason: str
    estimate: Estimate | None
    excess_gib: float | None


def framework_refusals(problem: RefineProblem, config: ParallelConfig) -> str:
    """What the framework's launch files cannot express of ``config`` (empty: nothing),
    the refusals the search and the emitters apply (``planner.frameworks.refusals``)."""
    profile = get_profile(problem.framework)
    query = LayoutQuery(
        model=problem.model,
        layout=config,
        seq_len=problem.workload.seq_len,
        precision=problem.workload.precision,
        release=profile.release(problem.framework_version),
    )
    return "; ".join(layout_refusals(profile, query))


def evaluate(problem: RefineProblem, layout: dict[str, Any]) -> Outcome:
    """Check ``layout`` (ParallelConfig fields) and predict it; see the module docstring."""
    try:
        config = ParallelConfig(**layout)
    except ValidationError as error:
        rules = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
        return Outcome("illegal", rules, None, None)
    refused = framework_refusals(problem, config)
    if refused:
        return Outcome("illegal", refused, None, None)
    try:
        result = estimate(
            model=problem.model,
            cluster=problem.cluster,
            workload=problem.workload,
            layout=config,
            framework=problem.framework,
            runtime=problem.runtime,
            layer_spec=problem.layer_spec,
            flash_attention=problem.layer_spec != "local",
        )
    except SpecError as error:
        return Outcome("illegal", str(error).removeprefix("layout: "), None, None)
    memory = result.memory
    excess = round(memory.peak_gib + problem.headroom_gib - memory.capacity_gib, 3)
    if excess > 0:
        reason = (
            f"needs {memory.peak_gib:.2f} GiB + {problem.headroom_gib:g} GiB headroom of "
            f"{memory.capacity_gib:.2f} GiB: {excess:.2f} GiB over"
        )
        return Outcome("infeasible", reason, result, excess)
    return Outcome("feasible", "", result, excess)


def objective_values(problem: RefineProblem, result: Estimate) -> list[float]:
    """The objectives of ``problem`` for one estimate, in order (all maximised)."""
    values = {"throughput": result.time.tokens_per_s, "headroom": result.memory.headroom_gib}
    return [values[name] for name in problem.objectives]


def prediction(result: Estimate) -> dict[str, float]:
    """The numbers a trial record keeps (user attribute ``prediction``)."""
    return {
        "step_time_s": result.time.step_time_s,
        "tokens_per_s": result.time.tokens_per_s,
        "peak_gib": result.memory.peak_gib,
        "headroom_gib": result.memory.headroom_gib,
    }


def worker_id() -> str:
    """``host:pid``: which process ran a trial."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Objective:
    """The callable ``study.optimize`` runs: suggest a layout, evaluate it, record it."""

    def __init__(
        self,
        problem: RefineProblem,
        space: Space | None = None,
        *,
        proposals: Callable[[int], str] | None = None,
    ) -> None:
        self.problem = problem
        self.space = space or Space(problem)
        self.proposals = proposals
        self.worker = worker_id()
        self._cache: dict[str, Outcome] = {}

    def __call__(self, trial: optuna.Trial) -> list[float] | float:
        base = trial.suggest_categorical("base", list(range(len(self.space.bases))))

        def pick(choice: Choice, _base_value: Any) -> Any:
            if choice.low is not None:
                assert choice.high is not None
                return trial.suggest_int(choice.name, choice.low, choice.high)
            return trial.suggest_categorical(choice.name, list(choice.choices))

        layout = self.space.assign(int(base), pick)
        key = json.dumps(layout, sort_keys=True)
        outcome = self._cache.get(key)
        if outcome is None:
            outcome = evaluate(self.problem, layout)
            self._cache[key] = outcome
        trial.set_user_attr("worker", self.worker)
        if self.proposals is not None:
            trial.set_user_attr("proposed_by", self.proposals(trial.number))
        trial.set_user_attr("status", outcome.status)
        trial.set_user_attr("layout", layout)
        if outcome.reason:
            trial.set_user_attr("reason", outcome.reason)
        if outcome.estimate is None:
            from optuna import TrialPruned  # with refinement only: Optuna loads slowly

            raise TrialPruned(f"illegal layout: {outcome.reason}")
        result = outcome.estimate
        trial.set_user_attr("prediction", prediction(result))
        assert outcome.excess_gib is not None
        trial.set_constraint(MEMORY_CONSTRAINT, outcome.excess_gib)
        values = objective_values(self.problem, result)
        return values[0] if len(values) == 1 else values
