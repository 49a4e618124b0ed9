"""The recompute/offload choice of ``autopar memplan --budget-gib`` as each framework's own
setting: the nearest one the framework can express that still fits the budget.

The budget's choice (``planner.memplan.budget``) is per layer and per pipeline stage; a
framework takes one setting for every stage, and only some shapes of it:

* ``megatron`` (Megatron-LM with megatron-core 0.16.1): ``--recompute-granularity full
  --recompute-method block --recompute-num-layers N`` recomputes the first N layers of
  each model chunk of every stage (``TransformerBlock._checkpointed_forward``); or
  ``--cpu-offloading-num-layers N`` offloads the activations of the model's first N layers
  to the host (``ModelParallelConfig.cpu_offloading_num_layers``, through Transformer
  Engine's CPU offload), which ``TransformerConfig.__post_init__`` refuses with pipeline
  parallelism, with recomputation and for N >= num_layers; so no mix of the two.
  (Its fine-grained activation offloading, ``--offload-modules``, offloads module inputs
  of every layer: not a per-layer choice, not used.)
* ``deepspeed``: every layer or none (``pipeline.activation_checkpoint_interval`` 1 with
  pipeline parallelism; otherwise the ``activation_checkpointing`` block and the model
  code's checkpoint calls); its ``cpu_checkpointing`` moves only the checkpointed layer
  inputs, which the budget keeps on the GPU, so it stands for no offload choice.
* ``torchtitan-toml`` (0.2.2): ``mode = "full"`` (every block), or ``mode = "selective"``
  with ``selective_ac_option = "k"``: every k-th block a rank builds, counted over its
  model chunks in order (``_apply_layer_sac``'s ``_layer_sac_count % k == 0``); no
  activation offload.
* ``torchtitan`` (the current Python recipe): ``FullAC`` or none (its ``SelectiveAC`` is
  op-level only).

Every setting a framework can express is priced on every stage with the budget's own
model (``BudgetChoice.evaluate``: the peak at each trace event, recompute and exposed
transfer time); the one with the least added time (the largest over the stages) that fits
every stage is taken. Recomputing a layer frees at least what offloading it frees (an
offload holds the group one event longer at each end), so where the budget's choice fits
at all, recomputing every layer does too: a fitting setting exists for every framework.
``mapped`` says how the setting differs from the per-layer choice, and why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from planner.cost.memory import gib, virtual_stages
from planner.memplan.budget import BudgetChoice
from planner.specs.layout import ParallelConfig
from planner.specs.model import ModelSpec
from solvers import Choice

EMITTERS = ("megatron", "deepspeed", "torchtitan", "torchtitan-toml")


class FrameworkSetting(BaseModel):
    """One framework's recompute/offload setting for the whole pipeline."""

    model_config = ConfigDict(frozen=True)

    emitter: str
    """The emitter that writes it: megatron | deepspeed | torchtitan | torchtitan-toml."""
    recompute: Literal["none", "full"]
    recompute_method: Literal["block"] | None = None
    recompute_num_layers: int | None = None
    offload_layers: int = 0
    """Megatron's ``--cpu-offloading-num-layers``: the model's first N layers offloaded."""
    every_nth_layer: int | None = None
    """torchtitan 0.2.2's layer-wise ``selective_ac_option``: every k-th block recomputed."""
    flags: str
    """The setting in the framework's own words."""
    peak_gib: float
    """The largest peak over the stages priced, GiB."""
    added_time_s: float
    """The largest added time per step over the stages priced."""
    fits: bool
    mapped: str | None = None
    """How it differs from the per-layer choice, and why; None where it is that choice."""

    def layout(self, layout: ParallelConfig) -> ParallelConfig:
        """``layout`` with this setting's recomputation (every layer for ``every_nth_layer``
        and ``full``: the layout knows no every-k-th form, and it is the safer side)."""
        return layout.model_copy(
            update={
                "recompute": self.recompute,
                "recompute_method": self.recompute_method,
                "recompute_num_layers": self.recompute_num_layers,
            }
        )


@dataclass(frozen=True)
class _Candidate:
    fields: dict[str, object]
    flags: str
    assign: Callable[[list[list[int]]], dict[int, Choice]]
    """The choice of each layer of a rank, from the rank's chunks' layer lists."""


def _none() -> _Candidate:
    return _Candidate({"recompute": "none"}, "no recomputation, no offload", lambda _: {})


def _every_layer(flags: str) -> _Candidate:
    return _Candidate(
        {"recompute": "full"},
        flags,
        lambda chunks: {k: "recompute" for chunk in chunks for k in chunk},
    )


def _block(count: int, longest: int) -> _Candidate:
    return _Candidate(
        {"recompute": "full", "recompute_method": "block", "recompute_num_layers": count},
        f"--recompute-granularity full --recompute-method block --recompute-num-layers {count}"
        + (" (every layer)" if count >= longest else ""),
        lambda chunks: {k: "recompute" for chunk in chunks for k in chunk[:count]},
    )


def _offload(count: int) -> _Candidate:
    return _Candidate(
        {"recompute": "none", "offload_layers": count},
        f"--cpu-offloading-num-layers {count}",
        lambda chunks: {k: "offload" for chunk in chunks for k in chunk if k < count},
    )


def _every_nth(k: int) -> _Candidate:
    def assign(chunks: list[list[int]]) -> dict[int, Choice]:
        layers = [layer for chunk in chunks for layer in chunk]
        return {layer: "recompute" for p, layer in enumerate(layers, 1) if p % k == 0}

    return _Candidate(
        {"recompute": "full", "every_nth_layer": k},
        f'[activation_checkpoint] mode = "selective", selective_ac_option = "{k}"',
        assign,
    )


def candidates(emitter: str, *, model: ModelSpec, layout: ParallelConfig) -> list[_Candidate]:
    """Every setting ``emitter`` can express for this layout, least recomputation first."""
    longest = max(len(chunk) for chunk in virtual_stages(model, layout))
    if emitter == "megatron":
        options = [_none(), *(_block(n, longest) for n in range(1, longest + 1))]
        if layout.pp == 1:
            options.extend(_offload(n) for n in range(1, model.num_layers))
        return options
    if emitter == "deepspeed":
        return [_none(), _every_layer("activation checkpointing of every layer")]
    if emitter == "torchtitan-toml":
        per_rank = longest * (layout.vpp or 1)
        return [
            _none(),
            *(_every_nth(k) for k in range(per_rank, 1, -1)),
            _every_layer('[activation_checkpoint] mode = "full"'),
        ]
    if emitter == "torchtitan":
        return [_none(), _every_layer("activation_checkpoint=FullAC.Config()")]
    raise ValueError(f"unknown emitter '{emitter}'; known: {', '.join(EMITTERS)}")


def rank_chunks(model: ModelSpec, layout: ParallelConfig, rank: int) -> list[list[int]]:
    """Layer ids of each model chunk of pipeline rank ``rank``, in the order it builds them."""
    stages = virtual_stages(model, layout)
    return [stages[c * layout.pp + rank] for c in range(layout.vpp or 1)]


def framework_setting(
    emitter: str,
    *,
    model: ModelSpec,
    layout: ParallelConfig,
    choices: Sequence[tuple[int, BudgetChoice]],
    budget_bytes: float,
) -> FrameworkSetting | None:
    """The fitting setting of ``emitter`` with the least added time over the priced stages
    ``choices`` (rank, the budget's choice); the most memory-saving one, ``fits`` False,
    where none fits; None where some stage has no choice that fits at all."""
    solved = [(rank, c) for rank, c in choices if c.problem is not None]
    if not solved or len(solved) < len(choices):
        return None
    priced = []
    for order, candidate in enumerate(candidates(emitter, model=model, layout=layout)):
        costs = []
        for rank, choice in solved:
            assignment = candidate.assign(rank_chunks(model, layout, rank))
            cost = choice.evaluate(lambda k, a=assignment: a.get(k, "keep"))  # type: ignore[misc]
            if cost is None:
                break
            costs.append(cost)
        else:
            peak = max(p for p, _ in costs)
            added = max(a for _, a in costs)
            priced.append((peak <= budget_bytes, added, order, peak, candidate))
    fitting = [p for p in priced if p[0]]
    fits, added, _, peak, best = (
        min(fitting, key=lambda p: (p[1], p[2]))
        if fitting
        else min(priced, key=lambda p: (p[3], p[1], p[2]))
    )
    chosen_same = all(
        best.assign(rank_chunks(model, layout, rank)) == _solver_assignment(choice)
        for rank, choice in solved
    )
    return FrameworkSetting(
        emitter=emitter,
        flags=best.flags,
        peak_gib=gib(peak),
        added_time_s=round(added, 4),
        fits=fits,
        mapped=None if chosen_same else _mapped_note(emitter, solved),
        **best.fields,  # type: ignore[arg-type]
    )


def _solver_assignment(choice: BudgetChoice) -> dict[int, Choice]:
    return {k: "recompute" for k in choice.recompute_layers} | {
        k: "offload" for k in choice.offload_layers
    }


def _mapped_note(emitter: str, solved: Sequence[tuple[int, BudgetChoice]]) -> str:
    chosen = "; ".join(
        f"stage {rank}: recompute {ranges(c.recompute_layers) or 'none'}, "
        f"offload {ranges(c.offload_layers) or 'none'}"
        for rank, c in solved
    )
    offloads = any(c.offload_layers for _, c in solved)
    why = {
        "megatron": "one block count for every stage and chunk"
        + (
            "; activation offload only without pipeline parallelism and without recomputation"
            " (megatron-core 0.16.1 TransformerConfig)"
            if offloads
            else ""
        ),
        "deepspeed": "every layer or none"
        + ("; no per-layer activation offload" if offloads else ""),
        "torchtitan-toml": "every block, or every k-th"
        + ("; no activation offload" if offloads else ""),
        "torchtitan": "every block or none" + ("; no activation offload" if offloads else ""),
    }[emitter]
    return f"chosen per layer ({chosen}); {emitter} sets {why}; this is the nearest that fits"


def ranges(values: Sequence[int]) -> str:
    """(0, 1, 2, 5) -> '0-2, 5'; '' for none."""
    spans: list[tuple[int, int]] = []
    for value in sorted(values):
        if spans and value == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], value)
        else:
            spans.append((value, value))
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
