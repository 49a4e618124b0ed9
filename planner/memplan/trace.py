"""An allocation trace: the order in which a step asks for and returns memory.

The one input the allocator simulation, the live-bytes curve and the placement share,
whether it comes from autopar's model of a stage (``planner.memplan.lifetimes``) or from
a real allocator snapshot (``planner.memplan.snapshot``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class TraceEvent:
    """``alloc`` of ``size`` bytes under ``key`` on ``stream``, or ``free`` of ``key``."""

    op: Literal["alloc", "free"]
    key: int
    size: int = 0
    stream: int = 0
    label: str = ""


@dataclass(frozen=True)
class Lifetime:
    """One allocation over trace positions [start, end): ``end`` is its free, or the
    trace's length when it is never freed."""

    key: int
    size: int
    start: int
    end: int
    label: str = ""


def lifetimes(events: tuple[TraceEvent, ...]) -> tuple[Lifetime, ...]:
    """Every allocation with its lifetime, in order of allocation."""
    open_: dict[int, tuple[int, int, str]] = {}
    done: list[Lifetime] = []
    for position, event in enumerate(events):
        if event.op == "alloc":
            open_[event.key] = (position, event.size, event.label)
        elif event.key in open_:
            start, size, label = open_.pop(event.key)
            done.append(Lifetime(event.key, size, start, position, label))
    done.extend(
        Lifetime(key, size, start, len(events), label)
        for key, (start, size, label) in open_.items()
    )
    return tuple(sorted(done, key=lambda t: t.start))


def live_curve(events: tuple[TraceEvent, ...], *, rounding: int = 1) -> np.ndarray:
    """Bytes alive after each event (sizes rounded up to ``rounding``)."""
    sizes: dict[int, int] = {}
    curve = np.zeros(len(events), dtype=np.int64)
    live = 0
    for position, event in enumerate(events):
        if event.op == "alloc":
            size = -(-event.size // rounding) * rounding
            sizes[event.key] = size
            live += size
        else:
            live -= sizes.pop(event.key, 0)
        curve[position] = live
    return curve
