"""The v0.2.x TOML job file: writing the settings, and reading a job file back."""

from __future__ import annotations

import json
import math
import re
import tomllib

from planner.emit.base import (
    EmitError,
)
from planner.emit.torchtitan._fields import (
    Settings,
)

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def render_toml(settings: Settings) -> str:
    """The settings as a TOML job file: sections and keys sorted, one blank line between."""
    blocks = []
    for section in sorted(settings):
        if not _BARE_KEY.match(section):
            raise ValueError(f"section name {section!r} is not a bare TOML key path")
        lines = [f"[{section}]"]
        for key in sorted(settings[section]):
            if not _BARE_KEY.match(key) or "." in key:
                raise ValueError(f"key {key!r} is not a bare TOML key")
            lines.append(f"{key} = {_toml_value(settings[section][key])}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def parse_toml(text: str) -> Settings:
    """Read a job file back into section -> key -> value (nested tables as dotted sections)."""
    settings: Settings = {}

    def flatten(table: dict[str, object], prefix: str) -> None:
        values = {key: value for key, value in table.items() if not isinstance(value, dict)}
        if values:
            if not prefix:
                raise EmitError(f"torchtitan TOML: keys outside any [section]: {sorted(values)}")
            settings[prefix] = values
        for key, value in table.items():
            if isinstance(value, dict):
                flatten(value, f"{prefix}.{key}" if prefix else key)

    flatten(tomllib.loads(text), "")
    return settings
