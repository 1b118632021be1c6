#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs, then runs pytest.
# torch: take the CPU build 2.13.0 first when none is installed (a plain `torch` requirement would
# download a multi-GB CUDA build); the project's range accepts it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e ".[dev]"
python3 -m pytest -q "$@"
