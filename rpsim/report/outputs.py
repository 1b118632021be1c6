"""Output paths checked before any work starts: a run that would end by failing to write its result must
fail at once, naming the flag and the value, and must create nothing (not even a missing folder)."""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from rpsim.errors import SpecError


def check_output_path(flag: str, path: str | os.PathLike[str]) -> None:
    """SpecError unless `path` can be written atomically: it is not a folder, its folder exists, and a
    file can be created there (the probe is a real create-and-delete, which is what catches /proc, /sys
    and read-only mounts that permission bits alone do not show)."""
    target = Path(path)
    text = str(path)
    if not text.strip():
        raise SpecError(f"{flag} {text!r}: empty path; give a file name")
    if target.is_dir():
        raise SpecError(f"{flag} {text!r} is a folder; give a file path inside it")
    parent = target.parent
    if not parent.exists():
        raise SpecError(f"{flag} {text!r}: folder {str(parent)!r} does not exist (create it first; "
                        "rpsim does not create folders)")
    if not parent.is_dir():
        raise SpecError(f"{flag} {text!r}: {str(parent)!r} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=parent)
    except OSError as e:
        raise SpecError(f"{flag} {text!r}: cannot create files in {str(parent)!r} ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def check_output_flags(args: argparse.Namespace, flags: dict[str, str]) -> None:
    """Check every output flag a command was given ({attribute: flag}); two flags naming one file are
    refused too, since the second write would replace the first."""
    seen: dict[Path, str] = {}
    for attribute, flag in flags.items():
        value = getattr(args, attribute, None)
        if value is None:
            continue
        check_output_path(flag, value)
        key = Path(os.path.abspath(value))
        if key in seen:
            raise SpecError(f"{flag} {value!r} names the same file as {seen[key]}; give each output its own file")
        seen[key] = flag
