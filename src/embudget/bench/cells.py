"""The cells of a reproduction grid and their configs (protocol.md §9.2); no torch.

A grid is datasets × backbones × methods × sparsities × seeds; the full-size model is one cell
per (dataset, backbone, seed), whatever the sparsities. :func:`deviations` lists a config's
procedure settings that differ from the faithful defaults, as the report shows them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embudget.config import RUNTIME_KEYS, Method, RunConfig, choices, load_config
from embudget.errors import ConfigError

#: every method (``search.method``), in the order a grid runs and a report lists them
METHODS = choices(Method)
#: the baselines each search is compared with (bet.md §9) and the searches themselves
BASELINES: tuple[Method, ...] = ("su", "sr")
SEARCHES: tuple[Method, ...] = ("bet", "bet-simple", "bet-random")
#: methods without a search, run before the searches
CHEAP: tuple[Method, ...] = ("full", *BASELINES)
# config keys that describe the experiment cell, not the training/search procedure
CELL_KEYS = ("seed", *RUNTIME_KEYS, "data", "budget", "search.method")


@dataclass(frozen=True)
class Cell:
    """One grid cell; ``sparsity`` is None for the full-size model."""

    dataset: str
    model: str
    method: str
    sparsity: float | None
    seed: int

    @property
    def cell_id(self) -> str:
        name = Path(self.dataset).name if os.sep in self.dataset else self.dataset
        budget = "" if self.sparsity is None else f"-s{self.sparsity:g}"
        return f"{name}-{self.model}-{self.method}{budget}-seed{self.seed}"


def expand_grid(
    datasets: Sequence[str],
    models: Sequence[str],
    methods: Sequence[str],
    sparsities: Sequence[float],
    seeds: Sequence[int],
) -> list[Cell]:
    """All cells in run order: cheap methods first, then the searches, sparsity before seed.

    The full-size model appears once per (dataset, backbone, seed).
    """
    for label, values in (
        ("datasets", datasets),
        ("models", models),
        ("methods", methods),
        ("seeds", seeds),
    ):
        if not values:
            raise ConfigError(f"the grid needs at least one of --{label}")
        if len(set(values)) != len(values):
            raise ConfigError(f"--{label} lists a value twice: {list(values)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    budgeted = [m for m in methods if m != "full"]
    if budgeted and not sparsities:
        raise ConfigError("methods other than full need --sparsities, e.g. 0.8,0.9,0.95")
    for s in sparsities:
        if not 0.0 < s < 1.0:
            raise ConfigError(f"sparsity {s} must lie in (0, 1), e.g. 0.9 keeps 10% of the table")
    if len(set(sparsities)) != len(sparsities):
        raise ConfigError(f"--sparsities lists a value twice: {list(sparsities)}")
    cells = []
    for method in methods:
        for d in datasets:
            for mo in models:
                for sp in [None] if method == "full" else sparsities:
                    for seed in seeds:
                        cells.append(Cell(d, mo, method, sp, seed))
    order = {m: i for i, m in enumerate(METHODS)}

    def key(c: Cell) -> tuple[int, int, int, int, int, int]:
        return (
            0 if c.method in CHEAP else 1,
            list(datasets).index(c.dataset),
            list(models).index(c.model),
            order[c.method],
            -1 if c.sparsity is None else list(sparsities).index(c.sparsity),
            list(seeds).index(c.seed),
        )

    return sorted(cells, key=key)


@dataclass(frozen=True)
class Settings:
    """What every cell starts from: YAML files, ``--set`` overrides and a mapping (e.g. the
    device), resolved per cell so that each backbone gets its own defaults."""

    files: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    updates: Mapping[str, Any] | None = None
    # start from config.fast_preset(backbone): always, never, or (None) per config.FAST_BY_DEFAULT
    fast: bool | None = False


def _deep_update(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, Mapping) and k in out else v
    return out


def cell_config(cell: Cell, settings: Settings | None = None) -> RunConfig:
    """The resolved config of one cell: the settings plus its dataset, backbone, method, budget
    and seed (bet.md defaults, then the backbone's defaults, then files, then overrides).

    Raises:
        ConfigError: a file or override sets a key the grid sets (e.g. ``model.name``).
    """
    st = settings or Settings()
    # the full model ignores the budget; sparsity 0 makes its recorded budget the full table
    sparsity = 0.0 if cell.sparsity is None else cell.sparsity
    mine = {
        "data": {"name": cell.dataset},
        "model": {"name": cell.model},
        "search": {"method": cell.method},
        "budget": {"sparsity": sparsity, "kept_fraction": None, "params": None, "bytes": None},
        "seed": cell.seed,
    }
    cfg = load_config(
        st.files, st.overrides, updates=_deep_update(st.updates or {}, mine), fast=st.fast
    )
    got = {
        "data.name": (cfg.data.name, cell.dataset, "--datasets"),
        "model.name": (cfg.model.name, cell.model, "--models"),
        "search.method": (cfg.search.method, cell.method, "--methods"),
        "budget.sparsity": (cfg.budget.sparsity, sparsity, "--sparsities"),
        "seed": (cfg.seed, cell.seed, "--seeds"),
    }
    for key, (value, want, flag) in got.items():
        if value != want:
            raise ConfigError(
                f"{key} is set to {value!r} by a config file or --set, but the grid sets it per "
                f"cell; remove it and use {flag} instead"
            )
    return cfg


def deviations(cfg: RunConfig) -> dict[str, Any]:
    """Procedure settings that differ from the faithful defaults (bet.md §14.7, with the
    backbone's defaults), as dotted keys."""
    ref = load_config(
        updates={"model": {"name": cfg.model.name}, "search": {"method": cfg.search.method}},
        fast=False,
    ).flat()
    out: dict[str, Any] = {}
    for key, v in cfg.flat().items():
        procedure = key.split(".", 1)[0] in ("model", "train", "eval", "search")
        if procedure and key not in CELL_KEYS and ref[key] != v:
            out[key] = v
    return out


def procedure(changes: Mapping[str, Any]) -> str:
    """``fast`` when settings that differ from bet.md's (dotted keys, as :func:`deviations`
    gives them) make fast mode (bet.md §14.7): a nested Θ0, probes of a fixed number of steps,
    a batch-fitted predictor or warm retraining; else ``faithful``, bet.md's procedure, possibly
    cut down (fewer iterations, shorter probes, step caps) or otherwise changed (a learning
    rate): the changes are listed beside it wherever it is shown."""
    fast = (
        changes.get("search.pretrain.mode") == "nested"
        or changes.get("search.probe.steps") is not None
        or changes.get("search.predictor.update_mode") == "batch"
        or changes.get("search.retrain.init") == "shared"
    )
    return "fast" if fast else "faithful"


def preset(cfg: RunConfig) -> str:
    """The procedure of ``cfg`` (:func:`procedure`), as results.jsonl records it
    (protocol.md §9.2)."""
    return procedure(deviations(cfg))
