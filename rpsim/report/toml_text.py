"""A TOML writer for the flat machine files rpsim reads (tomllib reads; the standard library writes no
TOML): top-level scalars, tables of scalars and arrays of numbers, and arrays of such tables.
Nested tables one level down are written as [parent.child], arrays of tables there as [[parent.child]]."""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def toml_text(table: Mapping[str, Any], comments: Mapping[str, str] | None = None) -> str:
    """`comments` maps a key path ("host.adam_params_per_s") to a comment written after its value."""
    comments = comments or {}
    lines: list[str] = []
    _scalars(lines, table, "", comments)
    for key, value in table.items():
        if isinstance(value, Mapping):
            _table(lines, key, value, comments)
        elif _is_table_array(value):
            for entry in value:
                lines += ["", f"[[{key}]]"]
                _scalars(lines, entry, f"{key}.", comments)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(lines: list[str], name: str, value: Mapping[str, Any], comments: Mapping[str, str]) -> None:
    lines += ["", f"[{name}]"]
    _scalars(lines, value, f"{name}.", comments)
    for key, sub in value.items():
        if isinstance(sub, Mapping):
            _table(lines, f"{name}.{key}", sub, comments)
        elif _is_table_array(sub):
            for entry in sub:
                lines += ["", f"[[{name}.{key}]]"]
                _scalars(lines, entry, f"{name}.{key}.", comments)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _scalars(lines: list[str], table: Mapping[str, Any], prefix: str, comments: Mapping[str, str]) -> None:
    for key, value in table.items():
        if isinstance(value, Mapping) or _is_table_array(value):
            continue
        note = comments.get(prefix + key)
        lines.append(f"{key} = {_value(value)}" + (f"  # {note}" if note else ""))


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML machine files hold finite numbers only, got {value!r}")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
