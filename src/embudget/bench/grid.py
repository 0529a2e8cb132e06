"""The reproduction grid as one resumable command (``embudget bench``, protocol.md §9.2).

A grid is datasets × backbones × methods × sparsities × seeds. Each cell runs
:func:`~embudget.pipeline.run.run_search` into ``RESULTS_DIR/runs/<cell-id>-<hash8>/`` and, once
finished, appends its records to ``RESULTS_DIR/results.jsonl`` in the long format of
protocol.md §9.2: one line per (run, split, metric, K), all lines of a cell in one write.

Resumption: a cell whose (cell id, config hash) is in ``results.jsonl`` is skipped; an
unfinished run directory is resumed (``resume=True``), so a kill loses at most the running
cell's unfinished search iteration or training. Several ``bench`` processes may share one
results directory (one per core, say): each cell is claimed with a lock file next to its run
directory, a process skips the cells another one holds, and ``results.jsonl`` is only written
under its own lock. The full-size model is one cell per
(dataset, backbone, seed), whatever the sparsities. Cheap cells (full, su, sr) run first; the
pretrained full-size model they cache is reused by the search cells.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from embudget import __version__
from embudget.config import RunConfig, load_config
from embudget.errors import ConfigError
from embudget.io import file_lock, write_text
from embudget.pipeline.run import run_search

log = logging.getLogger(__name__)

SCHEMA = 1
RESULTS_FILE = "results.jsonl"
METHODS = ("full", "su", "sr", "bet", "bet-simple", "bet-random")
CHEAP = ("full", "su", "sr")
# config keys that describe the experiment cell, not the training/search procedure
CELL_KEYS = ("seed", "device", "threads", "cache_dir", "data", "budget", "search.method")


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
        updates={"model": {"name": cfg.model.name}, "search": {"method": cfg.search.method}}
    ).to_dict()
    got = cfg.to_dict()
    out: dict[str, Any] = {}
    for section in ("model", "train", "eval", "search"):
        for k, v in got[section].items():
            key = f"{section}.{k}"
            if key not in CELL_KEYS and ref[section][k] != v:
                out[key] = v
    return out


def preset(cfg: RunConfig) -> str:
    """``faithful`` when the procedure matches bet.md's defaults, else ``fast``."""
    return "fast" if deviations(cfg) else "faithful"


def _split_metric(name: str) -> tuple[str, int | None]:
    if "@" in name:
        metric, k = name.split("@", 1)
        return metric, int(k)
    return name, None


def result_records(
    cell: Cell, cfg: RunConfig, results: Mapping[str, Any], run_dir: str
) -> list[dict[str, Any]]:
    """The long-format lines of one finished cell (protocol.md §9.2)."""
    b = results["budget"]
    common: dict[str, Any] = {
        "schema": SCHEMA,
        "run_id": Path(run_dir).name,
        "cell_id": cell.cell_id,
        "config_hash": results["config_hash"],
        "dataset": results["dataset"],
        "protocol": results["protocol"],
        "split_seed": cfg.data.split_seed,
        "split_fingerprint": results["split_fingerprint"],
        "backbone": results["model"],
        "method": results["method"],
        "preset": preset(cfg),
        "seed": results["seed"],
        "sparsity": b.get("sparsity"),
        "kept_fraction": b.get("kept_fraction"),
        "budget_params": b["params_budget"],
        "params_used": b["params_used"],
        "fraction_of_full": b["fraction_of_full"],
        "dense_params": b.get("dense_params"),
        "bytes_used": b.get("bytes_used"),
        "time_pretrain_s": results["pretrain_seconds"],
        "time_search_s": results["search_seconds"],
        "time_retrain_s": results["retrain_seconds"],
        "time_total_s": results["total_seconds"],
        "n_probes": results["n_probes"],
        "device": results["device"],
        "torch_version": torch.__version__,
        "embudget_version": results.get("embudget_version", __version__),
        "run_dir": run_dir,
    }
    lines = []
    for split in ("valid", "test"):
        block = results[split]
        n_users = block.get("n_users_evaluated")
        for name, value in block.items():
            if name == "n_users_evaluated":
                continue
            metric, k = _split_metric(name)
            lines.append(
                {
                    **common,
                    "split": split,
                    "metric": metric,
                    "k": k,
                    "value": float(value),
                    "n_users_evaluated": n_users,
                }
            )
    for line in lines:
        line["n_records"] = len(lines)  # lets a reader spot a cell cut short mid-write
    return lines


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """The complete cells' records of a results file (a torn last write is dropped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records: list[dict[str, Any]] = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s line %d is not valid JSON (a torn write?); ignored", path, i)
    counts: dict[tuple[str, str], int] = {}
    for r in records:
        key = (r["run_id"], r["config_hash"])
        counts[key] = counts.get(key, 0) + 1
    complete = [r for r in records if counts[(r["run_id"], r["config_hash"])] == r["n_records"]]
    if len(complete) != len(records):
        n_bad = len(records) - len(complete)
        log.warning("%s: %d records of unfinished cells ignored", path, n_bad)
    return complete


def _results_lock(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _tidy_results(path: Path, *, rewrite: bool = True) -> list[dict[str, Any]]:
    """The complete cells of ``path``; with ``rewrite``, the file is rewritten without torn or
    partial cells (so that their rerun leaves no duplicates), under the results lock."""
    with file_lock(_results_lock(path)):
        records = load_results(path)
        if rewrite and path.is_file():
            write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    return records


def _append_cell(path: Path, lines: list[dict[str, Any]]) -> None:
    """All of a cell's lines in one write, flushed to disk, under the results lock."""
    with file_lock(_results_lock(path)), open(path, "a") as f:
        f.write("".join(json.dumps(x) + "\n" for x in lines))
        f.flush()
        os.fsync(f.fileno())


@dataclass
class GridSummary:
    """What :func:`run_grid` did: cell ids run now, skipped (already done), busy (left to the
    process that holds them), and the records."""

    ran: list[str]
    skipped: list[str]
    busy: list[str]
    records: list[dict[str, Any]]
    seconds: float


def run_grid(
    settings: Settings,
    out: str | Path,
    *,
    datasets: Sequence[str],
    models: Sequence[str],
    methods: Sequence[str],
    sparsities: Sequence[float],
    seeds: Iterable[int],
    progress: bool = False,
) -> GridSummary:
    """Run every unfinished cell of the grid into ``out`` (see the module docstring).

    Args:
        settings: files, ``--set`` overrides and updates (device) that every cell starts from.
        out: the results directory; ``results.jsonl`` and ``runs/`` live here.
        progress: show per-run progress bars.

    Returns:
        A :class:`GridSummary`; ``records`` holds every complete cell of ``results.jsonl``.
    """
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(exist_ok=True)
    results_path = out / RESULTS_FILE
    cells = expand_grid(datasets, models, methods, sparsities, list(seeds))
    configs = [cell_config(c, settings) for c in cells]  # validate every cell before running any
    records = _tidy_results(results_path)
    done = {(r["cell_id"], r["config_hash"]) for r in records}
    ran: list[str] = []
    skipped: list[str] = []
    busy: list[str] = []
    log.info("grid: %d cells, %d already in %s", len(cells), len(done), results_path)
    n = len(cells)
    for i, (cell, cfg) in enumerate(zip(cells, configs, strict=True), 1):
        h = cfg.hash()
        if (cell.cell_id, h) in done:
            skipped.append(cell.cell_id)
            log.info("cell %d/%d %s: done, skipped", i, n, cell.cell_id)
            continue
        run_dir = out / "runs" / f"{cell.cell_id}-{h[:8]}"
        with file_lock(run_dir.with_name(run_dir.name + ".lock"), wait=False) as mine:
            if not mine:
                busy.append(cell.cell_id)
                log.info("cell %d/%d %s: running in another process, skipped", i, n, cell.cell_id)
                continue
            # another process may have finished it since this one started
            records = _tidy_results(results_path, rewrite=False)
            done = {(r["cell_id"], r["config_hash"]) for r in records}
            if (cell.cell_id, h) in done:
                skipped.append(cell.cell_id)
                log.info("cell %d/%d %s: done, skipped", i, n, cell.cell_id)
                continue
            started = (run_dir / "config.yaml").is_file()
            log.info("cell %d/%d %s: %s", i, n, cell.cell_id, "resuming" if started else "starting")
            tc = time.perf_counter()
            res = run_search(
                cfg,
                run_dir,
                resume=started,
                overwrite=not started,  # a dir without config.yaml holds no usable state
                progress=progress,
            )
            lines = result_records(cell, cfg, res, str(run_dir.relative_to(out)))
            _append_cell(results_path, lines)
        records.extend(lines)
        done.add((cell.cell_id, h))
        ran.append(cell.cell_id)
        r20 = res["test"].get("recall@20", float("nan"))
        log.info(
            "cell %d/%d %s: finished in %.0fs, params %d, test recall@20 %.4f",
            i,
            n,
            cell.cell_id,
            time.perf_counter() - tc,
            res["budget"]["params_used"],
            r20,
        )
    return GridSummary(ran, skipped, busy, records, time.perf_counter() - t0)
