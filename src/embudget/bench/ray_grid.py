"""The cells of a grid as Ray tasks (``embudget bench --workers N`` or ``--ray-address``).

Each task runs :func:`embudget.bench.grid.run_cell`, the serial grid's claim-run-append step:
the cell's lock file, the re-check of ``results.jsonl`` under its lock and the single append
of the cell's lines are the same, so resumption, several processes sharing one results
directory and no duplicate records hold as they do without Ray. The results directory (and
the cache directory and datasets, when given as relative paths) must be reachable at the same
path from every worker: the driver's working directory is the tasks' working directory.
Tasks start in grid order (cheap cells first), at most ``workers`` at a time; a search cell
whose Θ0 another task is pretraining waits on the cache's lock and then loads it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embudget.bench.cells import Cell
from embudget.bench.grid import CellOutcome, run_cell
from embudget.config import RunConfig
from embudget.search.parallel import active_pool, import_ray


def _cell_task(cell: Cell, cfg: RunConfig, out: str, label: str, cwd: str) -> CellOutcome:
    """One cell in a Ray worker, from the driver's working directory, without progress bars."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
    return run_cell(cell, cfg, Path(out), label, progress=False)


def run_cells(pending: Sequence[tuple[str, Cell, RunConfig]], out: Path) -> list[CellOutcome]:
    """Run ``(label, cell, config)`` triples as Ray tasks; their outcomes in the same order.

    A failed cell's error is raised once the cells already running have finished.
    """
    pool = active_pool()
    assert pool is not None, "run_cells runs inside search.parallel.ray_workers"
    ray = import_ray()
    task = ray.remote(num_cpus=1, max_retries=0)(_cell_task)
    out_abs, cwd = str(Path(out).resolve()), os.getcwd()
    outcomes: dict[int, CellOutcome] = {}
    running: dict[Any, int] = {}
    error: BaseException | None = None
    nxt = 0
    while nxt < len(pending) or running:
        while error is None and nxt < len(pending) and len(running) < pool.workers:
            label, cell, cfg = pending[nxt]
            running[task.remote(cell, cfg, out_abs, label, cwd)] = nxt
            nxt += 1
        if not running:
            break
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            i = running.pop(ref)
            try:
                outcomes[i] = ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # the cell's own error, wrapped by Ray
                cause = e.cause if isinstance(e.cause, BaseException) else e
                error = error or cause
    if error is not None:
        raise error
    return [outcomes[i] for i in range(len(pending))]
