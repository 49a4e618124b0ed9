"""Optuna refinement on the command line: ``plan --refine N`` and ``autopar refine-worker``.

``autopar plan ... --refine N [--refine-objectives throughput,headroom] [--study-name NAME]
[--storage URL]`` seeds a study with the solver's plans and runs N trials here (a step of
``planner.plan.plan``, asked for by the request's ``refine`` options);
``autopar refine-worker --study NAME [--trials N] [--storage URL]`` joins a stored study
from any machine that reaches the storage and runs N more (:func:`refine_worker_command`).
Both show a progress bar on stderr (trials, best so far) unless ``--json``, and end with
the study's whole result: every worker's trials counted by status, the best plan(s), and
the gain over the solver's best plan.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from planner.cli.output import console, print_json
from planner.refine.problem import RefineProblem, parse_objectives
from planner.refine.result import RefineResult
from planner.search.driver import layout_label
from planner.settings import database_url
from planner.specs.limits import MAX_REFINE_TRIALS

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

RefineOption = Annotated[
    int,
    typer.Option(
        "--refine",
        min=0,
        max=MAX_REFINE_TRIALS,
        help="Refine the plans with N Optuna trials of the full cost model.",
    ),
]


def _check_objectives(text: str) -> str:
    parse_objectives(text)  # SpecError before the search runs, not after
    return text


RefineObjectivesOption = Annotated[
    str,
    typer.Option(
        "--refine-objectives",
        help="throughput, or throughput,headroom for the Pareto front.",
        callback=_check_objectives,
    ),
]
StudyNameOption = Annotated[
    str | None,
    typer.Option("--study-name", help="Name of the study (reused: resumed). Default: new."),
]
StorageOption = Annotated[
    str | None,
    typer.Option("--storage", help="Optuna storage URL. Default: the service's database."),
]


class RefineProgress:
    """A rich progress bar fed by Optuna's trial callback: trials done, best so far.

    A context manager: the bar shows while it is entered (not at all for no trials)."""

    def __init__(self, trials: int, *, quiet: bool) -> None:
        self.best: FrozenTrial | None = None
        self.feasible = self.other = 0
        self.bar = Progress(
            TextColumn("refining"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[best]}"),
            TimeElapsedColumn(),
            console=Console(file=sys.stderr),
            disable=quiet or trials == 0,
        )
        self.task = self.bar.add_task("refining", total=trials, best="no feasible trial yet")

    def __enter__(self) -> RefineProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        from optuna.trial import TrialState  # loaded by the study that calls this

        if trial.state == TrialState.COMPLETE and trial.user_attrs.get("status") == "feasible":
            self.feasible += 1
            if self.best is None or _tokens(trial) > _tokens(self.best):
                self.best = trial
        else:
            self.other += 1
        best = "no feasible trial yet"
        if self.best is not None:
            numbers = self.best.user_attrs["prediction"]
            best = (
                f"best {numbers['tokens_per_s']:,.0f} tokens/s, "
                f"step {numbers['step_time_s']:.3f} s (trial {self.best.number})"
            )
        self.bar.update(
            self.task,
            advance=1,
            best=f"{best}; {self.feasible} feasible, {self.other} not",
        )


def _tokens(trial: FrozenTrial) -> float:
    return float(trial.user_attrs["prediction"]["tokens_per_s"])


def refine_worker_command(
    study: Annotated[str, typer.Option("--study", help="Name of the stored study to join.")],
    trials: Annotated[int, typer.Option("--trials", min=0, help="Trials to run here.")] = 10,
    storage: StorageOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON and nothing else.")] = False,
) -> None:
    """Join a stored refinement study and run trials of it in this process."""
    import optuna  # here, not at start-up: Optuna and its storage load slowly

    from planner.refine.result import collect
    from planner.refine.storage import masked
    from planner.refine.study import join_study

    url = storage or database_url()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    joined, problem = join_study(study, storage=url, seed=None)
    _run(joined, problem, trials=trials, quiet=as_json)
    result = collect(joined, problem, storage=masked(url))
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    render_refinement(result)


def _run(study: optuna.Study, problem: RefineProblem, *, trials: int, quiet: bool) -> None:
    from planner.refine.study import run_trials

    with RefineProgress(trials, quiet=quiet) as progress:
        run_trials(study, problem, trials=trials, callbacks=[progress])


def render_refinement(result: RefineResult) -> None:
    """The trial counts, the best plan(s) with what changed, the gain, how to join."""
    out = console()
    c = result.counts
    out.print(
        f"Refinement, study {result.study_name} ({result.storage}): {c.total} trials "
        f"({c.seeds} seeded with the solver's plans): {c.feasible} feasible, {c.infeasible} "
        f"over memory, {c.illegal} illegal, {c.failed} failed, {c.running} running, "
        f"{c.waiting} waiting."
    )
    solver = result.solver_best
    if not result.best:
        out.print("No feasible trial yet: nothing to compare with the solver's plan.")
    else:
        title = "Best refined plan" if len(result.objectives) == 1 else "Pareto front"
        table = Table(title=f"{title} ({', '.join(result.objectives)})")
        for column in ("trial", "layout", "changed from the solver's best", "step s"):
            table.add_column(column, justify="right" if column in ("trial", "step s") else "left")
        for column in ("tokens/s", "headroom GiB", "gain"):
            table.add_column(column, justify="right")
        for plan in result.best:
            changes = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in plan.changes.items())
            table.add_row(
                str(plan.trial)
                + (f" (seed {plan.seed_rank})" if plan.seed_rank is not None else ""),
                layout_label(plan.config),
                changes or "none (the solver's plan)",
                f"{plan.time.step_time_s:.3f}",
                f"{plan.time.tokens_per_s:,.0f}",
                f"{plan.memory.headroom_gib:.2f}",
                f"{plan.step_gain_pct:+.2f}%",
            )
        out.print(table)
        out.print(
            f"Gain over the solver's best plan (step {solver.step_time_s:.3f} s): "
            f"{result.gain_s:.3f} s ({result.gain_pct:.2f}%), predicted."
        )
    out.print(
        "Not refined (the cost model does not price them): "
        + ", ".join(k for k in result.not_refined if not k.startswith("tp,"))
        + f". More trials: autopar refine-worker --study {result.study_name}"
        + f" --storage '{result.storage}'"
    )
