"""What the planner minimises: step time, the price of a token budget, or the GPU count.

Each objective turns a tabulated layout (``planner.search.tabulate.Row``) into an integer
the solver minimises, and says which layouts it admits:

  throughput  the predicted step time in microseconds (``estimate`` rounds step time to
              1e-6 s, so this is exact); one cluster size, the one given.
  cost        the price of training on ``token_budget`` tokens: steps x step time x GPUs
              x ``price_per_gpu_hour`` / 3600, with steps = ceil(budget / tokens per
              step), in units of 1e-4 of the currency (integers for the solver); every
              cluster size of :func:`cluster_sizes`, since fewer GPUs are often cheaper
              per token (less communication, a smaller bubble) but slower. With a
              ``deadline_hours``, layouts that would train longer are not admitted.
  min-gpus    the fewest GPUs that train ``token_budget`` tokens within ``deadline_hours``,
              then the shortest step: the GPU count's position among the sizes times
              (1 + the largest step in microseconds) plus the step in microseconds, so
              that the GPU count decides first. The sizes are searched smallest first and
              the search stops at the first size with an admitted layout (every smaller
              one has none, so that is the fewest).

Missing inputs are one-line errors naming the option (``price_per_gpu_hour``,
``token_budget``, ``deadline_hours``), raised by :func:`make_objective`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner.errors import SpecError
from planner.search.tabulate import Row
from planner.specs.hardware import ClusterSpec

OBJECTIVES = ("throughput", "cost", "min-gpus")
MICROSECONDS = 1_000_000
COST_UNITS = 10_000
"""Cost is minimised in 1e-4 of the currency (integers for the solver)."""
MAX_NODE_COUNTS_LISTED = 16
"""Up to this many nodes every whole-node count is a cluster size; beyond, a grid."""


@dataclass(frozen=True)
class Objective:
    name: str
    price_per_gpu_hour: float | None = None
    token_budget: float | None = None
    deadline_hours: float | None = None

    @property
    def sizes_searched(self) -> bool:
        return self.name != "throughput"

    @property
    def stops_at_first_fit(self) -> bool:
        """Sizes go smallest first and the first that admits a layout is the answer."""
        return self.name == "min-gpus"

    def steps(self, row: Row) -> int:
        assert self.token_budget is not None
        return math.ceil(self.token_budget / row.prepared.workload.tokens_per_step)

    def train_hours(self, row: Row, step_s: float | None = None) -> float:
        return self.steps(row) * (row.step_s if step_s is None else step_s) / 3600

    def train_cost(self, row: Row, step_s: float | None = None) -> float:
        assert self.price_per_gpu_hour is not None
        hours = self.train_hours(row, step_s)
        return hours * row.cluster.num_gpus * self.price_per_gpu_hour

    def key(self, row: Row, step_s: float) -> float:
        """The objective of a layout of this cluster size with step time ``step_s``,
        non-decreasing in it (what ``tabulate.Ranking`` orders by)."""
        return self.train_cost(row, step_s) if self.name == "cost" else step_s

    def admits(self, row: Row) -> bool:
        """Whether the objective allows this (fitting) layout at all (the deadline)."""
        if self.deadline_hours is None:
            return True
        return self.train_hours(row) <= self.deadline_hours

    def primary(self, row: Row, *, sizes: list[int], slowest_us: int) -> int:
        """The integer the solver minimises for this layout (module docstring)."""
        step_us = round(row.step_s * MICROSECONDS)
        if self.name == "throughput":
            return step_us
        if self.name == "cost":
            return round(self.train_cost(row) * COST_UNITS)
        return sizes.index(row.cluster.num_gpus) * (slowest_us + 1) + step_us

    def describe(self, row: Row) -> str:
        """The objective's value for a layout, for the explanation."""
        if self.name == "throughput":
            return f"{row.step_s:.3f} s per step"
        hours = self.train_hours(row)
        text = f"{row.cluster.num_gpus} GPUs, {hours:,.1f} h for the budget"
        if self.name == "cost":
            text += f", cost {self.train_cost(row):,.0f}"
        return text


def make_objective(
    name: str,
    *,
    price_per_gpu_hour: float | None = None,
    token_budget: float | None = None,
    deadline_hours: float | None = None,
) -> Objective:
    """Check the inputs each objective needs; errors name the missing option."""
    if name not in OBJECTIVES:
        raise SpecError(f"objective: unknown '{name}'; known: {', '.join(OBJECTIVES)}")
    for label, value in (
        ("price_per_gpu_hour", price_per_gpu_hour),
        ("token_budget", token_budget),
        ("deadline_hours", deadline_hours),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise SpecError(f"{label}: {value} must be a positive number")
    if name == "cost":
        missing = [
            label
            for label, value in (
                ("price_per_gpu_hour", price_per_gpu_hour),
                ("token_budget", token_budget),
            )
            if value is None
        ]
        if missing:
            raise SpecError(
                f"objective cost needs {' and '.join(missing)}: the price of the budget is "
                f"steps x step time x GPUs x price per GPU-hour"
            )
    if name == "min-gpus":
        missing = [
            label
            for label, value in (("token_budget", token_budget), ("deadline_hours", deadline_hours))
            if value is None
        ]
        if missing:
            raise SpecError(
                f"objective min-gpus needs {' and '.join(missing)}: the fewest GPUs that "
                f"train the token budget within the deadline"
            )
    if deadline_hours is not None and token_budget is None:
        raise SpecError("deadline_hours needs token_budget (the deadline is for the budget)")
    return Objective(
        name=name,
        price_per_gpu_hour=price_per_gpu_hour,
        token_budget=token_budget,
        deadline_hours=deadline_hours,
    )


def cluster_sizes(cluster: ClusterSpec) -> list[int]:
    """GPU counts searched by the cost and min-gpus objectives, smallest first.

    Within one node: powers of two and the node's GPU count. Beyond: the powers of two
    below one node, then every whole-node count up to ``MAX_NODE_COUNTS_LISTED`` nodes;
    for larger clusters the node counts 2^k and 3·2^k (a doubling grid, so the number of
    sizes grows with the logarithm of the cluster) and the cluster itself.
    """
    per_node, total = cluster.gpus_per_node, cluster.num_gpus
    small = {2**k for k in range(per_node.bit_length()) if 2**k < min(per_node, total)}
    if total <= per_node:
        return sorted(small | {total})
    nodes = cluster.nodes
    if nodes <= MAX_NODE_COUNTS_LISTED:
        counts = set(range(1, nodes + 1))
    else:
        counts = {c for k in range(nodes.bit_length()) for c in (2**k, 3 * 2**k) if c <= nodes}
        counts.add(nodes)
    return sorted(small | {c * per_node for c in counts})


def resized(cluster: ClusterSpec, gpus: int) -> ClusterSpec:
    """The same cluster with ``gpus`` GPUs."""
    return cluster.model_copy(update={"num_gpus": gpus})
