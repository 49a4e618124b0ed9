"""The ``autopar`` typer application and its error boundary.

Every ``AutoparError`` (and every usage error of the command line, and an operating-system
error on a file the user named) becomes one line on stderr, ``autopar: error: <message>``,
with exit code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import gc
import importlib
import sys
from dataclasses import dataclass

import click
import typer
from typer.core import TyperGroup

from planner.errors import AutoparError

EXIT_USER_ERROR = 2


@dataclass(frozen=True)
class LazyCommand:
    """A command whose module is imported only when it runs or its own help is asked for.

    ``target`` is ``module:attribute``, a typer command function or a typer sub-app;
    ``summary`` is the line ``autopar --help`` shows (a test checks it is the first line of
    the command's own help).
    """

    target: str
    summary: str

    def load(self, name: str) -> click.Command:
        """The command, its module imported; then every object alive so far is frozen out
        of the garbage collector (``gc.freeze``): the modules, classes and validators the
        import made (some hundreds of thousands of objects, about all of the process's
        until the command runs) live until the process ends, yet every full collection
        while the command runs, and the collections at interpreter exit, would walk them
        again (``autopar plan`` of Llama 3.1 70B on 64 GPUs: 0.2 s of collections and
        0.4 s of exit, 0.1 s each frozen). Nothing is collected that could have been:
        these objects are not garbage."""
        module, attribute = self.target.split(":")
        loaded = getattr(importlib.import_module(module), attribute)
        gc.freeze()
        if isinstance(loaded, typer.Typer):
            return typer.main.get_group(loaded)
        single = typer.Typer(
            add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None
        )
        single.command(name)(loaded)
        command = typer.main.get_command(single)
        command.name = name
        return command


COMMANDS: dict[str, LazyCommand] = {
    "models": LazyCommand(
        "planner.cli.catalog:models_app", "The model catalogue and the HuggingFace importer."
    ),
    "hardware": LazyCommand(
        "planner.cli.catalog:hardware_app", "GPUs, interconnects and cluster presets."
    ),
    "estimate": LazyCommand(
        "planner.cli.estimate:estimate_command",
        "Predict one layout: per-GPU memory of every stage (does it fit?), step time, MFU.",
    ),
    "memplan": LazyCommand(
        "planner.cli.memplan:memplan_command",
        "Plan where tensors live: live-bytes bound, simulated allocator, planned placement.",
    ),
    "emit": LazyCommand(
        "planner.cli.emit:emit_command",
        "Turn a plan into the files a user launches (deterministic: same plan, same bytes).",
    ),
    "plan": LazyCommand(
        "planner.cli.plan:plan_command",
        "Search every layout for the best that fit in memory, and explain the best.",
    ),
    "report": LazyCommand(
        "planner.cli.report:report_command",
        "Draw a plan as one HTML file that needs no network (memory, timeline, step time).",
    ),
    "compare": LazyCommand(
        "planner.cli.compare:compare_command",
        "Show two plans side by side: memory per stage, time breakdown, what is inside the error.",
    ),
    "profile": LazyCommand(
        "planner.cli.profile:profile_command",
        "Measure GEMM, attention, memory-bandwidth, optimizer-step and collective rates.",
    ),
    "refine-worker": LazyCommand(
        "planner.cli.refine:refine_worker_command",
        "Join a stored refinement study and run trials of it in this process.",
    ),
    "place-experts": LazyCommand(
        "planner.cli.experts:place_experts_command",
        "Place MoE experts (and replicas) on GPUs: an OR-Tools program from routing stats.",
    ),
    "routing-stats": LazyCommand(
        "planner.cli.experts:routing_stats_command",
        "Turn recorded router decisions into routing statistics (loads and affinity).",
    ),
    "scatter": LazyCommand(
        "planner.cli.scatter:scatter_command",
        "Scatter sequences over SP groups; print micro-batches, groups, time, memory, speed-ups.",
    ),
    "serve": LazyCommand(
        "planner.cli.serve:serve_command",
        'Serve plans and estimates over HTTP (see README, "REST service").',
    ),
}
"""Every command, by name: imported on use, so ``autopar --help`` starts at once."""


class LazyGroup(TyperGroup):
    """A typer group whose commands come from ``COMMANDS``, loaded on first use.

    Listing (``autopar --help``) shows each command's summary without importing it;
    running a command, or ``autopar COMMAND --help``, imports its module.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        lazy = COMMANDS.get(cmd_name)
        if lazy is None:
            return super().get_command(ctx, cmd_name)
        return click.Command(cmd_name, help=lazy.summary, short_help=lazy.summary)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0]) if args else ""
        lazy = COMMANDS.get(name)
        if lazy is None:
            return super().resolve_command(ctx, args)
        return name, lazy.load(name), args[1:]


app = typer.Typer(
    name="autopar",
    help="Plan, predict and emit parallel layouts for training large transformers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=LazyGroup,
    # plain help (click's): rich's option tables cut long option names ("--distributed-o…")
    # on an 80-column terminal; click's wraps the help text and never cuts a name
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """Plan, predict and emit parallel layouts for training large transformers."""


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
