"""OR-Tools formulations of autopar's optimisation problems.

Each module is a pure function from a frozen problem to a frozen solution, documented in
its docstring (data, variables, constraints, objective) and checked in tests against a
brute-force reference (``solvers.reference``, ``solvers.reference_degrees``,
``solvers.reference_scatter``, ``solvers.reference_experts``). Nothing here imports
``planner``: the planner builds the problems.
"""

from solvers._cpsat import Incumbent, SolveOptions, SolveStatus
from solvers.degrees import (
    AllowedTable,
    Axis,
    CostFactor,
    DegreesProblem,
    DegreesSolution,
    ProductConstraint,
)
from solvers.degrees import solve as solve_degrees
from solvers.expert_placement import ExpertPlacementSolution
from solvers.expert_placement import solve as solve_expert_placement
from solvers.expert_problem import Affinity, ExpertPlacementProblem
from solvers.memory_placement import PlacementProblem, PlacementSolution, Tensor
from solvers.memory_placement import solve as solve_memory_placement
from solvers.recompute_offload import (
    CHOICES,
    ActivationGroup,
    Choice,
    RecomputeOffloadProblem,
    RecomputeOffloadSolution,
)
from solvers.recompute_offload import solve as solve_recompute_offload
from solvers.scatter import ScatterProblem, ScatterSolution, ScatterTable
from solvers.scatter import solve as solve_scatter
from solvers.stage_partition import (
    LayerKind,
    LayerRun,
    StagePartitionProblem,
    StagePartitionSolution,
)
from solvers.stage_partition import solve as solve_stage_partition

__all__ = [
    "CHOICES",
    "ActivationGroup",
    "Affinity",
    "AllowedTable",
    "Axis",
    "Choice",
    "CostFactor",
    "DegreesProblem",
    "DegreesSolution",
    "ExpertPlacementProblem",
    "ExpertPlacementSolution",
    "Incumbent",
    "LayerKind",
    "LayerRun",
    "PlacementProblem",
    "PlacementSolution",
    "ProductConstraint",
    "RecomputeOffloadProblem",
    "RecomputeOffloadSolution",
    "ScatterProblem",
    "ScatterSolution",
    "ScatterTable",
    "SolveOptions",
    "SolveStatus",
    "StagePartitionProblem",
    "StagePartitionSolution",
    "Tensor",
    "solve_degrees",
    "solve_expert_placement",
    "solve_memory_placement",
    "solve_recompute_offload",
    "solve_scatter",
    "solve_stage_partition",
]
