"""The smallest larger GPU count on which some layout fits, for the "nothing fits" message.

When no layout fits, "more GPUs" is only advice a user can act on with a number that
works. This module tries cluster sizes above the one given, smallest first: the powers
of two below one node, then whole-node counts on the grid of ``cluster_sizes`` (every
node count up to 16 nodes, then 2^k and 3·2^k nodes), up to ``MAX_GPUS``. For each it
enumerates the legal layouts and costs their memory exactly as the search does
(``tabulate`` with the same headroom), stopping at the first size where one fits.
Memory does not always fall as GPUs are added (the global batch may not divide), so the
answer is the smallest size *of that grid* that fits, found within ``GROW_TIME_LIMIT_S``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from planner.cost.frameworks import DEFAULT_RUNTIME, Framework, LayerSpec, Runtime
from planner.errors import SpecError
from planner.search.candidates import enumerate_space
from planner.search.objectives import MAX_NODE_COUNTS_LISTED, resized
from planner.search.tabulate import Ranking, tabulate
from planner.specs.hardware import ClusterSpec
from planner.specs.limits import MAX_GPUS
from planner.specs.model import ModelSpec
from planner.specs.workload import WorkloadSpec

GROW_TIME_LIMIT_S = 10.0
"""Seconds the larger sizes are tried for, after a search found nothing that fits."""


@dataclass(frozen=True)
class Grown:
    """The answer: the smallest size that fits (None: none found) and how far it looked."""

    gpus: int | None
    tried_up_to: int
    complete: bool
    """False when the time ran out before a size that fits (or the largest) was tried."""

    def words(self, current: int) -> str:
        """The "more GPUs" suggestion, with the number that works or what is known."""
        if self.gpus is not None:
            return f"more GPUs ({self.gpus} is the smallest size tried above {current} that fits)"
        if self.complete:
            return f"more GPUs cannot do it alone: no count up to {self.tried_up_to} fits"
        return (
            f"more GPUs (none up to {self.tried_up_to} fits; larger counts were not tried "
            f"within {GROW_TIME_LIMIT_S:g} s)"
        )


def larger_sizes(cluster: ClusterSpec) -> list[int]:
    """The GPU counts above ``cluster.num_gpus`` to try, smallest first (module docstring)."""
    per_node, current = cluster.gpus_per_node, cluster.num_gpus
    sizes = {2**k for k in range(per_node.bit_length()) if current < 2**k < per_node}
    most_nodes = MAX_GPUS // per_node
    counts = set(range(1, min(MAX_NODE_COUNTS_LISTED, most_nodes) + 1))
    counts |= {c for k in range(most_nodes.bit_length()) for c in (2**k, 3 * 2**k)}
    sizes |= {c * per_node for c in counts if current < c * per_node <= MAX_GPUS}
    return sorted(sizes)


def smallest_fitting(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    *,
    framework: Framework,
    headroom_gib: float,
    fixed: dict[str, Any] | None = None,
    maxima: dict[str, int] | None = None,
    max_mbs: int = 8,
    time_limit_s: float = GROW_TIME_LIMIT_S,
    runtime: Runtime = DEFAULT_RUNTIME,
    layer_spec: LayerSpec = "transformer_engine",
) -> Grown:
    """The smallest size of ``larger_sizes`` on which a layout fits (module docstring)."""
    deadline = time.perf_counter() + time_limit_s
    tried = cluster.num_gpus
    for gpus in larger_sizes(cluster):
        if time.perf_counter() > deadline:
            return Grown(gpus=None, tried_up_to=tried, complete=False)
        sized = resized(cluster, gpus)
        try:
            space = enumerate_space(
                model, sized, workload, framework=framework, fixed=fixed, maxima=maxima,
                max_mbs=max_mbs, deadline=deadline, layer_spec=layer_spec,
            )  # fmt: skip
        except SpecError:
            continue  # a fixed knob this size cannot take
        table = tabulate(
            space.layouts, model=model, cluster=sized, workload=workload, framework=framework,
            headroom_gib=headroom_gib, deadline=deadline,
            ranking=Ranking(keep=1, key=lambda row, step: step, admits=lambda row: True),
            runtime=runtime, layer_spec=layer_spec,
        )  # fmt: skip
        if any(row.fits for row in table.rows):
            return Grown(gpus=gpus, tried_up_to=gpus, complete=True)
        if not (space.complete and table.complete):
            return Grown(gpus=None, tried_up_to=tried, complete=False)
        tried = gpus
    return Grown(gpus=None, tried_up_to=tried, complete=True)
