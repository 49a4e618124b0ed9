"""Locate, parse and check the hardware data files.

The data lives next to this module as package data, one TOML file per record::

    gpus/<id>.toml            datasheet peaks, memory, bandwidth, [source]
    interconnects/<id>.toml   per-direction bandwidth and small-message latency, [source]
    clusters/<id>.toml        node presets referring to the two folders above, [source]

Files are read through ``importlib.resources`` so they work from a source checkout, an
installed wheel or a zip. Every file is checked against the file schema of its folder
(required keys, their types, no unknown keys, ``id`` equal to the file stem, a non-empty
``source.url``, positive numbers) and clusters are checked to refer to existing GPUs and
interconnects of the right scope. A malformed file raises :class:`HardwareDataError`
naming the file and the key. Records are returned as plain dicts; turning them into
specs is ``planner.catalog``'s job, so this package imports nothing from the project.
"""

from __future__ import annotations

import copy
import functools
import math
import tomllib
from collections.abc import Callable, Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, TypeAlias

Kind = Literal["gpus", "interconnects", "clusters"]

KINDS: tuple[Kind, ...] = ("gpus", "interconnects", "clusters")

VENDORS = ("nvidia", "amd")
LINK_KINDS = ("nvlink", "xgmi", "pcie", "infiniband", "roce", "ethernet")
SCOPES = ("intra_node", "inter_node")


class HardwareDataError(ValueError):
    """A hardware data file is malformed; the message names the file and the key."""


class UnknownHardwareError(KeyError):
    """An id names no data file; the message lists the ids that exist."""

    def __str__(self) -> str:
        # KeyError.__str__ would wrap the message in quotes.
        return str(self.args[0]) if self.args else ""


# A checker returns None when the value is fine, else what the value should have been.
Checker: TypeAlias = Callable[[Any], str | None]


def _string(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return None
    return "a non-empty string"


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


def _positive_int(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return None
    return "a positive integer"


def _one_of(*choices: str) -> Checker:
    def check(value: Any) -> str | None:
        if value in choices:
            return None
        return "one of " + ", ".join(repr(choice) for choice in choices)

    return check


# A schema maps each key to (required, checker or nested schema).
Schema: TypeAlias = Mapping[str, tuple[bool, "Checker | Schema"]]

_SOURCE: Schema = {"url": (True, _url), "note": (True, _string)}

GPU_SCHEMA: Schema = {
    "id": (True, _string),
    "name": (True, _string),
    "vendor": (True, _one_of(*VENDORS)),
    "architecture": (True, _string),
    "memory_gib": (True, _positive),
    "hbm_bandwidth_gbps": (True, _positive),
    "tdp_w": (True, _positive),
    "peak_tflops": (
        True,
        {
            "fp32": (True, _positive),
            "tf32": (False, _positive),
            "bf16": (True, _positive),
            "fp16": (True, _positive),
            "fp8": (False, _positive),
        },
    ),
    "source": (True, _SOURCE),
}

INTERCONNECT_SCHEMA: Schema = {
    "id": (True, _string),
    "name": (True, _string),
    "kind": (True, _one_of(*LINK_KINDS)),
    "bandwidth_gbps": (True, _positive),
    "latency_us": (True, _positive),
    "scope": (True, _one_of(*SCOPES)),
    "source": (True, _SOURCE),
}

CLUSTER_SCHEMA: Schema = {
    "id": (True, _string),
    "name": (True, _string),
    "gpu": (True, _string),
    "gpus_per_node": (True, _positive_int),
    "intra_node": (True, _string),
    "inter_node": (True, _string),
    "nics_per_node": (True, _positive_int),
    "source": (True, _SOURCE),
}

SCHEMAS: Mapping[Kind, Schema] = {
    "gpus": GPU_SCHEMA,
    "interconnects": INTERCONNECT_SCHEMA,
    "clusters": CLUSTER_SCHEMA,
}


def _check_table(table: Mapping[str, Any], schema: Schema, *, where: str, prefix: str) -> None:
    """Raise HardwareDataError for the first missing, unknown or ill-typed key."""
    for key in table:
        if key not in schema:
            allowed = ", ".join(prefix + name for name in schema)
            raise HardwareDataError(f"{where}: unknown key '{prefix}{key}' (allowed: {allowed})")
    for key, (required, rule) in schema.items():
        name = prefix + key
        if key not in table:
            if required:
                raise HardwareDataError(f"{where}: missing required key '{name}'")
            continue
        value = table[key]
        if isinstance(rule, Mapping):
            if not isinstance(value, dict):
                raise HardwareDataError(f"{where}: key '{name}' must be a table")
            _check_table(value, rule, where=where, prefix=name + ".")
            continue
        expected = rule(value)
        if expected is not None:
            raise HardwareDataError(f"{where}: key '{name}' must be {expected}, got {value!r}")


def check_record(record: Mapping[str, Any], kind: Kind, *, where: str, stem: str) -> None:
    """Check one parsed record against the file schema of ``kind``.

    ``where`` names the file in messages; ``stem`` is the file name without ``.toml``,
    which the record's ``id`` must equal. Cross-file references are not checked here
    (see :func:`check_cluster_references`).
    """
    _check_table(record, SCHEMAS[kind], where=where, prefix="")
    if record["id"] != stem:
        raise HardwareDataError(
            f"{where}: key 'id' is {record['id']!r} but must equal the file stem {stem!r}"
        )


def read_record_file(path: Traversable | Path, kind: Kind) -> dict[str, Any]:
    """Parse one data file and check it against the file schema of ``kind``."""
    name = path.name
    where = f"{kind}/{name}"
    if not name.endswith(".toml"):
        raise HardwareDataError(f"{where}: data files must end in .toml")
    try:
        record = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise HardwareDataError(f"{where}: cannot read file: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise HardwareDataError(f"{where}: invalid TOML: {error}") from None
    check_record(record, kind, where=where, stem=name.removesuffix(".toml"))
    return record


def check_cluster_references(
    cluster: Mapping[str, Any],
    *,
    gpus: Mapping[str, Mapping[str, Any]],
    interconnects: Mapping[str, Mapping[str, Any]],
) -> None:
    """Check that a cluster names an existing GPU and interconnects of the right scope."""
    where = f"clusters/{cluster['id']}.toml"
    if cluster["gpu"] not in gpus:
        raise HardwareDataError(
            f"{where}: key 'gpu' names unknown GPU {cluster['gpu']!r}; known: "
            + ", ".join(sorted(gpus))
        )
    for key in SCOPES:
        link_id = cluster[key]
        if link_id not in interconnects:
            raise HardwareDataError(
                f"{where}: key '{key}' names unknown interconnect {link_id!r}; known: "
                + ", ".join(sorted(interconnects))
            )
        scope = interconnects[link_id]["scope"]
        if scope != key:
            raise HardwareDataError(
                f"{where}: key '{key}' names {link_id!r}, whose scope is {scope!r}, not {key!r}"
            )


def data_root() -> Traversable:
    """The package folder that holds the data folders."""
    return files("hardware_db")


def _data_files(kind: Kind) -> list[Traversable]:
    folder = data_root() / kind
    return sorted(
        (entry for entry in folder.iterdir() if entry.is_file() and entry.name.endswith(".toml")),
        key=lambda entry: entry.name,
    )


@functools.cache
def _records(kind: Kind) -> dict[str, dict[str, Any]]:
    """All records of ``kind`` by id, checked (clusters also against their references)."""
    records = {}
    for entry in _data_files(kind):
        record = read_record_file(entry, kind)
        records[record["id"]] = record
    if kind == "clusters":
        gpus, interconnects = _records("gpus"), _records("interconnects")
        for record in records.values():
            check_cluster_references(record, gpus=gpus, interconnects=interconnects)
    return records


def list_ids(kind: Kind) -> list[str]:
    """Sorted ids of every record of ``kind``."""
    return sorted(_records(kind))


def read(kind: Kind, ident: str, *, what: str) -> dict[str, Any]:
    """A copy of the record ``ident`` of ``kind``; ``what`` names the kind in errors."""
    records = _records(kind)
    if ident not in records:
        raise UnknownHardwareError(
            f"unknown {what} {ident!r}; known: " + ", ".join(sorted(records))
        )
    return copy.deepcopy(records[ident])
