#!/usr/bin/env bash
# Set up, then lint, type-check and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check src tests benchmarks examples
ruff format --check src tests benchmarks examples
mypy
python -m pytest -n 2 -q "$@"
