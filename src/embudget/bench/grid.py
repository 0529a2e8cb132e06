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
under its own lock. Inside :func:`embudget.search.parallel.ray_workers` (``--workers``) the
cells run as Ray tasks with the same claims and appends (:mod:`embudget.bench.ray_grid`).
The full-size model is one cell per
(dataset, backbone, seed), whatever the sparsities. Cheap cells (full, su, sr) run first; the
pretrained full-size model they cache is reused by the search cells.

The cells and their configs are in :mod:`embudget.bench.cells`, the record format in
:mod:`embudget.bench.records` (both free of torch, for the report).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from embudget.bench.cells import (
    CELL_KEYS,
    CHEAP,
    METHODS,
    Cell,
    Settings,
    cell_config,
    deviations,
    expand_grid,
    preset,
)
from embudget.bench.records import RESULTS_FILE, SCHEMA, load_results, result_records
from embudget.config import RunConfig
from embudget.io import file_lock, write_text
from embudget.pipeline.run import run_search
from embudget.search.parallel import active_pool

__all__ = [
    "CELL_KEYS",
    "CHEAP",
    "METHODS",
    "RESULTS_FILE",
    "SCHEMA",
    "Cell",
    "CellOutcome",
    "GridSummary",
    "Settings",
    "cell_config",
    "deviations",
    "expand_grid",
    "load_results",
    "preset",
    "result_records",
    "run_cell",
    "run_grid",
]

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class CellOutcome:
    """What became of one cell: ``ran`` now (with its records), ``skipped`` (another process
    finished it meanwhile) or ``busy`` (another process holds it)."""

    status: Literal["ran", "skipped", "busy"]
    lines: tuple[dict[str, Any], ...] = ()


def run_cell(cell: Cell, cfg: RunConfig, out: Path, label: str, progress: bool) -> CellOutcome:
    """Run one cell into ``out`` and append its records, if no other process holds or has
    finished it (see the module docstring); ``label`` names it in the log."""
    h = cfg.hash()
    results_path = out / RESULTS_FILE
    run_dir = out / "runs" / f"{cell.cell_id}-{h[:8]}"
    with file_lock(run_dir.with_name(run_dir.name + ".lock"), wait=False) as mine:
        if not mine:
            log.info("%s: running in another process, skipped", label)
            return CellOutcome("busy")
        # another process may have finished it since this one started
        records = _tidy_results(results_path, rewrite=False)
        if (cell.cell_id, h) in {(r["cell_id"], r["config_hash"]) for r in records}:
            log.info("%s: done, skipped", label)
            return CellOutcome("skipped")
        started = (run_dir / "config.yaml").is_file()
        log.info("%s: %s", label, "resuming" if started else "starting")
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
    log.info(
        "%s: finished in %.0fs, params %d, test recall@20 %.4f",
        label,
        time.perf_counter() - tc,
        res.usage.params,
        res.test.get("recall@20"),
    )
    return CellOutcome("ran", tuple(lines))


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
    pending: list[tuple[str, Cell, RunConfig]] = []
    for i, (cell, cfg) in enumerate(zip(cells, configs, strict=True), 1):
        if (cell.cell_id, cfg.hash()) in done:
            skipped.append(cell.cell_id)
            log.info("cell %d/%d %s: done, skipped", i, n, cell.cell_id)
        else:
            pending.append((f"cell {i}/{n} {cell.cell_id}", cell, cfg))
    outcomes: Iterable[CellOutcome]
    if active_pool() is not None:  # inside search.parallel.ray_workers: cells as Ray tasks
        from embudget.bench.ray_grid import run_cells

        outcomes = run_cells(pending, out)
    else:
        outcomes = (run_cell(cell, cfg, out, label, progress) for label, cell, cfg in pending)
    for (_, cell, _), outcome in zip(pending, outcomes, strict=True):
        {"ran": ran, "skipped": skipped, "busy": busy}[outcome.status].append(cell.cell_id)
    records = _tidy_results(results_path, rewrite=False)
    return GridSummary(ran, skipped, busy, records, time.perf_counter() - t0)
