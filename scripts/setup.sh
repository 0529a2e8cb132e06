#!/usr/bin/env bash
# Create .venv (if missing) and install embudget with its dev tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
# torch==2.13.0 is pinned in pyproject.toml (the CPU build served by this machine's index)
python -m pip install -q -e ".[dev]"
