"""What an emitter without per-sequence parallelism says about a plan's length pricing.

A plan made with ``autopar plan --length-dist | --seq-lengths`` carries a ``scattering``
block. Megatron-LM can run it as Megatron-Core's hybrid context parallel (its emitter asks
for that where the plan's verdict says so). DeepSpeed and torchtitan have no per-sequence
CP size, so their emitters write the plan's static layout and say so: in a comment of the
launch script and in the notes, never silently. The plan's step time assumes documents
packed into samples of ``seq_len`` tokens with attention inside each document only
(``planner.search.length_pricing``); the note says how to get that masking in the
framework, since attention over the whole packed sample costs more.
"""

from __future__ import annotations

import textwrap

from planner.emit.base import EmitInput

COMMENT_WIDTH = 88


def lengths_note(plan: EmitInput, *, why: str, masking: str) -> str | None:
    """The note for a plan with a ``scattering`` block (None without one). ``why``: why
    the framework runs one CP degree for every sequence; ``masking``: how it masks
    attention to each document."""
    summary = plan.scattering
    if summary is None:
        return None
    text = (
        f"Variable sequence lengths ({summary.lengths_source}): this launch runs the plan's "
        f"static layout, cp {plan.layout.cp} for every sequence, documents packed into "
        f"samples of {plan.seq_len} tokens, because {why}."
    )
    if summary.wins:
        text += (
            f" For this layout the plan predicts a CP size per sequence "
            f"{summary.speedup_over_static:.2f}x faster (Megatron-Core's hybrid context "
            "parallel): emit megatron to run that."
        )
    elif why not in summary.reason:
        text += f" The plan's verdict: {summary.reason}."
    return (
        text + " The predicted step time assumes attention inside each document only: "
        f"{masking}; attending across the whole packed sample costs more."
    )


def comment_lines(note: str | None) -> list[str]:
    """``note`` as ``# `` comment lines (none without a note)."""
    if note is None:
        return []
    return ["#", *(f"# {line}" for line in textwrap.wrap(note, width=COMMENT_WIDTH - 2))]
