"""Records of the model graph: what each layer holds (parameters, saved activations).

The graph is per layer, not per op: each ``LayerNode`` says how many parameters of each
sharding class it has and how many bytes per token it saves for backward in each sharding
region. Memory and time read the same records, so they cannot disagree about a layer.

Sharding regions of saved activations (Korthikanti et al. 2022, section 4.2):
  ``tp``      inside the tensor-parallel region: always split over the tp ranks
              (expert MLP activations over etp instead: see ``ep_tp``)
  ``sp``      outside it (norm inputs, dropout masks, the inputs of the first linears of
              attention and MLP): replicated over tp ranks, split by sequence parallel
  ``ep_tp``   routed-expert MLP activations, split over the expert-tensor-parallel ranks
Parameter classes: ``tp`` (split over tp), ``replicated`` (norms, router: every tp rank
has them), ``expert`` (split over ep x etp).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Region = Literal["tp", "sp", "ep_tp"]


@dataclass(frozen=True)
class SavedBytes:
    """Bytes per token a layer keeps for its backward, by region.

    ``attention_scores`` holds the s²-type terms (softmax output, its dropout mask and
    output without flash attention; the log-sum-exp with it) that selective
    recomputation of the attention core drops; it lives in the ``tp`` region.
    """

    tp: float = 0.0
    sp: float = 0.0
    ep_tp: float = 0.0
    attention_scores: float = 0.0
    core_copies: float = 0.0
    """Other tp-region bytes the attention core keeps that selective recomputation drops
    (Megatron's local attention: K and V repeated to every query head)."""
    checkpoint_extra: float = 0.0
    """tp-region bytes kept only under selective recomputation (Megatron's local spec: the
    checkpoint keeps V as a view of the fused QKV output, which keeps all of it alive)."""
    whole: float = 0.0
    """Kept whole on every TP rank even with sequence parallelism: DTensor's sequence
    parallel all-gathers a column-parallel linear's input and autograd saves the gathered
    tensor (Megatron saves its sequence shard and gathers again in the backward)."""

    def recomputed(self, *, cp: int = 1) -> float:
        """tp-region bytes per token that selective recomputation drops and re-creates."""
        return self.attention_scores / cp + self.core_copies

    def sharded(self, *, tp: int, sp_divisor: int, etp: int, selective: bool, cp: int = 1) -> float:
        """Bytes per local token on one GPU (``sp_divisor`` is tp with SP, else 1).

        Score terms are per key as well as per query: with context parallelism each rank
        scores its queries against one chunk of s / cp keys at a time.
        """
        core = self.checkpoint_extra if selective else self.recomputed(cp=cp)
        return (self.tp + core) / tp + self.sp / sp_divisor + self.ep_tp / etp + self.whole


@dataclass(frozen=True)
class ParamSplit:
    """Parameters of a graph node by how they are sharded across GPUs."""

    tp: int = 0
    replicated: int = 0
    expert: int = 0

    @property
    def total(self) -> int:
        return self.tp + self.replicated + self.expert

    def per_gpu(self, *, tp: int, expert_shards: int) -> float:
        """Parameters one GPU holds (before data-parallel sharding of states)."""
        return self.tp / tp + self.replicated + self.expert / expert_shards


@dataclass(frozen=True)
class LayerNode:
    """One transformer block."""

    index: int
    is_moe: bool
    params: ParamSplit
    matmul_params_active: int
    saved: SavedBytes
    input_bytes_per_token: float
    """The block's input (residual stream): all that full recomputation keeps (sp region)."""
    backward_workspace_per_token: float
    """Largest set of gradient temporaries alive inside the block's backward (tp region)."""
    attention_workspace_per_token: float = 0.0
    """Temporaries of the attention core's backward beyond its saved tensors (tp region);
    under selective recomputation the recomputed core's saved tensors come on top."""
    weight_cast_bytes: float = 0.0
    """Per in-flight micro-batch, not per token: autocast's low-precision weight copies."""
    score_mask_bytes: float = 0.0
    """Per in-flight micro-batch, not per token, not split by TP: the s x s boolean causal
    mask Megatron's local attention builds per call and its in-place masking keeps
    (recomputed with the core under selective recomputation)."""


@dataclass(frozen=True)
class EdgeNode:
    """The embedding (first stage) or the output layer with loss (last stage)."""

    name: Literal["embedding", "output"]
    params: ParamSplit
    saved: SavedBytes
    forward_transient_per_token: float = 0.0
    """Bytes per token alive only while this node's forward runs (logits), tp region."""
    backward_transient_per_token: float = 0.0
    """Bytes per token alive only while this node's backward runs (logit gradients)."""
    weight_cast_bytes: float = 0.0


@dataclass(frozen=True)
class ModelGraph:
    """The whole model for one sequence length and one framework implementation."""

    layers: tuple[LayerNode, ...]
    embedding: EdgeNode
    output: EdgeNode
    seq_len: int
    tied_embeddings: bool = False
    persistent_bytes_per_sequence: float = 0.0
    """Buffers the implementation keeps for the whole run, per sequence of a micro-batch
    (Megatron's global score buffer of its local attention), tp region."""
    notes: tuple[str, ...] = field(default_factory=tuple)
