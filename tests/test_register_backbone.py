"""embudget.register_backbone: a user's backbone is built by name, accepted as a config's
model.name (the loader, run_search and the CLI's --set in the same process), refused when its
name is taken, and forgotten by unregister_backbone."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import embudget
from embudget.cli import main as cli_main
from embudget.config import load_config
from embudget.errors import ConfigError
from embudget.models.mf import MF
from embudget.models.registry import (
    REGISTERED,
    backbone_names,
    build_model,
    model_defaults,
    unregister_backbone,
)
from embudget.pipeline.run import run_search
from embudget.result import RunResult

NAME = "tiny-mf"
SETTINGS = [
    "data.name=gowalla-mini",
    f"model.name={NAME}",
    "model.d_max=8",
    "train.batch_users=1000",
    "train.max_steps=40",
    "train.eval_every_steps=20",
    "train.patience=1",
    "threads=1",
]


class TinyMF(MF):
    """A user's backbone: MF with its own name and default regularisation."""

    name = NAME
    defaults: ClassVar[dict[str, float | int]] = {"reg": 1e-3}

    def __init__(
        self,
        n_users: int,
        n_items: int,
        d_max: int = 128,
        *,
        reg: float = 1e-3,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(n_users, n_items, d_max, reg=reg, generator=generator)


@pytest.fixture
def registered() -> Iterator[str]:
    embudget.register_backbone(NAME, TinyMF, defaults={"reg": 1e-3})
    try:
        yield NAME
    finally:
        if NAME in REGISTERED:
            unregister_backbone(NAME)


def test_round_trip_through_the_config_loader(registered: str) -> None:
    cfg = load_config(overrides=[f"model.name={registered}"])
    assert cfg.model.name == registered
    assert load_config(updates={"model": {"name": registered}}).model.name == registered
    assert registered in backbone_names() and model_defaults(registered) == {"reg": 1e-3}
    train = sp.csr_matrix((3, 4), dtype=np.float32)
    gen = torch.Generator().manual_seed(0)
    model = build_model(registered, 3, 4, train, d_max=8, generator=gen, reg=0.5)
    assert isinstance(model, TinyMF) and model.reg == 0.5 and model.d_max == 8
    with pytest.raises(ConfigError, match="unknown option"):
        build_model(registered, 3, 4, train, n_layers=2)
    unregister_backbone(registered)
    with pytest.raises(ConfigError, match="model.name"):
        load_config(overrides=[f"model.name={registered}"])
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_model(registered, 3, 4, train)


@pytest.mark.slow
def test_a_registered_backbone_runs_a_search(registered: str, tmp_path: Path) -> None:
    settings = [*SETTINGS, f"cache_dir={tmp_path / 'cache'}"]
    cfg = load_config(overrides=[*settings, "search.method=su", "budget.sparsity=0.5"])
    result = run_search(cfg, tmp_path / "lib", progress=False)
    assert result.backbone == registered and result.method == "su"
    assert result.usage.params_budget is not None
    assert 0 < result.usage.params <= result.usage.params_budget
    sets = [a for s in settings for a in ("--set", s)]
    args = ["search", "--method", "su", "--sparsity", "0.5", "--no-progress", *sets]
    assert cli_main([*args, "--out", str(tmp_path / "cli")]) == 0
    via_cli = RunResult.read(tmp_path / "cli" / "results.json")
    assert via_cli.backbone == registered
    assert via_cli.valid.means == result.valid.means  # the same run, through the CLI


def test_names_that_are_taken_or_malformed(registered: str) -> None:
    with pytest.raises(ConfigError, match="already registered"):
        embudget.register_backbone(registered, TinyMF)
    for builtin in ("mf", "lightgcn"):
        with pytest.raises(ConfigError, match="built-in"):
            embudget.register_backbone(builtin, TinyMF)
    for preset in ("fast", "demo", "defaults"):
        with pytest.raises(ConfigError, match="preset"):
            embudget.register_backbone(preset, TinyMF)
    for bad in ("", "Tiny", "1mf", "a b", "x" * 65):
        with pytest.raises(ConfigError, match="lowercase"):
            embudget.register_backbone(bad, TinyMF)
    with pytest.raises(ConfigError, match="callable"):
        embudget.register_backbone("other", 3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="numbers"):
        embudget.register_backbone("other", TinyMF, defaults={"reg": "high"})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="no registered backbone"):
        unregister_backbone("other")
    assert "other" not in backbone_names()


def test_a_factory_must_return_a_backbone() -> None:
    embudget.register_backbone("not-a-backbone", lambda *a, **k: torch.nn.Linear(2, 2))
    try:
        with pytest.raises(ConfigError, match="not an embudget.models.base.Backbone"):
            build_model("not-a-backbone", 3, 4, sp.csr_matrix((3, 4), dtype=np.float32))
    finally:
        unregister_backbone("not-a-backbone")


PLUGIN = """
import embudget
from embudget.models.mf import MF


class PluginMF(MF):
    name = "plugin-mf"


embudget.register_backbone("plugin-mf", PluginMF, defaults={"reg": 1e-4})
"""


def test_a_plugin_module_adds_a_backbone_to_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "my_backbones.py").write_text(PLUGIN)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "EMBUDGET_PLUGINS": "my_backbones"}
    show = [sys.executable, "-m", "embudget", "config", "show", "--model", "plugin-mf"]
    done = subprocess.run(show, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "name: plugin-mf" in done.stdout
    # without the plugin the name is refused by the parser
    env.pop("EMBUDGET_PLUGINS")
    done = subprocess.run(show, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "plugin-mf" in done.stderr
    # a plugin that cannot be imported is a usage error naming it
    env["EMBUDGET_PLUGINS"] = "no_such_module"
    done = subprocess.run(show, env=env, capture_output=True, text=True, timeout=120)
    assert (
        done.returncode == 2
        and "no_such_module" in done.stderr
        and "EMBUDGET_PLUGINS" in done.stderr
    )
