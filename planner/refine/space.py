"""The Optuna search space: the knobs around the solver's plans that the cost model prices.

Every trial starts from one of the solver's plans and changes the knobs the solver fixes
or samples coarsely. Parameters (Optuna names; each has one static domain, so the TPE
sampler may share what it learns between trials of the same shape):

  base                     which solver plan's degrees and sharding to keep (tp, cp, pp,
                           dp, ep, etp, ZeRO stage / distributed optimizer, sequence
                           parallel, CP algorithm, overlaps); plans that share them are
                           one base
  mbs.dp{D}                micro-batch size: divisors of global batch / D up to
                           max(8, 4 x the largest seed micro-batch) (the solver: powers of
                           two up to 8)
  vpp.pp{P}                virtual stages per pipeline rank, 1 = plain 1F1B (the solver:
                           none, 2, 3, 4): every v with at least one legal stage split
  split.pp{P}.vpp{V}       layers of the first and last pipeline stages, "F-L", or "even":
                           F and L within [per / 2, 3 per / 2] (per = layers / P), multiples
                           of V, the middle stages sharing the rest evenly in multiples of V
                           (the solver: even, or its one balanced uneven split)
  recompute                none | selective | full
  recompute_method         uniform | block (full only; the solver: uniform, and block
                           from its stage-partition model for Megatron's leading pipelines)
  recompute_num_layers     1 .. layers per virtual stage (full only; the solver: 1)
  offload_optimizer_fraction.{any,whole}
                           share of the optimizer step on the host: 0, 1/4, 1/2, 3/4, 1
                           (Megatron with the distributed optimizer; DeepSpeed ZeRO-3),
                           or 0 | 1 (DeepSpeed ZeRO-1/2: a partial ratio needs stage 3);
                           priced from the profile's host section (the solver: 0)

A parameter is suggested only where it applies (define-by-run), and only where the
framework can run it: :func:`framework_knobs` reads the framework's profile
(``planner.frameworks``), the same declaration the search and ``planner.emit`` read:
DeepSpeed has no interleaved or uneven pipeline stages and checkpoints every N layers;
torchtitan checkpoints each block (no recompute groups or first-N) and splits unevenly
only without vpp and with the end stages no larger than the middle ones. A trial the
framework's launch files cannot express is illegal (``planner.refine.objective``). Knobs
not listed keep the base plan's value.

Not refined, and why (``NOT_REFINED``): knobs the exact search already settles over their
whole domain, where trials could only repeat it, and knobs the cost model does not price,
where a search would only echo the model's blind spot. The refinement covers what the
exact search does not enumerate: micro-batch sizes that are not powers of two, deeper
virtual pipelines, every stage split, recompute groups and blocks, optimizer offload.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from planner.frameworks import FrameworkProfile, get_profile
from planner.refine.problem import RefineProblem

NOT_REFINED: dict[str, str] = {
    "cp_comm_type": (
        "the exact search tabulates every CP algorithm the framework runs at the release "
        "planned for, a2a+p2p with each split of its group sizes (planner.search.candidates)"
    ),
    "tp_comm_overlap, overlap_grad_reduce, overlap_param_gather": (
        "set on by the exact search wherever the framework runs them: each is never slower "
        "in the cost model and holds no memory of its own (planner.search.candidates)"
    ),
    "gradient bucket size": (
        "not a ParallelConfig field and not in the cost model (an overlapped gradient "
        "reduce is exposed as one layer's worth)"
    ),
    "tp, cp, pp, dp, ep, ZeRO stage": (
        "the solver's choice: each trial keeps one solver plan's degrees (parameter 'base')"
    ),
}

KNOBS = (
    "mbs",
    "vpp",
    "stage_split",
    "recompute",
    "recompute_method",
    "recompute_num_layers",
    "offload_optimizer_fraction",
)


def framework_knobs(profile: FrameworkProfile) -> frozenset[str]:
    """The knobs refined under ``profile``: its ``refined_knobs`` that its capabilities allow."""
    allowed = {
        "mbs": True,
        "vpp": profile.runs("pp") and profile.interleaved,
        "stage_split": profile.runs("pp") and profile.uneven_stages != "none",
        "recompute": True,
        "recompute_method": len(profile.recompute_methods) > 1,
        "recompute_num_layers": bool(profile.recompute_methods),
        "offload_optimizer_fraction": profile.offload != "none",
    }
    return frozenset(knob for knob in KNOBS if knob in profile.refined_knobs and allowed[knob])


SEARCHED_FIELDS = (
    "mbs",
    "vpp",
    "first_stage_layers",
    "last_stage_layers",
    "recompute",
    "recompute_method",
    "recompute_num_layers",
    "offload_optimizer_fraction",
)
"""``ParallelConfig`` fields a trial may set; every other field comes from its base."""
OFFLOAD_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Shares of the optimizer step on the host a trial may pick where any share runs."""
MIN_MBS_BOUND = 8
EVEN = "even"


@dataclass(frozen=True)
class Choice:
    """One Optuna parameter: a categorical domain, or an integer range when ``low`` is set."""

    name: str
    choices: tuple[Any, ...] = ()
    low: int | None = None
    high: int | None = None


Pick = Callable[[Choice, Any], Any]
"""(parameter, the base layout's value in Optuna's encoding) -> the value to use."""


class Space:
    """The search space of one problem: bases from the seeds, domains per shape."""

    def __init__(self, problem: RefineProblem) -> None:
        self.problem = problem
        self.profile = get_profile(problem.framework)
        self.knobs = framework_knobs(self.profile)
        self.searched = tuple(f for f in SEARCHED_FIELDS if _field_knob(f) in self.knobs)
        self.bases: list[dict[str, Any]] = []
        self.seed_base: list[int] = []
        for seed in problem.seeds:
            key = self._structure(seed.layout)
            found = next((i for i, b in enumerate(self.bases) if self._structure(b) == key), None)
            if found is None:
                self.bases.append(dict(seed.layout))
                found = len(self.bases) - 1
            self.seed_base.append(found)
        batch = problem.workload.sequences_per_step
        bound = max(MIN_MBS_BOUND, 4 * max(s.layout["mbs"] for s in problem.seeds))
        self._mbs: dict[int, tuple[int, ...]] = {}
        for base in self.bases:
            per_replica = batch // base["dp"]
            self._mbs[base["dp"]] = tuple(
                d for d in range(1, min(bound, per_replica) + 1) if per_replica % d == 0
            )

    # -- what a trial or a seed chooses ---------------------------------------------------

    def assign(self, base: int, pick: Pick) -> dict[str, Any]:
        """The layout fields of base ``base`` after ``pick`` chose every applicable knob."""
        layout = dict(self.bases[base])
        fields: dict[str, Any] = {}
        knobs, layers = self.knobs, self.problem.model.num_layers
        pp, dp = layout["pp"], layout["dp"]
        if "mbs" in knobs:
            fields["mbs"] = pick(Choice(f"mbs.dp{dp}", self._mbs[dp]), layout["mbs"])
        vpp = layout["vpp"] or 1
        if pp > 1 and "vpp" in knobs:
            vpp = pick(Choice(f"vpp.pp{pp}", self._vpp_choices(pp)), vpp)
            fields["vpp"] = vpp if vpp > 1 else None
        if pp > 1 and "stage_split" in knobs:
            split = pick(
                Choice(f"split.pp{pp}.vpp{vpp}", self._split_choices(pp, vpp)),
                _encode_split(layout),
            )
            fields["first_stage_layers"], fields["last_stage_layers"] = decode_split(split)
        if "recompute" in knobs:
            recompute = pick(
                Choice("recompute", ("none", "selective", "full")), layout["recompute"]
            )
            fields["recompute"] = recompute
            fields["recompute_method"] = fields["recompute_num_layers"] = None
            if recompute == "full":
                fields["recompute_method"], fields["recompute_num_layers"] = "uniform", 1
                if "recompute_method" in knobs:
                    fields["recompute_method"] = pick(
                        Choice("recompute_method", ("uniform", "block")),
                        layout["recompute_method"] or "uniform",
                    )
                if "recompute_num_layers" in knobs:
                    split = (fields.get("first_stage_layers"), fields.get("last_stage_layers"))
                    per_chunk = _max_stage_layers(layers, pp, split) // vpp
                    fields["recompute_num_layers"] = pick(
                        Choice("recompute_num_layers", low=1, high=max(1, per_chunk)),
                        layout["recompute_num_layers"] or 1,
                    )
        offload = self._offload_choices(layout)
        if offload:
            name = "offload_optimizer_fraction." + ("any" if len(offload) > 2 else "whole")
            fields["offload_optimizer_fraction"] = pick(
                Choice(name, offload), layout["offload_optimizer_fraction"]
            )
        layout.update(fields)
        return layout

    def _offload_choices(self, layout: dict[str, Any]) -> tuple[float, ...]:
        """Offload shares the framework runs for this base (``planner.emit``'s rules)."""
        if "offload_optimizer_fraction" not in self.knobs:
            return ()
        if self.profile.offload == "distributed-optimizer":
            return OFFLOAD_FRACTIONS if layout["distributed_optimizer"] else ()
        stage = layout["zero_stage"]
        return OFFLOAD_FRACTIONS if stage == 3 else (0.0, 1.0) if stage >= 1 else ()

    def seed_params(self, index: int) -> dict[str, Any]:
        """The Optuna parameters that rebuild seed ``index`` exactly (for ``enqueue_trial``)."""
        base = self.seed_base[index]
        target = self.problem.seeds[index].layout
        params: dict[str, Any] = {"base": base}

        def pick(choice: Choice, _base_value: Any) -> Any:
            value = _seed_value(choice, target)
            params[choice.name] = value
            return value

        rebuilt = self.assign(base, pick)
        assert rebuilt == target, f"seed {index} is not reproducible: {rebuilt} != {target}"
        return params

    def describe(self) -> dict[str, list[Any]]:
        """Every parameter's domain (integer ranges as [low, high]), for the report."""
        found: dict[str, list[Any]] = {"base": list(range(len(self.bases)))}

        def pick(choice: Choice, base_value: Any) -> Any:
            domain = [choice.low, choice.high] if choice.low is not None else list(choice.choices)
            found.setdefault(choice.name, domain)
            return base_value

        for base in range(len(self.bases)):
            self.assign(base, pick)
        if "stage_split" in self.knobs:  # every split domain, not only the bases' vpp
            for pp in sorted({b["pp"] for b in self.bases if b["pp"] > 1}):
                for vpp in found.get(f"vpp.pp{pp}", [self._base_vpp(pp)]):
                    found.setdefault(f"split.pp{pp}.vpp{vpp}", list(self._split_choices(pp, vpp)))
        return found

    def _base_vpp(self, pp: int) -> int:
        return next(b["vpp"] or 1 for b in self.bases if b["pp"] == pp)

    # -- domains --------------------------------------------------------------------------

    def _structure(self, layout: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            (key, value) for key, value in sorted(layout.items()) if key not in self.searched
        )

    def _vpp_choices(self, pp: int) -> tuple[int, ...]:
        layers = self.problem.model.num_layers
        most = max(1, math.ceil(layers / pp))
        choices = [v for v in range(1, most + 1) if v == 1 or self._split_choices(pp, v)]
        for seed in self.problem.seeds:
            if seed.layout["pp"] == pp and (seed.layout["vpp"] or 1) not in choices:
                choices.append(seed.layout["vpp"] or 1)
        return tuple(sorted(choices))

    def _split_choices(self, pp: int, vpp: int) -> tuple[str, ...]:
        layers, middle_stages = self.problem.model.num_layers, pp - 2
        choices: list[str] = []
        if layers % pp == 0 and (layers // pp) % vpp == 0:
            choices.append(EVEN)
        per = layers / pp
        low, high = max(vpp, math.floor(per / 2)), math.ceil(1.5 * per)
        ends = [n for n in range(low, high + 1) if n % vpp == 0]
        ends_at_most_middle = self.profile.uneven_stages == "ends-at-most-middle"
        for first in ends:
            for last in ends:
                rest = layers - first - last
                if middle_stages == 0:
                    if rest != 0:
                        continue
                    middle = None
                elif rest < middle_stages or rest % middle_stages or (rest // middle_stages) % vpp:
                    continue
                else:
                    middle = rest // middle_stages
                if first == last == layers / pp and middle in (None, first):
                    continue  # the even split, listed once as "even"
                if ends_at_most_middle and (vpp > 1 or middle is None or max(first, last) > middle):
                    continue
                choices.append(f"{first}-{last}")
        for seed in self.problem.seeds:
            layout = seed.layout
            if layout["pp"] == pp and (layout["vpp"] or 1) == vpp:
                encoded = _encode_split(layout)
                if encoded not in choices:
                    choices.append(encoded)
        return tuple(choices)


def _field_knob(field: str) -> str:
    return "stage_split" if field in ("first_stage_layers", "last_stage_layers") else field


def _encode_split(layout: dict[str, Any]) -> str:
    first, last = layout.get("first_stage_layers"), layout.get("last_stage_layers")
    if first is None and last is None:
        return EVEN
    return f"{first}-{last}"


def decode_split(split: str) -> tuple[int | None, int | None]:
    if split == EVEN:
        return None, None
    first, last = split.split("-")
    return int(first), int(last)


def _max_stage_layers(layers: int, pp: int, split: tuple[int | None, int | None]) -> int:
    first, last = split
    if first is None or last is None:
        return math.ceil(layers / pp)
    middle = (layers - first - last) // (pp - 2) if pp > 2 else 0
    return max(first, last, middle)


def _seed_value(choice: Choice, target: dict[str, Any]) -> Any:
    """The value of ``choice``'s parameter that reproduces the seed layout ``target``."""
    name = choice.name
    if name.startswith("mbs."):
        return target["mbs"]
    if name.startswith("vpp."):
        return target["vpp"] or 1
    if name.startswith("split."):
        return _encode_split(target)
    if name.startswith("offload_optimizer_fraction."):
        return target["offload_optimizer_fraction"]
    return target[name]
