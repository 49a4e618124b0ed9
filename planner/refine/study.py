"""Create, join and run refinement studies in Optuna storage.

``create_study`` stores the problem on a new study (``RefineProblem.to_user_attrs``) and
enqueues the solver's plans, best first, as its first trials (``study.enqueue_trial``, each
with its rank in the user attribute ``seed_rank``), so the first trials any worker runs
are exactly the solver's plans and every later trial is measured against them. Reusing a
name resumes the study if it holds the same problem (same fingerprint) and is refused
otherwise. ``join_study`` opens a study by name alone and rebuilds its problem from the
stored attributes: what ``autopar refine-worker --study NAME`` does on any machine that
reaches the storage. ``run_trials`` runs trials in this process; the storage hands each
waiting (enqueued) trial to exactly one worker, and every worker's trials get distinct
numbers.

Sampler (``planner.refine.sampler``): Optuna's TPE, for one objective or several (MOTPE),
``multivariate`` and ``group`` so the conditional knobs (recompute layers only with full
recompute, ...) are modelled per group, ``constant_liar`` so workers running at the same
time do not all propose the same layout, reading each trial's memory constraint
(``trial.set_constraint``); interleaved with single-knob moves from the best trial. The
seed makes one worker's proposals reproducible; each worker should use its own (``None``:
random).
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable, Sequence

import optuna
from optuna.trial import FrozenTrial

from planner.errors import SpecError, UnknownNameError
from planner.refine.objective import Objective
from planner.refine.problem import RefineProblem
from planner.refine.sampler import NeighbourhoodSampler, make_sampler
from planner.refine.space import Space
from planner.refine.storage import masked, open_storage

Callback = Callable[[optuna.Study, FrozenTrial], None]


def default_study_name(problem: RefineProblem) -> str:
    """'llama-3.1-70b-64xh100-sxm-20250101-120000-1a2b': model, GPUs, UTC time, random."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    cluster = problem.cluster
    return (
        f"{problem.model.name}-{cluster.num_gpus}x{cluster.gpu.id}-{stamp}-{secrets.token_hex(2)}"
    )


def create_study(
    problem: RefineProblem,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int | None = 0,
) -> optuna.Study:
    """A study for ``problem`` seeded with its solver plans; resumes a same-problem study."""
    backend = open_storage(storage)
    name = study_name or default_study_name(problem)
    if name in optuna.get_all_study_names(backend):
        study = optuna.load_study(
            study_name=name, storage=backend, sampler=make_sampler(problem, seed=seed)
        )
        stored = study.user_attrs.get("fingerprint")
        if stored != problem.fingerprint:
            raise SpecError(
                f"--study-name: study '{name}' already exists for another problem (model "
                f"{study.user_attrs.get('model', {}).get('name', '?')}, fingerprint "
                f"{str(stored)[:12]}); choose another name"
            )
        return study
    study = optuna.create_study(
        storage=backend,
        study_name=name,
        directions=problem.directions,
        sampler=make_sampler(problem, seed=seed),
    )
    for key, value in problem.to_user_attrs().items():
        study.set_user_attr(key, value)
    space = Space(problem)
    for rank in range(len(problem.seeds)):
        study.enqueue_trial(space.seed_params(rank), user_attrs={"seed_rank": rank})
    return study


def join_study(
    study_name: str, *, storage: str | None = None, seed: int | None = None
) -> tuple[optuna.Study, RefineProblem]:
    """The stored study ``study_name`` and the problem rebuilt from its attributes."""
    backend = open_storage(storage)
    names = optuna.get_all_study_names(backend)
    if study_name not in names:
        known = ", ".join(sorted(names)[:10]) or "none"
        raise UnknownNameError(
            f"--study: no study '{study_name}' in {masked(backend.url)}; studies there: {known}"
        )
    study = optuna.load_study(study_name=study_name, storage=backend)
    problem = RefineProblem.from_user_attrs(study.user_attrs, study=study_name)
    study.sampler = make_sampler(problem, seed=seed)
    return study, problem


def run_trials(
    study: optuna.Study,
    problem: RefineProblem,
    *,
    trials: int,
    callbacks: Sequence[Callback] = (),
) -> None:
    """Run ``trials`` trials of ``study`` in this process (waiting seeds first)."""
    if trials < 0:
        raise SpecError(f"--trials: {trials} must not be negative")
    if trials == 0:
        return
    sampler = study.sampler
    proposals = sampler.proposal if isinstance(sampler, NeighbourhoodSampler) else None
    objective = Objective(problem, proposals=proposals)
    study.optimize(objective, n_trials=trials, callbacks=list(callbacks), catch=())
