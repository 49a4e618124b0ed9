"""Shared fixtures of the emitter tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fixed_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Golden files must not change with the installed autopar version.

    Every emitter reads its version through ``planner.emit.base.autopar_version``, which
    asks the installed distribution's metadata; the stand-in answers for all of them.
    """
    monkeypatch.setattr("planner.emit.base.version", lambda distribution: "0.0.0+test")
