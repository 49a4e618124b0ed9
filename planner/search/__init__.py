"""The planner's search: candidate layouts, the cost model tabulated over them, CP-SAT.

``enumerate_layouts`` lists the legal layouts; ``search`` evaluates and ranks them (see
each module's docstring for the formulation). ``planner.plan`` wraps ``search`` in the
public, pydantic result.
"""

from planner.search.candidates import Enumeration, enumerate_layouts, enumerate_space
from planner.search.driver import Infeasible, Plan, SearchResult, search

__all__ = [
    "Enumeration",
    "Infeasible",
    "Plan",
    "SearchResult",
    "enumerate_layouts",
    "enumerate_space",
    "search",
]
