"""Reading a user's JSON file with one error policy: a missing file or invalid JSON is bad input that
names the file and what it was for (SpecError for specs and profiles, PlanError for plans and traces)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: str | Path, what: str, error: type[ValueError]) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} {str(p)!r} not found") from None
    except IsADirectoryError:
        raise error(f"{what} {str(p)!r} is a folder; give the path of a file") from None
    except OSError as e:  # unreadable: permissions, a special file, an I/O error
        raise error(f"{what} {str(p)!r} cannot be read ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{what} {str(p)!r} is not valid JSON ({e})") from None
