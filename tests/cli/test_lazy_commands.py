"""``autopar --help`` lists every command without importing it; each summary is the
command's own first line of help, and every command still runs through the lazy group."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest
import typer

from planner.cli.app import COMMANDS


def _own_summary(target: str) -> str:
    module, attribute = target.split(":")
    loaded = getattr(importlib.import_module(module), attribute)
    text = loaded.info.help if isinstance(loaded, typer.Typer) else inspect.getdoc(loaded)
    return " ".join(text.split("\n\n")[0].split())


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_summary_is_the_commands_own_first_line(name: str) -> None:
    assert COMMANDS[name].summary == _own_summary(COMMANDS[name].target)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_answers_its_own_help(run_cli, name: str) -> None:
    result = run_cli(name, "--help")
    assert result.exit_code == 0, result.stderr
    assert "Usage:" in result.stdout


def test_help_lists_every_command(run_cli) -> None:
    result = run_cli("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.stdout


def test_help_imports_neither_the_solvers_nor_the_cost_model() -> None:
    probe = (
        "import sys\n"
        "from planner.cli.app import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('ortools', 'optuna', 'numpy', 'planner.plan', 'planner.predict',"
        " 'fastapi', 'sqlalchemy') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert "HEAVY []" in done.stderr, done.stderr


def test_an_unknown_command_is_one_line(run_cli) -> None:
    result = run_cli("tensorflow")
    assert result.exit_code == 2
    assert "No such command" in result.stderr and len(result.stderr.strip().splitlines()) == 1
