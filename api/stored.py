"""A job's stored result, read back as its result type.

A result an older autopar wrote in another shape is reported (409 problem as the job's
error), not served: its inputs hash includes the version, so resubmitting solves again.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from api.problems import ApiProblem, Problem
from api.store import JobRow

ResultT = TypeVar("ResultT", bound=BaseModel)


def stored_result(row: JobRow, result_type: type[ResultT]) -> tuple[ResultT | None, Problem | None]:
    """(the stored result or None, the job's error or the stale-shape problem)."""
    error = Problem.model_validate(row.error) if row.error is not None else None
    if row.result is None:
        return None, error
    try:
        return result_type.model_validate(row.result), error
    except ValidationError:
        version = row.inputs.get("autopar", "another version")
        stale = ApiProblem(
            409,
            "conflict",
            f"the stored result was written by autopar {version} in a shape this version "
            "does not read; submit the request again",
        )
        return None, stale.problem()
