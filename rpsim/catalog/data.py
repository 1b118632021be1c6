"""Reads the packaged TOML preset files once."""
from __future__ import annotations

import functools
import tomllib
from importlib import resources
from typing import Any


@functools.cache
def preset_table(file_name: str) -> dict[str, Any]:
    text = resources.files("rpsim.catalog").joinpath(file_name).read_text(encoding="utf-8")
    return tomllib.loads(text)
