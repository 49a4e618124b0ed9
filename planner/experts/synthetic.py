"""Synthetic routing for what-if studies: ``zipf:S[,affinity:A][,seed:K][,tokens:T]``.

Each MoE layer ranks its experts in a random order and routes with Zipf popularity: the
expert of rank i (1-based) is chosen with probability proportional to i^-S (S = 0 is
balanced routing; measured MoE routers are skewed, S around 1). Each of T tokens (default
4096) makes k routing choices per layer, each followed as a chain across layers: with
probability A it goes on to a fixed partner expert of the next layer (a random
permutation per layer pair: ExFlow's inter-layer affinity), else it draws afresh from the
next layer's popularity. The result is a ``[layers, tokens, k]`` trace turned into
statistics by :func:`planner.experts.stats.stats_from_traces`.
"""

from __future__ import annotations

import numpy as np

from planner.errors import SpecError
from planner.experts.stats import RoutingStats, stats_from_traces

DEFAULT_TOKENS = 4096


def parse_synthetic(spec: str) -> dict[str, float]:
    """``zipf:1.2,affinity:0.5,seed:3`` -> {"zipf": 1.2, "affinity": 0.5, "seed": 3}."""
    values: dict[str, float] = {}
    for part in spec.split(","):
        key, sep, raw = part.strip().partition(":")
        if not sep or key not in ("zipf", "affinity", "seed", "tokens"):
            raise SpecError(
                f"synthetic: {part.strip()!r} is not one of zipf:S, affinity:A, seed:K, tokens:T"
            )
        try:
            values[key] = float(raw)
        except ValueError:
            raise SpecError(f"synthetic: {key} must be a number, got {raw!r}") from None
    if "zipf" not in values:
        raise SpecError("synthetic: zipf:S is required (S >= 0; 0 is balanced routing)")
    if values["zipf"] < 0:
        raise SpecError(f"synthetic: zipf must be at least 0, got {values['zipf']}")
    if not 0 <= values.get("affinity", 0.0) <= 1:
        raise SpecError(f"synthetic: affinity must be in [0, 1], got {values['affinity']}")
    for key in ("seed", "tokens"):
        if key in values and (values[key] != int(values[key]) or values[key] < 0):
            raise SpecError(f"synthetic: {key} must be a whole number >= 0, got {values[key]}")
    if values.get("tokens", 1) < 1:
        raise SpecError("synthetic: tokens must be at least 1")
    return values


def synthetic_trace(spec: str, *, layers: int, experts: int, top_k: int) -> np.ndarray:
    """The ``[layers, tokens, k]`` trace of the module docstring."""
    values = parse_synthetic(spec)
    rng = np.random.default_rng(int(values.get("seed", 0)))
    tokens = int(values.get("tokens", DEFAULT_TOKENS))
    weights = np.arange(1, experts + 1, dtype=np.float64) ** -values["zipf"]
    popularity = [rng.permutation(weights / weights.sum()) for _ in range(layers)]
    trace = np.empty((layers, tokens, top_k), dtype=np.int64)
    trace[0] = rng.choice(experts, size=(tokens, top_k), p=popularity[0])
    affinity = values.get("affinity", 0.0)
    for layer in range(1, layers):
        partner = rng.permutation(experts)
        fresh = rng.choice(experts, size=(tokens, top_k), p=popularity[layer])
        follow = rng.random((tokens, top_k)) < affinity
        trace[layer] = np.where(follow, partner[trace[layer - 1]], fresh)
    return trace


def synthetic_stats(spec: str, *, layers: int, experts: int, top_k: int) -> RoutingStats:
    """Statistics of :func:`synthetic_trace`; the affinity only when A > 0."""
    trace = synthetic_trace(spec, layers=layers, experts=experts, top_k=top_k)
    stats = stats_from_traces([trace], experts=experts, source=f"synthetic {spec}")
    if parse_synthetic(spec).get("affinity", 0.0) == 0:
        return stats.model_copy(update={"affinity": []})
    return stats
