"""The planner's search: candidate layouts, the cost model tabulated over them, CP-SAT.

``enumerate_layouts`` lists the legal layouts; ``search`` tabulates and ranks them (see
each module's docstring for the formulation): ``candidates`` (the legal space),
``tabulate`` (the cost model over it), ``partition`` (layer splits from the
stage-partition solver), ``objectives`` (throughput, cost, min-gpus), ``formulation``
(the factorised CP-SAT model), ``explain`` (labels and messages), ``driver``.
``results`` (``PlanResult``: the ranked ``PlanEntry`` records and ``SearchInfo``).
``planner.plan`` is the public entry.
"""

from planner.search.candidates import Enumeration, enumerate_layouts, enumerate_space
from planner.search.driver import Infeasible, PlanEntry, PlanResult, SearchInfo, search

__all__ = [
    "Enumeration",
    "Infeasible",
    "PlanEntry",
    "PlanResult",
    "SearchInfo",
    "enumerate_layouts",
    "enumerate_space",
    "search",
]
