"""How a golden case is run: through the public entry points, as a user would."""

from __future__ import annotations

from pathlib import Path

import torch

from embudget.config import load_config
from embudget.pipeline.run import run_search, run_train


def run_case(command: str, overrides: list[str], fast: bool, out: Path, cache: Path) -> None:
    torch.set_num_threads(1)
    cfg = load_config(overrides=[*overrides, f"cache_dir={cache}"], fast=fast)
    if command == "train":
        run_train(cfg, out, progress=False)
    else:
        run_search(cfg, out, progress=False)
