"""Pricing layouts on a distribution of sequence lengths instead of one fixed length.

``autopar plan --length-dist NAME | --seq-lengths FILE`` compares layouts by their
expected step time over the documents of the run, not at ``--seq-len`` alone. This module
is the search's hook for it: ``tabulate`` asks a *timer* for each layout's step time and
a lower bound on it; ``FIXED_LENGTH`` is the plain cost model, :class:`DistributionTimer`
the formulation below.

Data
    Document lengths: a million drawn from the named distribution with the seed, or all
    of the user's (``planner.scattering.for_plan.pricing_lengths``), each cut into
    pieces of at most S = ``--seq-len`` tokens (S is the layout's sample length: the
    longest sequence any rank holds). Tokens per step are the workload's, G x S.

Static layout (every framework)
    Documents are packed into samples of S tokens with document masking (cu_seqlens /
    THD: a token attends only within its document), micro-batches of ``mbs`` samples, the
    layout's one CP degree for every document. The linear work (GEMMs, norms, the TP and
    CP exchanges, which move every token) is the same as at the fixed length S; the
    attention work of a sample is sum_i s_i^2, i.e. the tokens times the token-weighted
    mean document length  L_tok = sum s_i^2 / sum s_i  (the second moment over the first:
    the plain mean length is wrong by the tail's weight, and S is wrong by its absence).

    The price is a mixture over a grid of lengths g_k = S / 2^k (k = 0..K, down to
    ``MIN_BUCKET_TOKENS``, and while 2^k divides S): the cost model's step time
    T(layout; seq_len g_k, micro-batch mbs x 2^k) - the same tokens per micro-batch and
    the same number of micro-batches, so the same pipeline, optimizer and gradient
    reduction - weighted by the token share w_k of the grid point:

        expected step = sum_k w_k T_k,     sum_k w_k = 1.

    A piece of s tokens between two grid points g_{k+1} < s <= g_k gives its tokens to
    both, in the proportions that keep the mean: (s - g_{k+1}) / (g_k - g_{k+1}) of them
    to g_k, the rest to g_{k+1}. So sum_k w_k g_k = L_tok exactly (pieces shorter than the
    smallest grid point count at that point: their attention is slightly overpriced), and
    as the cost model's attention per token grows linearly in the length, the mixture
    prices the attention at L_tok while keeping what is not linear in it (the CP ring
    exchange that short documents' attention no longer hides, kernel rates by length).
    A grid point a layout cannot run (``g % (2 cp tp) != 0``: Megatron splits each
    document in 2 cp chunks, sequence parallelism splits it over tp) passes its weight to
    the next longer point (priced higher, never lower).

Hybrid context parallel (scattering, where the framework runs it)
    Megatron-Core's ``--hybrid-context-parallel`` gives each packed sub-sample its own CP
    size out of the dp x cp ranks, ``2^ceil(log2(len / max_seqlen_per_dp_cp_rank))``,
    with ``max_seqlen_per_dp_cp_rank = S / cp`` (what the emitter writes). At grid point
    g_k that is cp_k = max(1, cp / 2^k), dp_k = dp cp / cp_k, micro-batch
    mbs x 2^k x cp_k / cp: the same tokens per rank, so the memory is the static layout's
    (the longest document still runs on cp ranks), and short documents pay no exchange.
    Its price is the same mixture over (cp_k, dp_k); the scheduler's packing losses are
    not priced here (the post-search scattering block prices them per batch). It applies
    when the framework is in ``HYBRID_CP_FRAMEWORKS``, pp = 1 (Megatron-Core requires it),
    the model has no multi-latent attention (Megatron-Core raises) and cp is a power of
    two above 1 (with cp = 1 every document already runs on one rank). The layout's price
    is the smaller of the two; :meth:`DistributionTimer.record` says which and why.

Memory
    Unchanged from the fixed-length search: every static or hybrid layout holds at most
    ``mbs`` samples of S tokens per rank over its cp, the cost model's memory at S.

Lower bound (for the search's pruning)
    sum_k w_k LB_k with LB_k ``predict.step_lower_bound`` at grid point k (static, or the
    smaller of the static and hybrid sums): each LB_k is below T_k, so the sum is below
    the mixture.

    The search computes these sums a grid point at a time (``TighteningBound``, longest
    point first, where LB_k is largest) and only as far as the layout's place in its
    order needs (``tabulate.bound_order``): a layout whose partial sums already rank it
    out of the best is never bounded further. A partial sum is a true lower bound of
    the full one, in floats too: every term is a product of non-negative numbers, so
    non-negative; the partial and the full sums add their terms from 0 in the same
    relative order, and a rounded addition of a non-negative number never decreases a
    partial sum while rounding is monotone, so step by step the partial sum stays at
    most the full one; the smaller of the two partial sums is at most the smaller of
    the full ones. Once every term is in, the partial sums are the full sums' very
    additions, so the bound the search orders by is exactly the one computed whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from planner.predict import Prepared, TimeReport, prepare, step_lower_bound
from planner.predict import time_report as predict_time
from planner.specs.layout import ParallelConfig

MIN_BUCKET_TOKENS = 256
"""The shortest grid length. Per token and layer, causal attention does about 2 s h
multiply-adds against about 12 h^2 for the dense projections and MLP (Narayanan et al.,
SC21, eq. 2 counts), a ratio of s / (6 h): 1% at s = 256 for h = 4096, 3% for h = 1536,
so finer buckets below it change the price little."""
HYBRID_CP_FRAMEWORKS = frozenset({"megatron"})
"""Frameworks with a per-sequence CP size: Megatron-Core's hybrid context parallel.
DeepSpeed's Ulysses and torchtitan's context parallel use one degree for every sequence."""
HYBRID_CP_WHY_NOT = {
    "deepspeed": "DeepSpeed has no hybrid context parallel (one Ulysses degree for every sequence)",
    "torchtitan": "torchtitan has no per-sequence context-parallel size (one CP degree for "
    "every sequence)",
}


class Timer(Protocol):
    """How the search times a prepared layout and bounds that time from below."""

    def time(self, prepared: Prepared) -> TimeReport: ...

    def bound(self, prepared: Prepared) -> float: ...

    def quick_bound(self, prepared: Prepared) -> TighteningBound | None:
        """``bound`` a part at a time (None: computed whole)."""
        ...

    def record(self, layout: ParallelConfig) -> LengthPricing | None:
        """How a timed layout was priced, for its plan entry (None: nothing to add)."""
        ...


class _FixedLength:
    """The cost model at the workload's one sequence length."""

    def time(self, prepared: Prepared) -> TimeReport:
        return predict_time(prepared)

    def bound(self, prepared: Prepared) -> float:
        return step_lower_bound(prepared)

    def quick_bound(self, prepared: Prepared) -> TighteningBound | None:
        return None

    def record(self, layout: ParallelConfig) -> LengthPricing | None:
        return None


FIXED_LENGTH: Timer = _FixedLength()


@dataclass(frozen=True)
class LengthMix:
    """The grid lengths (longest first) and their token shares (module docstring)."""

    max_len: int
    lengths: tuple[int, ...]
    shares: tuple[float, ...]
    documents: int
    mean_len: float
    token_mean_len: float
    below_grid_share: float
    """Share of the tokens in pieces shorter than the smallest grid length."""
    source: str


def grid(max_len: int, min_len: int = MIN_BUCKET_TOKENS) -> tuple[int, ...]:
    """S, S/2, S/4, ... while the halving is exact and at least ``min_len`` (S alone when
    S is shorter)."""
    points = [max_len]
    while points[-1] % 2 == 0 and points[-1] // 2 >= min_len:
        points.append(points[-1] // 2)
    return tuple(points)


def length_mix(pieces: Sequence[int], *, max_len: int, source: str) -> LengthMix:
    """Token shares of the grid points for ``pieces`` (documents already cut at
    ``max_len``), by the mean-preserving split of the module docstring."""
    lengths = np.asarray(pieces, dtype=np.int64)
    if lengths.size == 0:
        raise ValueError("length_mix: no sequence lengths")
    outside = lengths[(lengths < 1) | (lengths > max_len)]
    if outside.size:
        raise ValueError(f"length_mix: length {int(outside[0])} is outside 1..{max_len}")
    points = grid(max_len)
    ascending = np.array(points[::-1], dtype=np.float64)
    s = lengths.astype(np.float64)
    weight = np.zeros(len(points))
    low = s <= ascending[0]  # at or below the shortest point: all there
    weight[0] = s[low].sum()
    mid = s[~low]
    hi = np.searchsorted(ascending, mid, side="left")  # ascending[hi - 1] < s <= ascending[hi]
    upper = (mid - ascending[hi - 1]) / (ascending[hi] - ascending[hi - 1])
    weight += np.bincount(hi, weights=mid * upper, minlength=len(points))
    weight += np.bincount(hi - 1, weights=mid * (1 - upper), minlength=len(points))
    tokens = float(s.sum())
    return LengthMix(
        max_len=max_len,
        lengths=points,
        shares=tuple(float(w) / tokens for w in weight[::-1]),
        documents=int(lengths.size),
        mean_len=tokens / lengths.size,
        token_mean_len=float((s * s).sum()) / tokens,
        below_grid_share=float(s[s < ascending[0]].sum()) / tokens,
        source=source,
    )


class LengthBucket(BaseModel):
    model_config = ConfigDict(frozen=True)

    length: int
    token_share: float
    cp: int | None = None
    """Hybrid context parallel's CP size for sequences of this length (None: static)."""


class LengthPricing(BaseModel):
    # how one layout was priced on the length distribution (no docstring: REST schema)

    model_config = ConfigDict(frozen=True)

    lengths_source: str
    max_seq_len: int
    """S: documents are cut to at most this; every sample holds this many tokens."""
    documents: int
    mean_len: float
    token_mean_len: float
    """sum s^2 / sum s: the length the attention work scales with."""
    buckets: list[LengthBucket]
    method: Literal["static", "hybrid_cp"]
    """How this layout runs the lengths: packed with its one CP degree (``static``) or
    Megatron-Core's hybrid context parallel (``hybrid_cp``)."""
    static_step_time_s: float
    hybrid_step_time_s: float | None = None
    """None where the framework or layout cannot run hybrid context parallel."""
    fixed_length_step_time_s: float
    """The step at the fixed length S (every sample one document of S tokens)."""
    reason: str


@dataclass
class _Priced:
    static_s: float
    hybrid_s: float | None
    hybrid_cps: tuple[tuple[int, int], ...]
    why_not: str
    fixed_s: float


@dataclass
class DistributionTimer:
    """Prices a layout at the length mixture (module docstring); remembers each layout's
    static and hybrid prices for :meth:`record`."""

    mix: LengthMix
    _priced: dict[str, _Priced] = field(default_factory=dict)

    def _mixture(self, prepared: Prepared, hybrid: bool) -> list[tuple[float, Prepared]]:
        """(token share, the layout prepared at that grid point), shortest first; a grid
        point the layout cannot run (or that holds no tokens) is folded into the next
        longer one."""
        return [
            (share, self._prepared(prepared, g, at_g))
            for share, g, at_g in self._grid_points(prepared, hybrid)
        ]

    def _grid_points(
        self, prepared: Prepared, hybrid: bool
    ) -> list[tuple[float, int, ParallelConfig]]:
        """``_mixture``'s (token share, grid length, layout there), not yet prepared."""
        layout = prepared.layout
        assert layout.dp is not None
        out: list[tuple[float, int, ParallelConfig]] = []
        carry = 0.0
        for k in reversed(range(len(self.mix.lengths))):
            g = self.mix.lengths[k]
            share = self.mix.shares[k] + carry
            cp = max(1, layout.cp >> k) if hybrid else layout.cp
            if k > 0 and (g % (2 * cp * layout.tp) or share == 0.0):
                carry = share
                continue
            carry = 0.0
            scale = (2**k) * cp // layout.cp  # the same tokens per rank per micro-batch
            at_g = layout.model_copy(
                update={"cp": cp, "dp": layout.dp * layout.cp // cp, "mbs": layout.mbs * scale}
            )
            out.append((share, g, at_g))
        return out

    def _prepared(self, prepared: Prepared, g: int, layout: ParallelConfig) -> Prepared:
        """``prepared``'s model and cluster at grid length ``g``: the same tokens per step."""
        workload = prepared.workload
        at_g = workload.model_copy(
            update={
                "seq_len": g,
                "global_batch": workload.sequences_per_step * (self.mix.max_len // g),
                "global_batch_tokens": None,
            }
        )
        return prepare(
            model=prepared.model, cluster=prepared.cluster, workload=at_g, layout=layout,
            framework=prepared.framework, check=False, runtime=prepared.runtime,
            layer_spec=prepared.layer_spec, expert_load=prepared.expert_load,
            flash_attention=prepared.flash_attention, optimizer_impl=prepared.optimizer_impl,
        )  # fmt: skip

    def hybrid_blocker(self, prepared: Prepared) -> str | None:
        """Why this layout cannot run hybrid context parallel (None: it can)."""
        layout = prepared.layout
        if prepared.framework not in HYBRID_CP_FRAMEWORKS:
            return HYBRID_CP_WHY_NOT.get(
                prepared.framework, f"{prepared.framework} has no hybrid context parallel"
            )
        if layout.cp == 1:
            return "cp 1: every sequence already runs on one rank"
        if layout.cp & (layout.cp - 1):
            return f"cp {layout.cp} is not a power of two (hybrid CP sizes are)"
        if layout.pp > 1:
            return "pp > 1: Megatron-Core's hybrid context parallel needs pp = 1"
        if layout.cp_comm_type == "a2a+p2p":
            return (
                "cp_comm_type a2a+p2p: Megatron-Core's hybrid context parallel makes CP "
                "groups of each size itself, not the two fixed hierarchical levels"
            )
        if prepared.model.mla is not None:
            return (
                "MLA: Megatron-Core's hybrid context parallel does not run multi-latent attention"
            )
        return None

    def time(self, prepared: Prepared) -> TimeReport:
        static = [(w, predict_time(p)) for w, p in self._mixture(prepared, hybrid=False)]
        best = static
        blocker = self.hybrid_blocker(prepared)
        hybrid_s = None
        cps: tuple[tuple[int, int], ...] = ()
        if blocker is None:
            mixture = self._mixture(prepared, hybrid=True)
            hybrid = [(w, predict_time(p)) for w, p in mixture]
            hybrid_s = _step(hybrid)
            cps = tuple((p.workload.seq_len, p.layout.cp) for _, p in mixture)
            if hybrid_s < _step(static):
                best = hybrid
        self._priced[_key(prepared.layout)] = _Priced(
            static_s=_step(static), hybrid_s=hybrid_s, hybrid_cps=cps,
            why_not=blocker or "", fixed_s=static[-1][1].step_time_s,  # k = 0: length S
        )  # fmt: skip
        return _mixed_report(
            best, tokens=prepared.workload.tokens_per_step, gpus=prepared.cluster.num_gpus
        )

    def bound(self, prepared: Prepared) -> float:
        static = sum(w * step_lower_bound(p) for w, p in self._mixture(prepared, hybrid=False))
        if self.hybrid_blocker(prepared) is not None:
            return static
        hybrid = sum(w * step_lower_bound(p) for w, p in self._mixture(prepared, hybrid=True))
        return min(static, hybrid)

    def quick_bound(self, prepared: Prepared) -> TighteningBound:
        """:meth:`bound`, computed a grid point at a time as the search asks
        (``TighteningBound``)."""
        return TighteningBound(self, prepared)

    def record(self, layout: ParallelConfig) -> LengthPricing | None:
        """How ``layout`` (resolved, as tabulated) was priced; None if it was not timed."""
        priced = self._priced.get(_key(layout))
        if priced is None:
            return None
        mix = self.mix
        hybrid = priced.hybrid_s is not None and priced.hybrid_s < priced.static_s
        grid_cps = dict(priced.hybrid_cps)
        buckets = [
            LengthBucket(length=g, token_share=round(w, 6), cp=grid_cps.get(g) if hybrid else None)
            for g, w in zip(mix.lengths, mix.shares, strict=True)
        ]
        if hybrid:
            assert priced.hybrid_s is not None
            reason = (
                f"hybrid context parallel (a CP size per sequence, up to cp {layout.cp}) is "
                f"predicted {priced.static_s / priced.hybrid_s:.2f}x faster than static cp "
                f"{layout.cp} on these lengths"
            )
        elif priced.hybrid_s is not None:
            reason = (
                f"static cp {layout.cp}: hybrid context parallel is predicted no faster "
                f"({priced.hybrid_s:.3f} s vs {priced.static_s:.3f} s per step)"
            )
        else:
            reason = f"static cp {layout.cp}: {priced.why_not}"
        return LengthPricing(
            lengths_source=mix.source,
            max_seq_len=mix.max_len,
            documents=mix.documents,
            mean_len=round(mix.mean_len, 1),
            token_mean_len=round(mix.token_mean_len, 1),
            buckets=buckets,
            method="hybrid_cp" if hybrid else "static",
            static_step_time_s=round(priced.static_s, 6),
            hybrid_step_time_s=None if priced.hybrid_s is None else round(priced.hybrid_s, 6),
            fixed_length_step_time_s=priced.fixed_s,
            reason=reason,
        )


class TighteningBound:
    """:meth:`DistributionTimer.bound` of one layout, its terms computed longest grid
    point first, one static and one hybrid term per :meth:`tighten`; :meth:`value` is a
    lower bound on the full bound at every stage, and equal to it (the same float) once
    ``exact`` (module docstring: why)."""

    def __init__(self, timer: DistributionTimer, prepared: Prepared) -> None:
        self._timer, self._prepared = timer, prepared
        self._mixtures = [timer._grid_points(prepared, hybrid=False)]
        if timer.hybrid_blocker(prepared) is None:
            self._mixtures.append(timer._grid_points(prepared, hybrid=True))
        self._terms: list[list[float | None]] = [[None] * len(m) for m in self._mixtures]
        self._done = 0
        """Terms computed in each mixture, from its longest point (the last) down."""
        self.exact = False
        self.tighten()

    def tighten(self) -> None:
        """Compute the next grid point's term of each mixture not yet complete."""
        for points, terms in zip(self._mixtures, self._terms, strict=True):
            if self._done < len(points):
                i = len(points) - 1 - self._done
                share, g, at_g = points[i]
                # the expression of ``DistributionTimer.bound``'s sums, so the same float
                terms[i] = share * step_lower_bound(self._timer._prepared(self._prepared, g, at_g))
        self._done += 1
        self.exact = all(self._done >= len(points) for points in self._mixtures)

    def value(self) -> float:
        """The smaller of the mixtures' sums over their computed terms, in the full sums'
        order (shortest point first, from 0, as ``sum``)."""
        sums = [sum(t for t in terms if t is not None) for terms in self._terms]
        return sums[0] if len(sums) == 1 else min(sums[0], sums[1])


def _key(layout: ParallelConfig) -> str:
    return layout.model_dump_json()


def _step(priced: list[tuple[float, TimeReport]]) -> float:
    return sum(w * report.step_time_s for w, report in priced)


def _mixed_report(priced: list[tuple[float, TimeReport]], *, tokens: int, gpus: int) -> TimeReport:
    """The token-weighted mixture of the grid points' reports (module docstring): step and
    breakdown mixed; MFU and HFU from the mixed FLOPs (each point's FLOPs are its
    utilisation x its step x GPUs x peak) over the mixed step."""
    step = _step(priced)
    keys = {key for _, report in priced for key in report.breakdown_s}
    return TimeReport(
        step_time_s=round(step, 6),
        tokens_per_s=round(tokens / step, 3),
        tokens_per_s_per_gpu=round(tokens / step / gpus, 3),
        mfu=round(sum(w * r.mfu * r.step_time_s for w, r in priced) / step, 4),
        hfu=round(sum(w * r.hfu * r.step_time_s for w, r in priced) / step, 4),
        breakdown_s={
            key: round(sum(w * r.breakdown_s.get(key, 0.0) for w, r in priced), 6)
            for key in sorted(keys)
        },
        rates_source=priced[0][1].rates_source,
        pipeline=None,
    )
