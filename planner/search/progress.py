"""Progress of a search, reported to a callback as it goes (``plan(progress=...)``).

A search runs in phases, for each cluster size it searches (one for ``throughput``):

* ``tabulate``: the memory of every candidate layout is costed; ``evaluated`` counts
  them up to ``total``, the candidate layouts of the sizes enumerated so far (it grows
  when the ``cost`` or ``min-gpus`` objectives move on to the next size);
* ``time``: the step time of the contenders that fit is simulated; ``timed`` counts them
  (the rest are ruled out by a bound, so there is no total to count up to);
* ``split``: the stage-partition solver refines the leading pipelines (its variants
  that were timed count in ``timed`` when it returns);
* ``solve``: CP-SAT chooses the top plans among the layouts that fit;
* ``done``: the plans are ready.

Counts never decrease, and the callback sees every phase change; within a phase it is
called every ``EVERY`` layouts, so it costs nothing next to the cost model (one call per
16 layouts, each of which takes 0.1-1 ms to cost).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

EVERY = 16
"""Layouts costed or timed between two calls within a phase."""

PHASES = ("tabulate", "time", "split", "solve", "done")


@dataclass(frozen=True)
class Progress:
    """Where a search stands (see the module docstring)."""

    phase: str
    evaluated: int
    total: int
    timed: int


ProgressCallback = Callable[[Progress], None]


class Tracker:
    """Counts a search's work and reports it to ``callback`` (None: counts only)."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.phase = PHASES[0]
        self.evaluated = 0
        self.total = 0
        self.timed = 0

    def candidates(self, count: int) -> None:
        """``count`` more candidate layouts to evaluate (a cluster size was enumerated)."""
        self.total += count
        self.enter("tabulate")

    def costed(self) -> None:
        """One layout's memory was costed."""
        self.evaluated += 1
        if self.evaluated % EVERY == 0:
            self.report()

    def timed_one(self) -> None:
        """One layout's step time was simulated."""
        self.timed += 1
        if self.timed % EVERY == 0:
            self.report()

    def add_timed(self, count: int) -> None:
        """``count`` layouts timed elsewhere (the split solver's variants)."""
        self.timed += count
        self.report()

    def enter(self, phase: str) -> None:
        """A new phase begins (reported at once)."""
        self.phase = phase
        self.report()

    def report(self) -> None:
        if self.callback is not None:
            self.callback(Progress(self.phase, self.evaluated, self.total, self.timed))
