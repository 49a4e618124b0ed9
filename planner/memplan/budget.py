"""Which layers' activations to recompute or offload to fit a memory budget, and the time
it adds: the stage trace turned into a ``solvers.recompute_offload`` problem.

Groups: each layer's saved activations of each micro-batch, less the layer's input (the
residual stream a checkpointed layer keeps, so it stays in the base memory). Every
micro-batch's instance of a layer is linked to one choice, as frameworks set it per layer.
A group is produced at its forward and read at its backward (the trace positions of
``planner.memplan.lifetimes``). Times come from autopar's rates (``planner.predict
.time_rates``): a recomputed layer costs its forward again; each trace position where a
layer's forward or backward runs carries that compute time, behind which transfers hide.
Transfers run at the pinned-copy bandwidth of the host profile (the slower of the two
directions; ``hardware_db/profiles/<gpu>/*host*``, else another GPU's host profile, named
in the result). Memory in MiB, time in microseconds; the added time of the micro-batches
in the trace is scaled to all m micro-batches of the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import hardware_db
from planner.cost.profile_rates import find_profile
from planner.cost.stage_work import stage_times
from planner.memplan.lifetimes import StageTrace
from planner.memplan.trace import live_curve
from planner.predict import Prepared, time_rates
from solvers import (
    CHOICES,
    ActivationGroup,
    Choice,
    RecomputeOffloadProblem,
    SolveOptions,
    SolveStatus,
    solve_recompute_offload,
)

MIB = 2**20
WORKERS = 8
"""CP-SAT workers for the choice: with 8 its portfolio includes the LP-based workers that
prove this model's bound (a 70B stage under 60-80 GiB: optimal in 0.1-0.2 s on the 2-core
machine), where 1 or 2 workers found the same choice at once but left a 4% gap, or no
bound at all for a zero-cost choice, after 10 s."""


@dataclass(frozen=True)
class HostLink:
    bytes_per_s: float
    source: str


@dataclass(frozen=True)
class BudgetChoice:
    status: str
    added_s: float | None
    peak_bytes: float | None
    recompute_layers: tuple[int, ...]
    offload_layers: tuple[int, ...]
    binding: str | None
    host_link: str
    solve_s: float
    gap: float = 0.0
    """(added time - its proven lower bound) / added time."""
    problem: RecomputeOffloadProblem | None = field(default=None, repr=False, compare=False)
    """The solved problem, to price other choices the same way (:meth:`evaluate`)."""
    group_layers: tuple[int, ...] = ()
    """The model layer of each of ``problem``'s groups."""
    scale: float = 1.0
    """All micro-batches of the step over those in the trace."""

    def evaluate(self, choice_of: Callable[[int], Choice]) -> tuple[float, float] | None:
        """(peak bytes, added seconds per step) of the stage when layer k gets
        ``choice_of(k)``, priced like the solver's own choice (``problem.memory`` and
        ``problem.added_us``, in O(groups + events)); None where a group cannot take its
        choice (offload without a host profile) or nothing was solved."""
        if self.problem is None:
            return None
        choices = [choice_of(layer) for layer in self.group_layers]
        groups = self.problem.groups
        if not all(g.allows(c) for g, c in zip(groups, choices, strict=True)):
            return None
        return self._peak_mib(choices) * MIB, self._added_us(choices) * self.scale / 1e6

    def _peak_mib(self, choices: list[Choice]) -> int:
        """``max(problem.memory(choices))`` through a difference array over the events."""
        assert self.problem is not None
        base = np.array(self.problem.base, dtype=np.int64)
        diff = np.zeros(len(base) + 1, dtype=np.int64)
        for g, choice in zip(self.problem.groups, choices, strict=True):
            p, u, size = g.produced, g.used, g.size
            base[p] += size
            base[u] += size
            if choice == "keep":
                diff[p + 1] += size
                diff[u] -= size
            elif choice == "offload":
                for event in {p + 1, u - 1} - {p, u}:
                    base[event] += size
        return int((base + np.cumsum(diff)[:-1]).max(initial=0))

    def _added_us(self, choices: list[Choice]) -> int:
        """``problem.added_us(choices)``, its window sums from prefix sums."""
        assert self.problem is not None
        prefix = np.concatenate(([0], np.cumsum(self.problem.compute_us, dtype=np.int64)))
        total, link = 0, 0
        for group, choice in zip(self.problem.groups, choices, strict=True):
            if choice == "recompute":
                total += group.recompute_us or 0
            elif choice == "offload":
                window = int(prefix[group.used] - prefix[group.produced + 1])
                transfer = group.transfer_us or 0
                exposed = max(0, 2 * transfer - window)
                total += exposed
                link += 2 * transfer - exposed
        return total + max(0, link - int(prefix[-1]))


def host_link(gpu_id: str) -> HostLink | None:
    """The pinned-copy bandwidth of ``gpu_id``'s host profile, else another GPU's."""
    for candidate in (gpu_id, *hardware_db.list_gpus()):
        profile = find_profile(candidate)
        if profile is not None and profile.has_host():
            host = profile.host()
            rate = min(host.d2h_bytes_per_s, host.h2d_bytes_per_s)
            where = "" if candidate == gpu_id else f" (borrowed from {candidate})"
            return HostLink(
                rate, f"pinned copies {rate / 1e9:.1f} GB/s, {candidate} host profile{where}"
            )
    return None


def choose(
    prepared: Prepared, trace: StageTrace, *, budget_bytes: float, time_limit_s: float
) -> BudgetChoice:
    """The cheapest keep/recompute/offload choice that fits ``budget_bytes``."""
    layout = prepared.layout
    plain = layout.model_copy(
        update={"recompute": "none", "recompute_method": None, "recompute_num_layers": None}
    )
    rates = time_rates(
        cluster=prepared.cluster, workload=prepared.workload, framework=prepared.framework
    )
    link = host_link(prepared.cluster.gpu.id)

    def layer_times(layer: int) -> tuple[float, float]:
        times = stage_times(
            prepared.model, [layer], first=False, last=False, layout=plain,
            seq_len=prepared.workload.seq_len, impl=prepared.impl, rates=rates,
        )  # fmt: skip
        return times.forward_s, times.backward_s

    tokens = layout.mbs * prepared.workload.seq_len / layout.cp
    sp_divisor = layout.tp if layout.sequence_parallel else 1
    graph = prepared.ctx.graph
    positions = len(trace.events)
    compute = [0] * positions
    layer_at = {(r.virtual, r.node): r.layer for r in trace.saved if r.layer is not None}
    for table, index in ((trace.forward_at, 0), (trace.backward_at, 1)):
        for position, where in table.items():
            if where in layer_at:
                compute[position] = int(layer_times(layer_at[where])[index] * 1e6)
    live = live_curve(trace.events)
    groups, linked_by, removed = [], {}, [0.0] * (positions + 1)
    for record in trace.saved:
        if record.layer is None:
            continue
        kept = tokens * graph.layers[record.layer].input_bytes_per_token / sp_divisor
        size = record.size - kept
        if size < MIB or record.free_at - record.alloc_at < 2:
            continue
        removed[record.alloc_at] += size
        removed[record.free_at] -= size
        linked_by.setdefault((record.virtual, record.node), []).append(len(groups))
        groups.append(
            (record.layer, ActivationGroup(
                size=-(-int(size) // MIB),
                produced=record.alloc_at,
                used=record.free_at - 1,
                recompute_us=int(layer_times(record.layer)[0] * 1e6),
                transfer_us=None if link is None else int(size / link.bytes_per_s * 1e6),
            ))
        )  # fmt: skip
    base, running = [], 0.0
    for position in range(positions):
        running += removed[position]
        base.append(-(-int(live[position] - running) // MIB))
    problem = RecomputeOffloadProblem(
        base=tuple(base),
        compute_us=tuple(compute),
        groups=tuple(g for _, g in groups),
        budget=int(budget_bytes // MIB),
        linked=tuple(tuple(m) for m in linked_by.values() if len(m) > 1),
    )
    solution = solve_recompute_offload(
        problem, SolveOptions(time_limit_s=time_limit_s, workers=WORKERS)
    )
    link_source = link.source if link is not None else "no host profile: offload not offered"
    if solution.status not in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
        return BudgetChoice(
            solution.status.value, None, None, (), (), solution.binding, link_source,
            solution.wall_s,
        )  # fmt: skip
    scale = trace.microbatches_total / trace.microbatches_simulated
    layers = [layer for layer, _ in groups]
    choices, added, peak = _as_first_layers(problem, layers, solution.choices)
    chosen = dict(zip(layers, choices, strict=True))
    return BudgetChoice(
        status=solution.status.value,
        added_s=added * scale / 1e6,
        peak_bytes=peak * MIB,
        recompute_layers=tuple(sorted(k for k, c in chosen.items() if c == "recompute")),
        offload_layers=tuple(sorted(k for k, c in chosen.items() if c == "offload")),
        binding=None,
        host_link=link_source,
        solve_s=solution.wall_s,
        gap=0.0 if not solution.added_us else
        (solution.added_us - (solution.lower_bound_us or 0)) / solution.added_us,
        problem=problem,
        group_layers=tuple(layers),
        scale=scale,
    )  # fmt: skip


def _as_first_layers(
    problem: RecomputeOffloadProblem, layers: list[int], choices: tuple[Choice, ...]
) -> tuple[tuple[Choice, ...], int, int]:
    """The same counts moved to the stage's first layers where that fits at no more time:
    Megatron-LM's block recomputation (and Megatron-Core's activation offloading) take the
    first N layers of a stage, and identical layers make many optima equivalent. Returns
    (choices, added time, peak), the solver's own when the canonical form does not fit."""
    order = sorted(set(layers))
    counts = {c: len({k for k, x in zip(layers, choices, strict=True) if x == c}) for c in CHOICES}
    best = (choices, problem.added_us(choices), max(problem.memory(choices), default=0))
    for first, second in (("recompute", "offload"), ("offload", "recompute")):
        plan = dict.fromkeys(order, "keep")
        for layer in order[: counts[first]]:
            plan[layer] = first
        for layer in order[counts[first] : counts[first] + counts[second]]:
            plan[layer] = second
        candidate = tuple(plan[k] for k in layers)
        if not all(g.allows(c) for g, c in zip(problem.groups, candidate, strict=True)):
            continue
        peak = max(problem.memory(candidate), default=0)
        added = problem.added_us(candidate)
        if peak <= problem.budget and added <= best[1]:
            return candidate, added, peak  # type: ignore[return-value]
    return best
