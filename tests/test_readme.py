"""The README's examples run, and print what the README shows.

Every fenced block of README.md whose lines start with ``$ autopar ...`` (or ``$ cat
FILE``, to show a file an earlier command of the block wrote) is an example: its
commands run in order, in-process through the real entry point, in a fresh directory,
and every line the README shows after a command must appear in that command's output
(stdout then stderr), in the same order; an output of at most ``EXACT_LINES`` lines must
match exactly. A ``…`` in a shown line stands for any text (a wall time that varies from
run to run). So an abridged table may leave rows out but cannot show a number that is
no longer printed. ``> FILE`` after a command writes its stdout to FILE. Blocks of other
commands (``python benchmarks/...``, which need a GPU's data or minutes) are not run.
New sections and examples are picked up as they are added.

docs/architecture.md is checked to name only modules and folders that exist.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from planner.cli.app import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
EXACT_LINES = 5
RUNNABLE = ("autopar ", "cat ")


@dataclass
class Step:
    command: str
    shown: list[str] = field(default_factory=list)


@dataclass
class Example:
    line: int
    steps: list[Step]

    @property
    def name(self) -> str:
        return f"README.md:{self.line}: {self.steps[0].command[:60]}"


def readme_examples(text: str) -> list[Example]:
    """The runnable examples of a README (see the module docstring)."""
    examples: list[Example] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if not lines[index].startswith("```"):
            index += 1
            continue
        start, index = index + 1, index + 1
        block: list[str] = []
        while index < len(lines) and not lines[index].startswith("```"):
            block.append(lines[index])
            index += 1
        index += 1
        steps = _steps(block)
        if steps and all(step.command.startswith(RUNNABLE) for step in steps):
            examples.append(Example(line=start, steps=steps))
    return examples


def _steps(block: list[str]) -> list[Step]:
    if not block or not block[0].startswith("$ "):
        return []
    steps: list[Step] = []
    position = 0
    while position < len(block):
        line = block[position]
        if line.startswith("$ "):
            command = line[2:]
            while command.rstrip().endswith("\\") and position + 1 < len(block):
                position += 1
                command = command.rstrip()[:-1].rstrip() + " " + block[position].strip()
            steps.append(Step(command=command.strip()))
        elif line.strip():
            steps[-1].shown.append(line.rstrip())
        position += 1
    return steps


def run_step(command: str, folder: Path) -> tuple[int, list[str]]:
    """Run one README command in ``folder``: exit code and output lines (stdout, stderr)."""
    words = shlex.split(command, comments=True)
    target = None
    if ">" in words:
        at = words.index(">")
        words, target = words[:at], words[at + 1]
    if words[0] == "cat":
        return 0, (folder / words[1]).read_text().splitlines()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(folder), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(words[1:])
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 0
    if target is not None:
        (folder / target).write_text(out.getvalue())
        return code, err.getvalue().splitlines()
    return code, [line.rstrip() for line in (out.getvalue() + err.getvalue()).splitlines()]


def _matches(shown: str, printed: str) -> bool:
    if "…" not in shown:
        return shown == printed
    pattern = ".*".join(re.escape(part) for part in shown.split("…"))
    return re.fullmatch(pattern, printed) is not None


def _in_order(shown: list[str], printed: list[str]) -> str | None:
    """The first shown line missing from ``printed`` (in order), or None."""
    rest = iter(printed)
    for line in shown:
        if not any(_matches(line, candidate) for candidate in rest):
            return line
    return None


EXAMPLES = readme_examples(README.read_text(encoding="utf-8"))


def test_the_readme_has_examples_to_check() -> None:
    assert len(EXAMPLES) >= 5, [example.name for example in EXAMPLES]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda example: example.name)
def test_readme_example_prints_what_the_readme_shows(
    example: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    for step in example.steps:
        code, printed = run_step(step.command, tmp_path)
        errors = any(line.startswith("autopar: error:") for line in step.shown)
        assert code == (2 if errors else 0), (step.command, printed)
        shown = [line for line in step.shown if line.strip()]
        lines = [line for line in printed if line.strip()]
        if len(lines) <= EXACT_LINES:
            assert len(lines) == len(shown), (step.command, lines)
        missing = _in_order(shown, printed)
        assert missing is None, (
            f"{example.name}: `{step.command}` no longer prints this line the README shows:\n"
            f"{missing}\nit prints:\n" + "\n".join(printed)
        )


def test_readme_parser_reads_continuations_and_outputs() -> None:
    text = "x\n```\n$ autopar a \\\n    --b 1\nout 1\n\n$ cat f\nline\n```\n```bash\npip x\n```\n"
    (example,) = readme_examples(text)
    assert [step.command for step in example.steps] == ["autopar a --b 1", "cat f"]
    assert example.steps[0].shown == ["out 1"] and example.steps[1].shown == ["line"]
    assert readme_examples("```\n$ python benchmarks/x.py\nok\n```\n") == []


def test_the_project_stands_on_its_own() -> None:
    readme = README.read_text(encoding="utf-8")
    assert "shared/" not in readme and "DESIGN.md" not in readme
    assert "docs/architecture.md" in readme


def test_architecture_names_only_what_exists() -> None:
    """Every path in backticks (``planner/search/driver.py``, ``cost/memory.py`` under its
    package's section, ``hardware_db/profiles/<gpu>/...``) exists."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    paths = set(re.findall(r"`([A-Za-z_]+/[A-Za-z0-9_./<>*-]*)`", text))
    assert len(paths) > 40
    for path in sorted(paths):
        path = path.split("<")[0].rstrip("/")
        found = any(
            any(base.glob(path)) if "*" in path else (base / path).exists()
            for base in (ROOT, ROOT / "planner", ROOT / "api")
        )
        assert found, f"docs/architecture.md names {path}, which does not exist"
