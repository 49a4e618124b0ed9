"""``python -m planner.profile``: ``autopar profile`` alone, with the same options and errors.

It imports only what profiling needs, not the other commands (the service's FastAPI,
Optuna): for GPU machines that have torch but not every dependency of autopar. Under
``torchrun ... -m planner.profile`` every process runs it and rank 0 writes the file.
"""

from __future__ import annotations

import sys

import click
import typer

from planner.cli.profile import profile_command
from planner.errors import AutoparError

EXIT_USER_ERROR = 2
USAGE_ERRORS: tuple[type[Exception], ...] = tuple(
    error
    for error in (click.ClickException, getattr(typer.exceptions, "TyperException", None))
    if isinstance(error, type)
)  # typer 0.25+ vendors click, so its usage errors are its own (as in planner.cli.app)


def main(argv: list[str] | None = None) -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(profile_command)
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="autopar profile", standalone_mode=False)
    except (click.exceptions.Exit, typer.Exit) as done:
        raise SystemExit(getattr(done, "exit_code", 0)) from None
    except (AutoparError, *USAGE_ERRORS) as error:
        format_message = getattr(error, "format_message", None)
        text = format_message() if callable(format_message) else str(error)
        print(f"autopar: error: {' '.join(text.split())}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None


if __name__ == "__main__":
    main()
