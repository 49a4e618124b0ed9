"""MoE expert placement: routing statistics in, placements that serving systems load out.

``place_experts`` builds the problem of :mod:`solvers.expert_placement` from the specs and
compares the answer with contiguous placement and the EPLB greedy; ``stats`` reads routing
statistics and traces, ``synthetic`` generates them, ``formats`` writes and reads the EPLB
triple, SGLang's expert-location JSON and a table.
"""

from planner.experts.formats import (
    eplb_triple,
    placement_table,
    read_eplb,
    read_sglang,
    read_table,
    write_eplb,
    write_sglang,
)
from planner.experts.place import (
    BaselineSummary,
    ExpertPlacementResult,
    LayerPlacement,
    place_experts,
)
from planner.experts.stats import (
    AffinityEntry,
    RoutingStats,
    read_routing,
    read_trace,
    stats_from_traces,
)
from planner.experts.synthetic import parse_synthetic, synthetic_stats, synthetic_trace

__all__ = [
    "AffinityEntry",
    "BaselineSummary",
    "ExpertPlacementResult",
    "LayerPlacement",
    "RoutingStats",
    "eplb_triple",
    "parse_synthetic",
    "place_experts",
    "placement_table",
    "read_eplb",
    "read_routing",
    "read_sglang",
    "read_table",
    "read_trace",
    "stats_from_traces",
    "synthetic_stats",
    "synthetic_trace",
    "write_eplb",
    "write_sglang",
]
