"""The layout candidates the planner searches: every layout that passes Megatron's rules.

Step one of the planner tabulates the cost model per whole layout, so the candidate list
is the decision space. It is the Cartesian product of these knob domains (glossary in
``planner.specs.layout``), in this order, which is also the (deterministic) output order:

  tp         divisors of gpus_per_node that divide the GPU count (TP stays inside a node)
  cp         powers of two up to 8, and beyond for long sequences while every CP rank keeps
             at least 8,192 tokens (Llama 3 405B's 128K-token stage ran CP 16, 16 x 8K:
             Dubey et al. 2024, arXiv:2407.21783, Table 4)
  cp_comm    the CP algorithms the framework's profile searches at the release planned for
             (``FrameworkProfile.searched_cp_algorithms``): Megatron-LM p2p (ring),
             all_gather or a2a (Ulysses head scatter; ``--cp-comm-type``); DeepSpeed's
             sequence parallelism is Ulysses (a2a); torchtitan 0.3.0 all-gathers K/V,
             0.2.2 also runs the ring (p2p). Megatron-LM's a2a+p2p (all-to-all inside
             groups of A adjacent CP ranks, ring across the cp/A groups) is searched with
             each split A x cp/A = cp, 1 < A < cp (``hierarchical_cp_sizes``,
             ``--hierarchical-context-parallel-sizes``); A = 1 and A = cp are p2p and a2a
             already, and join only when a2a+p2p is pinned
  pp         divisors of GPUs / (tp x cp) up to min(64, num_layers); an even layer split,
             or, when the layers do not divide by pp, the balanced uneven split Megatron
             allows (first/last stage sizes): ceil(L / pp) layers on every middle stage and
             the rest shared by the first and last stages, which also carry the embedding
             and the output layer (Llama 3 405B: 126 layers on 16 stages = 7 + 14 x 8 + 7);
             under Megatron-LM also, as an alternative, each account-for split
             (``--account-for-embedding/loss-in-pipeline-split``: the embedding and/or the
             output layer count as a layer) whose layer slots divide evenly by pp, with
             the vpp that divide the slots per rank (Llama 3 405B: 126 + 2 = 16 x 8, the
             layout Meta and NVIDIA run). Megatron-LM refuses stage sizes with these flags,
             so account-for flags pinned with ``fixed`` are the split: no stage sizes are
             added to them
  dp         GPUs / (tp x cp x pp), derived
  ep         MoE: divisors of num_experts that divide dp x cp x tp with ep x tp GPUs in one
             node (expert groups inside a node unless ep is pinned); dense models: 1
  vpp        None, or 2, 3 and 4 when pp > 1 (Korthikanti et al. 2022 ran 3)
  mbs        powers of two up to ``max_mbs``
  recompute  none, selective, full (uniform, one layer per group)

An axis the framework's profile does not run (``FrameworkProfile.axes``) keeps degree 1;
vpp is searched only where the profile runs the interleaved schedule, and uneven stage
splits only where it runs them.

Derived, not searched: ``sequence_parallel = tp > 1`` (where the profile runs it); the
optimizer sharding of the profile (megatron: distributed optimizer; deepspeed: ZeRO-1;
torchtitan: FSDP2, i.e. ZeRO-3; pytorch: plain DDP); ``etp = 1`` with ep > 1 where the
release shards no experts over TP under expert parallelism (torchtitan 0.3.0).

Set by rule, not searched, because each dominates in the cost model (never slower, no
memory of its own in ``planner.cost``), so enumerating "off" would only double the space
with layouts that cannot win; each only where the profile lists the overlap
(``FrameworkProfile.overlaps``):

  tp_comm_overlap       on wherever sequence parallelism is (it requires it): the TP
                        collectives of a layer hide behind its GEMMs (``planner.cost.time``
                        (1): exposed = max(0, collective - GEMM time)). Megatron-LM
                        ``--tp-comm-overlap``, torchtitan async TP. Searching it off instead
                        charged every TP layout its whole TP traffic and leant the search
                        toward low TP and high CP.
  overlap_grad_reduce   on: the reduce hides behind the backward (cost (3): at most the
                        reduce, at least one layer's share)
  overlap_param_gather  on with a sharded optimizer: the gather hides behind the next
                        forward (one layer's share exposed)

Beyond the balanced split and uniform recomputation: the uneven end stages and the
per-stage recompute blocks of Megatron-LM are chosen for the leading pipelines by the
stage-partition solver (``planner.search.partition``) and costed exactly like these
candidates; the refinement (``planner.refine``) samples what neither enumerates
(micro-batch sizes other than powers of two, deeper virtual pipelines, other splits,
recompute groups, optimizer offload).

Every candidate that passes the layout rules is also checked against what the
framework's launch files can express at the release planned for
(``planner.frameworks.refusals.layout_refusals``, the refusals the emitters apply, e.g.
DeepSpeed's pipeline without Ulysses, torchtitan's uneven-stage and expert-TP limits);
a refused one is dropped and counted under ``Rule.FRAMEWORK_CANNOT_EXPRESS``, so every plan
returned for a framework is one its emitter writes.

``fixed`` pins any ``ParallelConfig`` field (a searched knob is restricted to that value,
any other field is set on every candidate); ``maxima`` bounds any integer knob. Every
product of the domains is built as a ``ParallelConfig`` and checked with
:func:`planner.specs.layout.layout_violations`; violators are dropped and counted per rule
so that an empty space can say which rule emptied it.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from planner.errors import SpecError
from planner.frameworks import FrameworkProfile, get_profile
from planner.frameworks.refusals import LayoutQuery, layout_refusals
from planner.specs.hardware import ClusterSpec
from planner.specs.layout import ParallelConfig, layout_violations
from planner.specs.model import ModelSpec
from planner.specs.rules import LayoutRuleError, LayoutViolation, Rule
from planner.specs.workload import WorkloadSpec

MAX_CP = 8
LONG_SEQUENCE_TOKENS_PER_CP_RANK = 8192
MAX_PP = 64
VPP_CHOICES = (2, 3, 4)
RECOMPUTE_CHOICES = ("none", "selective", "full")
ACCOUNT_FOR_FLAGS = (
    "account_for_embedding_in_pipeline_split",
    "account_for_loss_in_pipeline_split",
)
SPLIT_KNOBS = ("first_stage_layers", "last_stage_layers", *ACCOUNT_FOR_FLAGS)
"""The knobs that choose how layers split over stages; pinning any leaves none searched."""
ACCOUNTS_FOR = ("megatron",)
"""Profiles whose launch files take the account-for flags (they are Megatron-LM's)."""
DEADLINE_CHECK_EVERY = 32
"""Candidates checked between two looks at the clock (each takes tens of microseconds)."""

SEARCHED = (
    "tp", "cp", "pp", "dp", "ep", "vpp", "mbs", "recompute", "cp_comm_type",
    "hierarchical_cp_sizes",
)  # fmt: skip
"""Knobs with a searched domain; every other ``ParallelConfig`` field is derived or fixed."""

CP_COMM_PRICED = True
"""Whether the cost model prices the CP algorithms differently (``planner.cost.time``:
ring overlapped with attention, all-gather, Ulysses all-to-all), so that searching them
chooses between different numbers; ``tests/search/test_candidates.py`` checks this flag
against the cost model."""


@dataclass
class Enumeration:
    """The legal candidates and, per rule, how many raw layouts it removed."""

    layouts: list[ParallelConfig]
    considered: int
    """Raw layouts built from the knob domains (before the rules)."""
    dropped: Counter[Rule] = field(default_factory=Counter)
    """Rule -> layouts it removed (a layout breaking two rules counts for both)."""
    examples: dict[Rule, str] = field(default_factory=dict)
    """Rule -> one full message, for the explanation."""
    complete: bool = True
    """False when the deadline stopped the enumeration: ``layouts`` holds those found."""


def divisors(n: int) -> list[int]:
    """The divisors of ``n`` in increasing order, in O(sqrt(n)) steps (not one per integer
    up to ``n``: a cluster size of 10^9 would otherwise take minutes)."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return small + [n // d for d in reversed(small) if d * d != n]


def coerce_knobs(values: dict[str, Any], *, option: str, strict: bool = False) -> dict[str, Any]:
    """Validate knob names and values against ``ParallelConfig``'s fields ('8' -> 8, 'none'
    from command-line text, '2x4' for a pair of group sizes; ``strict``, for JSON: no text
    or bool taken as a number)."""
    fields = ParallelConfig.model_fields
    coerced: dict[str, Any] = {}
    for name, value in values.items():
        if name not in fields:
            raise SpecError(
                f"{option}: unknown knob '{name}'; knobs are {', '.join(sorted(fields))}"
            )
        adapter = TypeAdapter(fields[name].annotation)
        if name == "hierarchical_cp_sizes":
            value = _group_sizes(value)
        try:
            coerced[name] = adapter.validate_python(value, strict=strict)
        except ValidationError:
            if not strict and isinstance(value, str) and value.lower() in ("none", "null"):
                try:
                    coerced[name] = adapter.validate_python(None)
                    continue
                except ValidationError:
                    pass
            raise SpecError(f"{option}: {name}={value!r} is not a valid value for {name}") from None
    return coerced


def _group_sizes(value: Any) -> Any:
    """a2a+p2p's group sizes as a pair where written as a list (JSON: [2, 4]) or as text
    ('2x4', or '2,4' outside --fix); anything else is left for validation to refuse."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, str):
        parts = value.replace("x", ",").split(",")
        if len(parts) == 2 and all(part.strip().isdigit() for part in parts):
            return tuple(int(part) for part in parts)
    return value


def max_cp(seq_len: int) -> int:
    """The largest CP degree searched (module docstring)."""
    return max(MAX_CP, seq_len // LONG_SEQUENCE_TOKENS_PER_CP_RANK)


def _domains(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    *,
    max_mbs: int,
    profile: FrameworkProfile,
    release: str | None,
) -> dict[str, tuple[list[Any], str]]:
    """Each searched knob's domain before pinning, with the reason a value may be missing."""
    world, per_node = cluster.num_gpus, cluster.gpus_per_node
    cp_bound = max_cp(workload.seq_len)
    searched = profile.searched_cp_algorithms(release)
    domains: dict[str, tuple[list[Any], str]] = {
        "tp": (
            [d for d in divisors(per_node) if world % d == 0],
            f"tp must divide the {per_node} GPUs per node and the {world} GPUs",
        ),
        "cp": (
            [2**k for k in range(cp_bound.bit_length()) if world % 2**k == 0],
            f"cp is a power of two up to {cp_bound} (seq_len {workload.seq_len}) dividing "
            f"the {world} GPUs",
        ),
        "cp_comm_type": (
            list(searched if CP_COMM_PRICED else searched[:1]),
            f"cp_comm_type is one of {searched} under {profile.name}"
            + (f" {release}" if release else ""),
        ),
        "pp": (
            [d for d in divisors(world) if d <= min(MAX_PP, model.num_layers)],
            f"pp must divide the {world} GPUs and be at most min({MAX_PP}, num_layers)",
        ),
        "dp": (divisors(world), f"dp must divide the {world} GPUs"),
        "ep": (
            divisors(model.moe.num_experts) if model.moe is not None else [1],
            "ep must divide moe.num_experts" if model.moe is not None else "ep is 1 for dense",
        ),
        "vpp": ([None, *VPP_CHOICES], f"vpp is none or one of {VPP_CHOICES}"),
        "mbs": (
            [2**i for i in range(max_mbs.bit_length()) if 2**i <= max_mbs],
            f"mbs is a power of two up to max_mbs = {max_mbs}",
        ),
        "recompute": (list(RECOMPUTE_CHOICES), f"recompute is one of {RECOMPUTE_CHOICES}"),
    }
    for axis in ("tp", "cp", "pp", "ep"):
        if not profile.runs(axis):
            domains[axis] = ([1], f"{profile.name} runs no {axis} > 1")
    if not profile.interleaved:
        domains["vpp"] = ([None], f"{profile.name} runs no interleaved (virtual) stages")
    return domains


def _restrict(
    domains: dict[str, tuple[list[Any], str]], fixed: dict[str, Any], maxima: dict[str, Any]
) -> dict[str, list[Any]]:
    restricted: dict[str, list[Any]] = {}
    for knob, (values, reason) in domains.items():
        if knob == "cp_comm_type" and knob in fixed:  # any algorithm the spec allows
            values = [fixed[knob]]
        if knob in fixed:
            if fixed[knob] not in values:
                shown = ", ".join(str(v) for v in values)
                raise SpecError(
                    f"fixed {knob}={fixed[knob]}: no candidate can take it ({reason}: {shown})"
                )
            values = [fixed[knob]]
        if knob in maxima:
            values = [v for v in values if v is None or v <= maxima[knob]]
        restricted[knob] = values
    return restricted


def enumerate_space(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    *,
    framework: str = "megatron",
    fixed: dict[str, Any] | None = None,
    maxima: dict[str, int] | None = None,
    max_mbs: int = 8,
    deadline: float | None = None,
    framework_version: str | None = None,
    layer_spec: str = "transformer_engine",
) -> Enumeration:
    """The legal candidates, with the per-rule drop counts (see the module docstring).

    ``framework_version`` names the release the plan is for (``FrameworkProfile.versions``,
    e.g. torchtitan ``current`` or ``0.2``; None: the profile's default).
    ``layer_spec`` is Megatron's: under ``local`` the TP communication overlap is never set
    by rule (it runs on Transformer Engine's userbuffers, which the local linears lack).
    Past ``deadline`` (a ``time.perf_counter`` value) the enumeration stops, keeping the
    candidates found so far, and ``complete`` is False."""
    profile = get_profile(framework)
    release = profile.release(framework_version)
    fixed = coerce_knobs(dict(fixed or {}), option="fixed")
    sizes = fixed.get("hierarchical_cp_sizes")
    if sizes is not None:  # pinned group sizes are a2a+p2p at their product
        fixed.setdefault("cp_comm_type", "a2a+p2p")
        fixed.setdefault("cp", sizes[0] * sizes[1])
    maxima = dict(maxima or {})
    for knob, bound in maxima.items():
        if knob not in ParallelConfig.model_fields:
            raise SpecError(
                f"maxima: unknown knob '{knob}'; knobs are "
                f"{', '.join(sorted(ParallelConfig.model_fields))}"
            )
        if isinstance(bound, bool) or not isinstance(bound, int):
            raise SpecError(f"maxima: {knob}={bound!r} is not a whole number")
    mbs_bound = min(max_mbs, maxima.get("mbs", max_mbs))
    if "mbs" in fixed:
        mbs_bound = max(mbs_bound, fixed["mbs"])
    domains = _domains(
        model, cluster, workload, max_mbs=mbs_bound, profile=profile, release=release
    )
    domain = _restrict(domains, fixed, maxima)
    extra = {k: v for k, v in fixed.items() if k not in SEARCHED}
    world = cluster.num_gpus
    result = Enumeration(layouts=[], considered=0)
    ruled = {
        "overlap_grad_reduce": "grad_reduce" in profile.overlaps,
        "overlap_param_gather": "param_gather" in profile.overlaps,
    }
    overlaps_tp = "tp_comm" in profile.overlaps and layer_spec != "local"
    expert_tp = profile.runs_expert_tp_under_ep(release)
    for tp, cp, pp in itertools.product(domain["tp"], domain["cp"], domain["pp"]):
        if world % (tp * cp * pp) != 0:
            continue
        dp = world // (tp * cp * pp)
        if dp not in domain["dp"]:
            continue
        splits = stage_splits(model.num_layers, pp, profile=profile, fixed=fixed)
        if not splits:
            continue
        # expert groups stay inside a node (expert grid order etp-ep-edp-pp, etp = tp by
        # default), as the default requires, unless ep is pinned with --fix
        eps = [
            e
            for e in domain["ep"]
            if (dp * cp * tp) % e == 0 and ("ep" in fixed or e * tp <= cluster.gpus_in_node)
        ]
        for split in splits:
            accounted = any(split.get(flag) for flag in ACCOUNT_FOR_FLAGS)
            plain = pp == 1 or (
                bool(split) and not accounted and profile.uneven_stages == "ends-at-most-middle"
            )
            vpps = [v for v in domain["vpp"] if v is None] if plain else domain["vpp"]
            if accounted:  # searched, not pinned: only the vpp the slots per rank divide by
                slots = (model.num_layers + sum(split.values())) // pp
                vpps = [v for v in vpps if v is None or slots % v == 0]
            # the CP algorithm only means something with cp > 1: the default otherwise
            comms = domain["cp_comm_type"] if cp > 1 or "cp_comm_type" in fixed else ["p2p"]
            hierarchies = [
                (comm, sizes) for comm in comms for sizes in cp_hierarchies(cp, comm, fixed=fixed)
            ]
            for ep, vpp, mbs, recompute, (comm, sizes) in itertools.product(
                eps, vpps, domain["mbs"], domain["recompute"], hierarchies
            ):
                fields: dict[str, Any] = {
                    "tp": tp,
                    "cp": cp,
                    "pp": pp,
                    "dp": dp,
                    "ep": ep,
                    "vpp": vpp,
                    "mbs": mbs,
                    "recompute": recompute,
                    "cp_comm_type": comm,
                    "hierarchical_cp_sizes": sizes,
                    **split,
                    **ruled,
                    **profile.sharding,
                }
                if tp > 1 and profile.runs("sequence_parallel"):
                    fields.update(sequence_parallel=True, tp_comm_overlap=overlaps_tp)
                if ep > 1 and tp > 1 and not expert_tp:
                    fields["etp"] = 1
                if recompute == "full":
                    fields.update(recompute_method="uniform", recompute_num_layers=1)
                fields.update(extra)
                _follow_pins(fields, extra)
                if maxima and any(
                    isinstance(fields.get(k), int) and fields[k] > bound
                    for k, bound in maxima.items()
                ):
                    continue
                result.considered += 1
                _check(result, fields, model=model, cluster=cluster, workload=workload,
                       profile=profile, release=release)  # fmt: skip
                if (
                    deadline is not None
                    and result.considered % DEADLINE_CHECK_EVERY == 0
                    and time.perf_counter() > deadline
                ):
                    result.complete = False
                    return result
    return result


def cp_hierarchies(cp: int, comm: str, *, fixed: dict[str, Any]) -> list[tuple[int, int] | None]:
    """The (a2a, p2p) group sizes searched for ``comm`` at ``cp`` ([None] for the flat
    algorithms): the pinned sizes, or each split A x cp/A with 1 < A < cp; the splits
    with A = 1 or A = cp (p2p and a2a under another name) too where a2a+p2p is pinned."""
    if comm != "a2a+p2p":
        return [None]
    if "hierarchical_cp_sizes" in fixed:
        return [fixed["hierarchical_cp_sizes"]]
    pinned = fixed.get("cp_comm_type") == "a2a+p2p"
    return [(a2a, cp // a2a) for a2a in divisors(cp) if pinned or 1 < a2a < cp]


def stage_splits(
    num_layers: int, pp: int, *, profile: FrameworkProfile, fixed: dict[str, Any]
) -> list[dict[str, Any]]:
    """The layer splits searched on ``pp`` stages, each as the fields that set it ({}: the
    even split, or the account-for split the user pinned); [] when none is legal.

    Megatron-LM takes one way of splitting unevenly (``validate_args`` refuses first/last
    stage sizes with the account-for flags), so pinned account-for flags are the split:
    no first/last sizes are added, and the rules drop the pp their layer slots do not
    divide. Unpinned, where the layers do not divide by pp, the balanced first/last split
    and each account-for split whose slots divide evenly are alternatives."""
    if any(fixed.get(flag) for flag in ACCOUNT_FOR_FLAGS) or num_layers % pp == 0:
        return [{}]
    splits = []
    ends = stage_split(num_layers, pp)
    if ends is not None and profile.uneven_stages != "none":
        splits.append(ends)
    if profile.name in ACCOUNTS_FOR and not any(knob in fixed for knob in SPLIT_KNOBS):
        splits.extend(accounted_splits(num_layers, pp))
    return splits


def accounted_splits(num_layers: int, pp: int) -> list[dict[str, bool]]:
    """The account-for flag settings under which ``num_layers`` plus the accounted
    embedding and/or output layer divide evenly over ``pp`` stages, every stage keeping at
    least one transformer layer (Llama 3 405B on 16 stages: 126 + 2 = 16 x 8 slots, 7
    layers on the first and last stage, 8 on the others)."""
    splits = []
    for embedding, loss in ((True, True), (True, False), (False, True)):
        slots = num_layers + embedding + loss
        if pp >= 2 and slots % pp == 0 and slots // pp >= 2:
            splits.append(dict(zip(ACCOUNT_FOR_FLAGS, (embedding, loss), strict=True)))
    return splits


def stage_split(num_layers: int, pp: int) -> dict[str, int] | None:
    """{} for an even split; first/last stage sizes for the balanced uneven one; else None."""
    if num_layers % pp == 0:
        return {}
    if pp < 3:
        return None
    middle = -(-num_layers // pp)
    rest = num_layers - (pp - 2) * middle
    if rest < 2:
        return None
    # an odd remainder puts the extra layer on the first stage: the last one also runs
    # the output layer and the loss, usually the heavier end
    return {"first_stage_layers": rest - rest // 2, "last_stage_layers": rest // 2}


def _check(
    result: Enumeration,
    fields: dict[str, Any],
    *,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    profile: FrameworkProfile,
    release: str | None,
) -> None:
    problems: list[LayoutViolation]
    try:
        layout = ParallelConfig(**fields)
    except ValidationError as error:
        problems = _own_violations(error)
    else:
        problems = layout_violations(model=model, cluster=cluster, workload=workload, layout=layout)
        if not problems:
            query = LayoutQuery(
                model=model, layout=layout, seq_len=workload.seq_len,
                precision=workload.precision, release=release,
            )  # fmt: skip
            refusals = layout_refusals(profile, query)
            if not refusals:
                result.layouts.append(layout)
                return
            at = f" {release}" if release else ""
            problems = [
                LayoutViolation(
                    Rule.FRAMEWORK_CANNOT_EXPRESS, f"{profile.name}{at}: " + "; ".join(refusals)
                )
            ]
    for problem in problems:
        result.dropped[problem.rule] += 1
        result.examples.setdefault(problem.rule, problem.message)


def _follow_pins(fields: dict[str, Any], pinned: dict[str, Any]) -> None:
    """Turn off an overlap set by rule whose condition a pinned knob removed (sequence
    parallelism, gradient-reduce overlap, optimizer sharding), unless it is pinned too."""
    if not fields.get("sequence_parallel") and "tp_comm_overlap" not in pinned:
        fields["tp_comm_overlap"] = False
    shards = bool(fields.get("distributed_optimizer")) or fields.get("zero_stage", 0) >= 1
    if "overlap_param_gather" not in pinned and not (shards and fields.get("overlap_grad_reduce")):
        fields["overlap_param_gather"] = False


def _own_violations(error: ValidationError) -> list[LayoutViolation]:
    """The typed violations a ``ParallelConfig`` validation error carries.

    The candidate fields are built from valid domains, so the only errors are the layout's
    own rules (``LayoutRuleError``); anything else is a bug and is raised again.
    """
    violations: list[LayoutViolation] = []
    for item in error.errors():
        cause = item.get("ctx", {}).get("error")
        if not isinstance(cause, LayoutRuleError):
            raise error
        violations.extend(cause.violations)
    return violations


def enumerate_layouts(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: WorkloadSpec,
    *,
    framework: str = "megatron",
    fixed: dict[str, Any] | None = None,
    maxima: dict[str, int] | None = None,
    max_mbs: int = 8,
    framework_version: str | None = None,
) -> list[ParallelConfig]:
    """Every candidate layout that passes the rules, in a deterministic order."""
    return enumerate_space(
        model,
        cluster,
        workload,
        framework=framework,
        fixed=fixed,
        maxima=maxima,
        max_mbs=max_mbs,
        framework_version=framework_version,
    ).layouts
