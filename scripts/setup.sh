#!/usr/bin/env bash
# Create .venv (if missing) and install embudget with its dev tools and the optional engines the
# distributed tests use (Ray, TorchRec on CPU). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
# torch==2.13.0 is pinned in pyproject.toml (the CPU build served by this machine's index)
python -m pip install -q -e ".[dev,ray]"
# TorchRec's CPU kernels: fbgemm-gpu-cpu declares no usable dependencies for a CPU-only torch,
# so it and torchrec are installed without dependency resolution, then torchrec's own needs.
python -m pip install -q --no-deps "torchrec==1.9.2" "fbgemm-gpu-cpu==1.8.0"
python -m pip install -q -e ".[torchrec]"
