"""Model data: one TOML file per catalogue model, each with its sources.

Files live under ``data/<family>/<name>.toml`` (see ``_files`` for the schema). Each says
where its architecture numbers come from (the model's HuggingFace ``config.json``, or the
paper's table for models without one) and the officially stated parameter count with its
own source, so tests can check our parameter counter against the published sizes.
Readers return plain dicts; ``planner.catalog`` turns them into ``ModelSpec`` objects.
This package imports nothing from the rest of autopar.

    >>> import models_db
    >>> models_db.read_model("llama-3.1-8b")["architecture"]["hidden_size"]
    4096
"""

from __future__ import annotations

from typing import Any

from models_db._files import ModelDataError, UnknownModelError, list_names, read

__all__ = ["ModelDataError", "UnknownModelError", "list_models", "read_model"]


def list_models() -> list[str]:
    """Sorted names of the catalogue models (``deepseek-v3``, ``gpt-1.7b``, ...)."""
    return list_names()


def read_model(name: str) -> dict[str, Any]:
    """The raw record of model ``name``: ``name``, ``display_name``, ``family``, ``source``,
    ``stated_params`` and ``architecture``. Raises UnknownModelError for an unknown name."""
    return read(name)
