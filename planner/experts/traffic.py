"""Predicted all-to-all bytes of a placement, inside and across nodes.

Every token-expert assignment moves one hidden vector (hidden size x bytes per element)
from the GPU the token is on to a GPU hosting a replica of the expert (the combine moves
it back: the same bytes again, not counted twice here). Two models of where a token is:

- uniform source (expert-parallel training, the usual layout): tokens are spread evenly
  over the EP GPUs, so an assignment stays on its GPU with probability 1 / G, stays in its
  node with (G/N - 1) / G and crosses nodes with (G - G/N) / G. The bytes are the same for
  every placement; they size the all-to-all.
- affinity (ExFlow's inference setting: a token continues from the GPU of its previous
  layer's expert): for an affinity entry (e in layer l, f in layer l + 1, t tokens) and
  replicas chosen uniformly, the token stays on its GPU with probability
  sum_g (n_eg / c_e)(n_fg / c_f) and in its node with the same sum over nodes (n_eg: copies
  of e on GPU g, c_e: replicas of e). Only the affinity entries kept in the statistics
  are counted.
"""

from __future__ import annotations

import numpy as np

from planner.experts.stats import AffinityEntry


def copies(phy2log: np.ndarray, experts: int, gpus: int) -> np.ndarray:
    """``[layers, experts, gpus]`` copies of each expert on each GPU."""
    layers, slots = phy2log.shape
    gpu_of = np.arange(slots) // (slots // gpus)
    result = np.zeros((layers, experts, gpus))
    for layer in range(layers):
        np.add.at(result[layer], (phy2log[layer], gpu_of), 1)
    return result


def uniform_bytes(
    loads: np.ndarray, gpus: int, nodes: int, vector_bytes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per layer (inside nodes, across nodes) bytes under uniform sources."""
    per_node = gpus // nodes
    moved = loads.sum(axis=1).astype(np.float64) * vector_bytes
    return moved * (per_node - 1) / gpus, moved * (gpus - per_node) / gpus


def affinity_bytes(
    phy2log: np.ndarray,
    affinity: list[AffinityEntry],
    experts: int,
    gpus: int,
    nodes: int,
    vector_bytes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per layer (inside nodes, across nodes) bytes of the tokens arriving from the
    previous layer under the affinity model (layer 0 receives none)."""
    layers = phy2log.shape[0]
    share = copies(phy2log, experts, gpus)
    share /= share.sum(axis=2, keepdims=True)
    node_share = share.reshape(layers, experts, nodes, gpus // nodes).sum(axis=3)
    inside, across = np.zeros(layers), np.zeros(layers)
    for a in affinity:
        same_gpu = float(share[a.layer, a.src] @ share[a.layer + 1, a.dst])
        same_node = float(node_share[a.layer, a.src] @ node_share[a.layer + 1, a.dst])
        inside[a.layer + 1] += a.tokens * (same_node - same_gpu) * vector_bytes
        across[a.layer + 1] += a.tokens * (1 - same_node) * vector_bytes
    return inside, across
