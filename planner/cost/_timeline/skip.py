"""Skipping the steady middle of a schedule (exact: the walk's doubles).

The planner simulates schedules of up to thousands of micro-batches, so ``simulate`` does
not visit every op of the steady state. With the cycles and slots of ``cycles`` (the op
tables of cycle k + 1 are those of cycle k with every micro-batch shifted by the same
amount), slot s of cycle k ends at

    V_s(k) = max(V_prev(s)(k - a), fl(V_dep(s)(k - b) + transfer)) + d_s

with fixed input slots and cycle offsets a, b ≤ D. Within one binade [2^e, 2^(e+1)) every
double is a multiple of u = 2^(e-52), and adding a duration to such a value, when the sum
stays in the binade, adds exactly u·round(d/u) (unless d/u lies exactly halfway between
integers, where the rounding depends on the value; such binades are not skipped). There
the float simulation is an integer max-plus recursion. If every slot grew linearly over
the last D cycles, V_s(k) = V_s(q) + (k - q)·Δ_s, and each slot's larger input (the one
the max picked at cycle q) grows by that slot's Δ_s and stays the larger for n more
cycles (both inputs are linear, so when the smaller grows faster the crossing cycle is a
division), then by induction over the cycles and the op order every slot stays linear for
those n cycles. The simulation then jumps: it writes V_s(q) + (k - q)·Δ_s (exact: a
multiple of u inside the binade) for the last D + 1 cycles before the landing, as far as
every value stays in the binade, the inputs keep their order and the cycles stay in the
steady state of every rank, and resumes op by op (a new regime, the next binade, the
cool-down). Per-rank cycle offsets align the ranks in time so that a cycle's values fit in
one binade. The values are the doubles the op-by-op walk produces.
"""

from __future__ import annotations

import math
import operator

from planner.cost._timeline.cycles import Steady
from planner.cost._timeline.walk import Run

MAX_PERIOD = 4
"""The longest repeat (in cycles) of the slots' growth looked for before a jump."""
MAX_BACKOFF = 256
"""While the slots do not grow linearly, the test is repeated after 2, 4, ... up to this
many cycles (1F1B with transfers can drift for the whole step)."""


def skip_finish(run: Run, steady: Steady) -> list[float]:
    """Each rank's end: ``run`` walked to the end, jumping over cycles that grow linearly
    (module docstring)."""
    history: dict[int, list[float]] = {}
    q, next_check, backoff = -1, 0, 1
    window = 2 * MAX_PERIOD + steady.reach + 1  # cycles a test reads
    while q + 1 < steady.cycles:
        ahead = min(next_check - window, steady.cycles - 1)
        if ahead > q:  # no test before then: run those cycles in one go, unrecorded
            q = ahead
            run.advance([w + (q + 1) * steady.span for w in steady.start])
            history.clear()
            continue
        q += 1
        limits = [w + (q + 1) * steady.span for w in steady.start]
        run.advance(limits)
        if run.position != limits:  # an input beyond the cycle: not closed, no jump
            history.clear()
            continue
        offset = steady.shift * q
        history[q] = [run.end[i + offset] for i in steady.base]
        history.pop(q - 2 * MAX_PERIOD - steady.reach, None)
        if q < next_check:
            continue
        cycles, period = jump(steady, history, q, run)
        if not cycles:
            # period 0: the cheap binade test failed, ask again next cycle; else the slots
            # are not (yet) linear: ask less and less often (a regime can take long)
            if period:
                backoff = min(2 * backoff, MAX_BACKOFF)
            next_check = q + (backoff if period else 1)
            continue
        backoff = 1
        landing = q + cycles
        for k in range(landing - steady.reach + 1, landing + 1):
            # k = k0 + t·c with k0 one of the last c simulated cycles; t·Δ is a multiple
            # of the binade's unit below 2^e and the sum stays in the binade: both exact
            k0 = q - (q - k) % period
            t = (k - k0) // period
            values = [
                v + t * (v - w) for v, w in zip(history[k0], history[k0 - period], strict=True)
            ]
            offset = steady.shift * k
            for i, v in zip(steady.base, values, strict=True):
                run.end[i + offset] = v
            history[k] = values
        for k in [k for k in history if k <= landing - steady.reach]:
            del history[k]
        run.position = [w + (landing + 1) * steady.span for w in steady.start]
        run.free = [history[landing][i] for i in steady.last]
        q = landing
        next_check = q + 1
    return run.finish()


def jump(steady: Steady, history: dict[int, list[float]], q: int, run: Run) -> tuple[int, int]:
    """(cycles to skip, c) when every slot of the last c cycles grows linearly every c
    cycles and keeps its larger input; else (0, 0) if the values straddle a binade (or too
    few cycles are known), (0, 1) if they are not linear.

    Along a rank the end times only grow, so a window's smallest value is in its oldest
    cycle and its largest in cycle q (module docstring).
    """
    reach = steady.reach
    newest = history[q]
    exponent = math.frexp(max(newest))[1]
    for period in range(1, MAX_PERIOD + 1):
        low = q - 2 * period - reach + 1
        if low < steady.first or low not in history:
            return 0, 0
        smallest = min(history[low])
        if not smallest > 0.0 or math.frexp(smallest)[1] != exponent:
            return 0, 0  # a longer window would straddle too
        if _linear(history, q, period, reach):
            cycles = _stable_cycles(steady, history, q, period, run, exponent)
            if cycles:
                return cycles, period
    return 0, 1


def _linear(history: dict[int, list[float]], q: int, period: int, reach: int) -> bool:
    """V(j) - V(j - c) = V(j + c) - V(j) for j in [q - c - D + 1, q - c], slot by slot."""
    for j in range(q - period - reach + 1, q - period + 1):
        earlier = list(map(operator.sub, history[j], history[j - period]))
        if list(map(operator.sub, history[j + period], history[j])) != earlier:
            return False
    return True


def _stable_cycles(
    steady: Steady,
    history: dict[int, list[float]],
    q: int,
    period: int,
    run: Run,
    exponent: int,
) -> int:
    """How many cycles (a multiple of c) every slot of the last c cycles keeps its larger
    input and its values stay in the binade; 0 if none (module docstring)."""
    unit = math.ldexp(1.0, exponent - 53)
    if _has_tie(run.durations, run.lag, unit):
        return 0
    lag = run.lag
    horizon = (steady.landing_max - q) // period  # in periods of c cycles
    top = 2**53 - 1
    for k0 in range(q - period + 1, q + 1):
        now = history[k0]
        growth = {
            back: list(map(operator.sub, history[k0 - back], history[k0 - back - period]))
            for back in range(steady.reach + 1)
        }
        deltas = growth[0]
        for delta, (prev, prev_back, dep, dep_back) in zip(deltas, steady.links, strict=True):
            a, grow_a = history[k0 - prev_back][prev], growth[prev_back][prev]
            if dep < 0:
                if delta != grow_a:
                    return 0
                continue
            b, grow_b = history[k0 - dep_back][dep] + lag, growth[dep_back][dep]
            if a == b:
                if delta != max(grow_a, grow_b):
                    return 0
                continue
            if b > a:
                a, grow_a, b, grow_b = b, grow_b, a, grow_a
            if delta != grow_a:
                return 0
            if grow_b > grow_a:  # the smaller input catches up: a + n·Δa ≥ b + n·Δb
                crossing = round((a - b) / unit) // round((grow_b - grow_a) / unit)
                if crossing < horizon:
                    horizon = crossing
                    if horizon < 1:
                        return 0
        # every value stays ≤ 2^exponent - unit: in units, V + n·Δ ≤ 2^53 - 1
        for v, delta in zip(now, deltas, strict=True):
            if delta > 0.0:
                room = (top - round(v / unit)) // round(delta / unit)
                if room < horizon:
                    horizon = room
                    if horizon < 1:
                        return 0
    return horizon * period


def _has_tie(durations: tuple[float, ...], lag: float, unit: float) -> bool:
    """Whether adding some duration to a multiple of ``unit`` can round half-way."""
    for d in (*durations, lag):
        scaled = d / unit
        if scaled - math.floor(scaled) == 0.5:
            return True
    return False
