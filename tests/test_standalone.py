"""The repository stands on its own: no file points outside it, the benchmarks' data is in it.

A user has only this repository, so no tracked file may send them to a path beside the
checkout or to the team's working notes, and every benchmark that compares with published
runs must find its records inside the repository, from any working directory.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
PUBLISHED_RUNS = BENCHMARKS / "data" / "published_runs.json"
READERS = ["time_published.py", "time_published_h100.py", "plan_vs_published.py"]

# Built from parts so that this file does not match itself.
OUTSIDE = ["../" + "shared", "shared" + "/reference", "shared" + "/validation"]
NOTES = [name + ".md" for name in ("DESIGN", "STYLE", "frameworks", "research-digest")]
NOTES.append("specialist" + "-solvers")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".json", ".txt", ".sh", ".html", ".js", ".css"}
# The README test names the notes to check the README does not.
EXEMPT = {"tests/test_readme.py", "tests/test_standalone.py"}


def tracked_text_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    names = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return [
        ROOT / name
        for name in names
        if Path(name).suffix in TEXT_SUFFIXES and name not in EXEMPT and (ROOT / name).is_file()
    ]


def test_no_tracked_file_points_outside_the_repository() -> None:
    found = []
    for path in tracked_text_files():
        text = path.read_text(errors="replace")
        found += [f"{path.relative_to(ROOT)}: {word}" for word in OUTSIDE + NOTES if word in text]
    assert found == [], "files that point outside the repository:\n" + "\n".join(found)


def test_published_runs_are_in_the_repository() -> None:
    records = json.loads(PUBLISHED_RUNS.read_text())
    assert records and all(record["source"]["url"] for record in records)
    assert (PUBLISHED_RUNS.parent / "README.md").is_file()


@pytest.mark.parametrize("script", READERS)
def test_benchmarks_read_the_repository_copy(script: str) -> None:
    name = f"_bench_{Path(script).stem}"
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert Path(module.VALIDATION).resolve() == PUBLISHED_RUNS.resolve()
