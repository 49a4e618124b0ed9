"""Locate, parse and check the model data files.

The data lives next to this module as package data, one TOML file per model::

    data/<family>/<name>.toml

with four parts: the names (``name``, ``display_name``, ``family``), ``[source]`` (where the
architecture numbers come from: a HuggingFace ``config.json`` or a paper's table),
``[stated_params]`` (the officially stated parameter count, its rounding and where it is
stated) and ``[architecture]`` (the fields of ``planner.specs.model.ModelSpec`` other than
``name``, ``family`` and ``source``).

Files are read through ``importlib.resources`` so they work from a source checkout, an
installed wheel or a zip. Every file is checked against the file schema below (required
keys, their types, no unknown keys, ``name`` equal to the file stem, ``family`` equal to
the folder, a non-empty ``source.url``, positive counts). A malformed file raises
:class:`ModelDataError` naming the file and the key. The ``[architecture]`` table is only
checked to be a table here: its fields are validated by ``ModelSpec`` when
``planner.catalog`` turns the record into a spec, so this package imports nothing from the
project.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TypeAlias

DATA_FOLDER = "data"

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9.\-]*")
"""Catalogue names: lowercase letters, digits, dots and hyphens (``llama-3.1-8b``)."""

FAMILY_PATTERN = re.compile(r"[a-z0-9][a-z0-9_]*")
"""Family names follow HF ``model_type`` spelling (``llama``, ``qwen3_moe``, ``gpt_neox``)."""

RESERVED_ARCHITECTURE_KEYS = ("name", "family", "source")
"""ModelSpec fields that come from the top of the file, never from ``[architecture]``."""


class ModelDataError(ValueError):
    """A model data file is malformed; the message names the file and the key."""


class UnknownModelError(KeyError):
    """A name that is no catalogue model; the message suggests close matches."""

    def __str__(self) -> str:
        # KeyError.__str__ would wrap the message in quotes.
        return str(self.args[0]) if self.args else ""


# A checker returns None when the value is fine, else what the value should have been.
Checker: TypeAlias = Callable[[Any], str | None]


def _string(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return None
    return "a non-empty string"


def _matching(pattern: re.Pattern[str], what: str) -> Checker:
    def check(value: Any) -> str | None:
        if isinstance(value, str) and pattern.fullmatch(value):
            return None
        return what

    return check


def _url(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith(("https://", "http://")):
        return None
    return "a non-empty http(s) URL"


def _positive(value: Any) -> str | None:
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    ):
        return None
    return "a positive number"


def _table(value: Any) -> str | None:
    if isinstance(value, dict) and value:
        return None
    return "a non-empty table"


# A schema maps each key to (required, checker or nested schema).
Schema: TypeAlias = Mapping[str, tuple[bool, "Checker | Schema"]]

MODEL_SCHEMA: Schema = {
    "name": (True, _matching(NAME_PATTERN, "a lowercase name of letters, digits, '.' and '-'")),
    "display_name": (True, _string),
    "family": (True, _matching(FAMILY_PATTERN, "a lowercase family name of [a-z0-9_]")),
    "source": (True, {"url": (True, _url), "note": (True, _string)}),
    "stated_params": (
        True,
        {
            "total": (True, _positive),
            "active": (False, _positive),
            "rounding": (True, _positive),
            "source": (True, _url),
            "note": (True, _string),
        },
    ),
    "architecture": (True, _table),
}


def _check_table(table: Mapping[str, Any], schema: Schema, *, where: str, prefix: str) -> None:
    """Raise ModelDataError for the first unknown, missing or ill-typed key."""
    for key in table:
        if key not in schema:
            allowed = ", ".join(prefix + name for name in schema)
            raise ModelDataError(f"{where}: unknown key '{prefix}{key}' (allowed: {allowed})")
    for key, (required, rule) in schema.items():
        name = prefix + key
        if key not in table:
            if required:
                raise ModelDataError(f"{where}: missing required key '{name}'")
            continue
        value = table[key]
        if isinstance(rule, Mapping):
            if not isinstance(value, dict):
                raise ModelDataError(f"{where}: key '{name}' must be a table")
            _check_table(value, rule, where=where, prefix=name + ".")
            continue
        expected = rule(value)
        if expected is not None:
            raise ModelDataError(f"{where}: key '{name}' must be {expected}, got {value!r}")


def check_record(
    record: Mapping[str, Any], *, where: str, stem: str, family: str | None = None
) -> None:
    """Check one parsed record against the file schema.

    ``stem`` is the file name without ``.toml`` (``name`` must equal it); ``family``, when
    given, is the folder the file lives in (``family`` must equal it).
    """
    _check_table(record, MODEL_SCHEMA, where=where, prefix="")
    if record["name"] != stem:
        raise ModelDataError(
            f"{where}: key 'name' is {record['name']!r} but must equal the file stem {stem!r}"
        )
    if family is not None and record["family"] != family:
        raise ModelDataError(
            f"{where}: key 'family' is {record['family']!r} but the file lives in the "
            f"folder {family!r}"
        )
    stated = record["stated_params"]
    if "active" in stated and stated["active"] > stated["total"]:
        raise ModelDataError(
            f"{where}: key 'stated_params.active' ({stated['active']:g}) must not exceed "
            f"'stated_params.total' ({stated['total']:g})"
        )
    for key in RESERVED_ARCHITECTURE_KEYS:
        if key in record["architecture"]:
            raise ModelDataError(
                f"{where}: key 'architecture.{key}' is not allowed: '{key}' is given at the "
                "top of the file"
            )


def read_record_file(path: Traversable | Path, *, family: str | None = None) -> dict[str, Any]:
    """Parse one data file and check it against the file schema.

    ``family`` is the folder the file was found in; pass None to skip that check (a file
    outside the catalogue, e.g. one a user wrote).
    """
    name = path.name
    where = f"{family}/{name}" if family else name
    if not name.endswith(".toml"):
        raise ModelDataError(f"{where}: data files must end in .toml")
    try:
        record = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ModelDataError(f"{where}: cannot read file: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ModelDataError(f"{where}: invalid TOML: {error}") from None
    check_record(record, where=where, stem=name.removesuffix(".toml"), family=family)
    return record


def data_root() -> Traversable:
    """The package folder that holds one sub-folder per family."""
    return files("models_db") / DATA_FOLDER


def data_files() -> list[tuple[str, Traversable]]:
    """(family folder, file) for every ``data/<family>/*.toml``, sorted by path."""
    found = []
    for folder in data_root().iterdir():
        if not folder.is_dir() or folder.name.startswith(("_", ".")):
            continue
        for entry in folder.iterdir():
            if entry.is_file() and entry.name.endswith(".toml"):
                found.append((folder.name, entry))
    return sorted(found, key=lambda item: (item[0], item[1].name))


@functools.cache
def _records() -> dict[str, dict[str, Any]]:
    """Every catalogue record by name, each checked; a name used twice is an error."""
    records: dict[str, dict[str, Any]] = {}
    where_found: dict[str, str] = {}
    for family, entry in data_files():
        record = read_record_file(entry, family=family)
        name = record["name"]
        if name in records:
            raise ModelDataError(
                f"{family}/{entry.name}: model name {name!r} is also used by {where_found[name]}"
            )
        records[name] = record
        where_found[name] = f"{family}/{entry.name}"
    return records


def list_names() -> list[str]:
    """Sorted names of every catalogue model."""
    return sorted(_records())


def unknown_model_message(name: str, known: list[str]) -> str:
    """``unknown model 'x'; did you mean a, b? (autopar models list shows all)``."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown model {name!r}{hint} (autopar models list shows all)"


def read(name: str) -> dict[str, Any]:
    """A copy of the record called ``name``; raises UnknownModelError for an unknown name."""
    records = _records()
    if name not in records:
        raise UnknownModelError(unknown_model_message(name, sorted(records)))
    return copy.deepcopy(records[name])
