"""The ``autopar`` typer application and its error boundary.

Every ``AutoparError`` (and every usage error of the command line, and an operating-system
error on a file the user named) becomes one line on stderr, ``autopar: error: <message>``,
with exit code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import click
import typer

from planner.cli.catalog import hardware_app, models_app
from planner.cli.emit import emit_command
from planner.cli.estimate import estimate_command
from planner.cli.plan import plan_command
from planner.cli.profile import profile_command
from planner.cli.refine import refine_worker_command
from planner.cli.serve import serve_command
from planner.errors import AutoparError

EXIT_USER_ERROR = 2

app = typer.Typer(
    name="autopar",
    help="Plan, predict and emit parallel layouts for training large transformers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help (click's): rich's option tables cut long option names ("--distributed-o…")
    # on an 80-column terminal; click's wraps the help text and never cuts a name
    rich_markup_mode=None,
)
app.add_typer(models_app, name="models")
app.add_typer(hardware_app, name="hardware")
app.command("estimate")(estimate_command)
app.command("emit")(emit_command)
app.command("plan")(plan_command)
app.command("profile")(profile_command)
app.command("refine-worker")(refine_worker_command)
app.command("serve")(serve_command)


def fail(message: str) -> None:
    """Print the one-line error and exit with the user-error code."""
    first_line = " ".join(message.split())
    print(f"autopar: error: {first_line}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR)


def _usage_errors() -> tuple[type[Exception], ...]:
    """Command-line parsing errors: click's, and typer's own since it vendors click (0.25+)."""
    errors: list[type[Exception]] = [click.ClickException]
    typer_base = getattr(typer.exceptions, "TyperException", None)
    if isinstance(typer_base, type):
        errors.append(typer_base)
    return tuple(errors)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app inside the error boundary."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="autopar", standalone_mode=False)
    except (click.exceptions.Exit, typer.Exit) as done:
        raise SystemExit(getattr(done, "exit_code", 0)) from None
    except (click.exceptions.Abort, typer.Abort):
        fail("aborted")
    except AutoparError as error:
        fail(str(error))
    except OSError as error:  # a file the user named, read or written outside planner.cli.files
        where = f"{error.filename}: " if error.filename else ""
        fail(f"{where}{error.strerror or error}")
    except _usage_errors() as error:
        format_message = getattr(error, "format_message", None)
        fail(format_message() if callable(format_message) else str(error))
