"""``autopar plan`` without refinement does not load Optuna or SQLAlchemy (a quarter of a
second at every start); refinement still finds them when it runs."""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(code: str) -> str:
    probe = (
        "import sys\n"
        f"{code}\n"
        "print('LOADED', sorted(m for m in ('optuna', 'sqlalchemy') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


def test_the_plan_command_module_loads_no_refinement_libraries() -> None:
    assert "LOADED []" in _loaded_after("import planner.cli.plan, planner.plan, planner.refine")


def test_refinement_names_load_on_first_use() -> None:
    out = _loaded_after("from planner.refine import open_storage, run_trials")
    assert "LOADED ['optuna', 'sqlalchemy']" in out


def test_an_unknown_refine_name_is_an_attribute_error() -> None:
    out = _loaded_after(
        "import planner.refine\n"
        "try:\n    planner.refine.no_such_name\n"
        "except AttributeError as e:\n    print('ERR', e)"
    )
    assert "ERR module 'planner.refine' has no attribute 'no_such_name'" in out
