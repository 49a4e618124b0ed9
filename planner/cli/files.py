"""Every file the command line writes goes through here.

An operating-system error (a directory that cannot be created, a read-only or virtual
file system such as ``/proc``, a file where a directory should be, no space left) becomes
an ``OutputError``: one line naming the option, the path and the reason, which the CLI's
boundary prints with exit code 2, never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

from planner.errors import OutputError


def _reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


def ensure_dir(path: Path, *, option: str) -> Path:
    """Create ``path`` (and its parents) as a directory, or say why it cannot be one."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{option}: {path} exists and is not a directory") from None
    except OSError as error:
        raise OutputError(f"{option}: cannot create directory {path}: {_reason(error)}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{option}: cannot write into directory {path}: permission denied")
    return path


def write_text(path: Path, text: str, *, option: str, executable: bool = False) -> Path:
    """Write ``text`` to ``path`` (UTF-8), creating its directory; ``executable``: mode 755."""
    if path.is_dir():
        raise OutputError(f"{option}: {path} is a directory; give a file name")
    ensure_dir(path.parent, option=option)
    try:
        path.write_text(text, encoding="utf-8")
        if executable:
            path.chmod(0o755)
    except OSError as error:
        raise OutputError(f"{option}: cannot write {path}: {_reason(error)}") from None
    return path


def write_files(directory: Path, files: dict[str, str], *, option: str) -> list[Path]:
    """Write ``files`` (name -> text) into ``directory``; shell scripts are made executable."""
    ensure_dir(directory, option=option)
    return [
        write_text(directory / name, text, option=option, executable=name.endswith(".sh"))
        for name, text in files.items()
    ]
