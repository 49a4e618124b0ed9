"""Settings read from the environment, shared by the REST service and Optuna refinement.

* ``AUTOPAR_DATABASE_URL``: the SQLAlchemy URL of the database that stores the service's
  jobs and results and Optuna's studies (``postgresql+psycopg://user@host/db`` for
  PostgreSQL). Without it, a SQLite file in the user's data directory: no set-up needed.
* ``AUTOPAR_DATA_DIR``: where that SQLite file lives (default ``~/.local/share/autopar``,
  or ``$XDG_DATA_HOME/autopar`` where that is set).
"""

from __future__ import annotations

import os
from pathlib import Path

DATABASE_URL_ENV = "AUTOPAR_DATABASE_URL"
DATA_DIR_ENV = "AUTOPAR_DATA_DIR"
DEFAULT_DATABASE_FILE = "autopar.db"


def data_dir() -> Path:
    """The directory for autopar's own files (created on first use)."""
    explicit = os.environ.get(DATA_DIR_ENV)
    if explicit:
        directory = Path(explicit).expanduser()
    else:
        xdg = os.environ.get("XDG_DATA_HOME")
        base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
        directory = base / "autopar"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def database_url() -> str:
    """``AUTOPAR_DATABASE_URL``, or the embedded default: a SQLite file in ``data_dir()``."""
    explicit = os.environ.get(DATABASE_URL_ENV, "").strip()
    if explicit:
        return explicit
    return f"sqlite:///{data_dir() / DEFAULT_DATABASE_FILE}"
