"""Shared CP-SAT plumbing: solve options, our status enum, incumbent recording.

Every formulation in ``solvers`` builds a ``cp_model.CpModel``, then calls
:func:`solve_model`, which applies one ``SolveOptions`` the same way everywhere (time
limit, workers, seed, log), maps CP-SAT's status onto :class:`SolveStatus` (FEASIBLE at the
time limit is a result, not an error) and records each incumbent (objective, wall time)
so callers can report progress.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from ortools.sat.python import cp_model


class SolveStatus(enum.Enum):
    OPTIMAL = "optimal"
    FEASIBLE = "feasible_at_time_limit"
    INFEASIBLE = "infeasible"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class SolveOptions:
    """How long and how hard to search; the same meaning in every solver."""

    time_limit_s: float = 10.0
    workers: int = 2
    seed: int = 0
    log: bool = False
    export_path: str | None = None
    """Write the model (protobuf text) here before solving, for debugging."""
    relative_gap: float = 0.0
    """Stop once (objective - bound) / objective is at most this (0: prove optimality)."""


@dataclass(frozen=True)
class Incumbent:
    objective: float
    wall_s: float


@dataclass
class _Recorder(cp_model.CpSolverSolutionCallback):
    started: float = field(default_factory=time.perf_counter)
    incumbents: list[Incumbent] = field(default_factory=list)

    def __post_init__(self) -> None:
        cp_model.CpSolverSolutionCallback.__init__(self)

    def on_solution_callback(self) -> None:
        self.incumbents.append(Incumbent(self.objective_value, time.perf_counter() - self.started))


_STATUS = {
    cp_model.OPTIMAL: SolveStatus.OPTIMAL,
    cp_model.FEASIBLE: SolveStatus.FEASIBLE,
    cp_model.INFEASIBLE: SolveStatus.INFEASIBLE,
    cp_model.MODEL_INVALID: SolveStatus.UNKNOWN,
    cp_model.UNKNOWN: SolveStatus.UNKNOWN,
}


@dataclass(frozen=True)
class SolveRun:
    """What a solve produced: the solver to read values from, status, incumbents, time."""

    solver: cp_model.CpSolver
    status: SolveStatus
    incumbents: tuple[Incumbent, ...]
    wall_s: float

    @property
    def has_solution(self) -> bool:
        return self.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)


def solve_model(model: cp_model.CpModel, options: SolveOptions) -> SolveRun:
    """Solve ``model`` under ``options``; never raises for infeasible or timed-out models."""
    if options.export_path is not None:
        model.export_to_file(options.export_path)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = options.time_limit_s
    solver.parameters.num_workers = options.workers
    solver.parameters.random_seed = options.seed
    solver.parameters.log_search_progress = options.log
    if options.relative_gap > 0:
        solver.parameters.relative_gap_limit = options.relative_gap
    recorder = _Recorder()
    started = time.perf_counter()
    status = solver.solve(model, recorder)
    return SolveRun(
        solver=solver,
        status=_STATUS.get(status, SolveStatus.UNKNOWN),
        incumbents=tuple(recorder.incumbents),
        wall_s=time.perf_counter() - started,
    )
