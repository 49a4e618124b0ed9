"""Megatron-Core's hybrid context parallel, for a plan that carries a ``scattering`` block.

``autopar plan --length-dist`` attaches to the best plan whether scattering variable-length
sequences over SP groups of different sizes beats the best static degree. Megatron-LM's
nearest runtime is Megatron-Core's hybrid context parallel (``--hybrid-context-parallel``:
its ``BalancedCPScheduler`` gives every packed sub-sample its own CP size out of the
dp x cp ranks), which as documented needs no pipeline parallelism and the per-token loss
(``--calculate-per-token-loss``), and does not run with multi-latent attention
(``megatron/core/transformer/multi_latent_attention.py`` raises). Where scattering wins and
none of that stands in the way, the arguments ask for it; otherwise the plan's static CP
stays and the launch script says why, in a comment on ``--context-parallel-size``.

``--max-seqlen-per-dp-cp-rank`` is ``seq_len / cp``, the starting point Megatron-Core's
``ModelParallelConfig.max_seqlen_per_dp_cp_rank`` docstring suggests, and the tokens per
rank this plan's memory estimate covers.
"""

from __future__ import annotations

from planner.emit.base import EmitError, EmitInput
from planner.emit.megatron._flags import Item

PP_NEEDED = "pp > 1: Megatron-Core's hybrid context parallel needs pp = 1"
MLA_UNSUPPORTED = "MLA: Megatron-Core's hybrid context parallel does not run multi-latent attention"


def hybrid_cp_blocker(plan: EmitInput) -> str | None:
    """Why this layout cannot run Megatron-Core's hybrid context parallel (None: it can)."""
    if plan.layout.pp > 1:
        return PP_NEEDED
    if plan.model.mla is not None:
        return MLA_UNSUPPORTED
    return None


def uses_hybrid_cp(plan: EmitInput) -> bool:
    """Scattering wins on the plan's lengths and the layout allows hybrid context parallel."""
    return plan.scattering is not None and plan.scattering.wins and hybrid_cp_blocker(plan) is None


def max_seqlen_per_rank(plan: EmitInput) -> int:
    return plan.seq_len // plan.layout.cp


def static_cp_note(plan: EmitInput) -> str:
    """The comment on ``--context-parallel-size`` of a plan with a scattering block that
    keeps its static CP ("" without a block, or when hybrid CP is used)."""
    summary = plan.scattering
    if summary is None or uses_hybrid_cp(plan):
        return ""
    if summary.decided_by == "search" and not summary.wins:  # its reason names static cp
        return summary.reason
    if not summary.wins:
        return f"static cp {plan.layout.cp}: scattering is {summary.reason}"
    return (
        f"static cp {plan.layout.cp}, although scattering is predicted "
        f"{summary.speedup_over_static:.2f}x faster than the best static degree: "
        f"{hybrid_cp_blocker(plan)}"
    )


def hybrid_cp_items(plan: EmitInput) -> list[Item]:
    """The hybrid-CP arguments where :func:`uses_hybrid_cp`, else none."""
    if not uses_hybrid_cp(plan):
        return []
    assert plan.scattering is not None
    sizes = ", ".join(map(str, plan.scattering.sp_sizes))
    return [
        (
            "--hybrid-context-parallel",
            (),
            f"scattering over SP groups of {sizes} GPUs is predicted "
            f"{plan.scattering.speedup_over_static:.2f}x faster than the best static degree\n"
            "on the plan's lengths; Megatron-Core gives each packed sub-sample its own CP size",
        ),
        (
            "--max-seqlen-per-dp-cp-rank",
            (str(max_seqlen_per_rank(plan)),),
            f"seq-length / cp = {plan.seq_len} / {plan.layout.cp}",
        ),
        ("--calculate-per-token-loss", (), "Megatron-Core's hybrid context parallel needs it"),
    ]


def read_hybrid_cp(given: dict[str, tuple[str, ...]]) -> int | None:
    """``--max-seqlen-per-dp-cp-rank`` when ``--hybrid-context-parallel`` is given (None
    without it), once the flags it needs are there; else ``EmitError`` naming them."""
    if "--hybrid-context-parallel" not in given:
        if "--max-seqlen-per-dp-cp-rank" in given:
            raise EmitError(
                "Megatron arguments: --max-seqlen-per-dp-cp-rank is only read with "
                "--hybrid-context-parallel"
            )
        return None
    if "--max-seqlen-per-dp-cp-rank" not in given:
        raise EmitError(
            "Megatron arguments: --hybrid-context-parallel needs --max-seqlen-per-dp-cp-rank"
        )
    if "--calculate-per-token-loss" not in given:
        raise EmitError(
            "Megatron arguments: --hybrid-context-parallel needs --calculate-per-token-loss"
        )
    pp = given.get("--pipeline-model-parallel-size", ("1",))[0]
    if pp != "1":
        raise EmitError(f"Megatron arguments: --hybrid-context-parallel with {PP_NEEDED}")
    return int(given["--max-seqlen-per-dp-cp-rank"][0])
