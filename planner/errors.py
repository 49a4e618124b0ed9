"""The one exception hierarchy of autopar.

The CLI turns every ``AutoparError`` into a single line on stderr with exit code 2; the
REST service (a later layer) maps each subclass to an HTTP status. Anything that is not
an ``AutoparError`` is a bug in autopar, not a user's mistake.
"""

from __future__ import annotations


class AutoparError(Exception):
    """Base class for every error a user can cause and act on."""


class SpecError(AutoparError, ValueError):
    """An input (model, cluster, workload or layout) breaks a rule; the message names the field."""


class UnknownNameError(AutoparError, KeyError):
    """A catalogue name (model, GPU, interconnect, cluster preset) that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ImportFormatError(SpecError):
    """A HuggingFace ``config.json`` that cannot be imported (unsupported type, missing field)."""


class Infeasible(SpecError):
    """No layout fits: the message says which constraint binds and what would change it."""


class TimeLimitReached(AutoparError):
    """The time limit passed before the search found any layout that fits: nothing to return
    yet, and no proof that nothing fits. The message says how far it got."""


class OutputError(AutoparError):
    """A file or directory the user asked for cannot be written (the message says why)."""
