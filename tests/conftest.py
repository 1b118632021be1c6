"""Shared fixtures: specs built from presets, and a CLI runner that captures output and exit code."""
from __future__ import annotations

import pytest

from rpsim.cli.main import main


@pytest.fixture
def run_cli(capsys):
    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run
