"""Shared pydantic configuration for every spec: frozen, no unknown keys, validated defaults."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

from planner.errors import SpecError


class Spec(BaseModel):
    """Base of all specs: immutable data that rejects unknown fields and non-finite numbers."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False
    )


def describe_validation_error(error: ValidationError, *, what: str) -> str:
    """One readable line for a pydantic error: ``what: field.path: message; ...``."""
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(root)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "missing":
            message = "required field is missing"
        parts.append(f"{location}: {message}")
    return f"{what}: " + "; ".join(parts)


def spec_error(error: ValidationError, *, what: str) -> SpecError:
    """Convert a pydantic ``ValidationError`` into our one-line ``SpecError``."""
    return SpecError(describe_validation_error(error, what=what))
