"""Output helpers shared by the commands: JSON on stdout, rich tables on a console."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

PIPED_WIDTH = 160
"""Table width when stdout is not a terminal (rich would fall back to 80 and cut names)."""


def console() -> Console:
    """A console on the current stdout: the terminal's width, or a wide one when piped."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else PIPED_WIDTH)


def print_json(data: Any) -> None:
    """Machine-readable output: one JSON document on stdout and nothing else."""
    print(json.dumps(data, indent=2, sort_keys=False))


def human_count(value: float) -> str:
    """12_879_925_248 -> '12.88B'."""
    for threshold, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= threshold:
            return f"{value / threshold:.2f}{suffix}"
    return f"{value:.0f}"
