"""Our figures beside the BET paper's Table 1: ``embudget report --paper`` (no torch).

From any number of grid ``results.jsonl`` files, one row per cell of the paper's Table 1 that
was run (dataset, backbone, sparsity, method) and per procedure: runs whose settings agree up
to the seed are one row, their test means taken over the seeds. Beside each figure: the
paper's (:mod:`embudget.bench.paper_table`; blank where no source gives it), our figure over
the paper's, BET / SU here and in the paper, the paired t-test against the SU row trained the
same way (protocol.md §8), and every setting that differs from bet.md's, which is the reduction
that applies to that figure.

A run's settings come from its run directory's ``config.yaml`` or, where the run directory is
not at hand (committed results hold none), from the results folder's ``settings.json``, whose
entries are used only when they rebuild the run's recorded config hash.
"""

from __future__ import annotations

import glob
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from embudget.bench import paper_table
from embudget.bench.aggregate import Row, _runs
from embudget.bench.cells import BASELINES
from embudget.bench.paper_markdown import (
    BET_DEFAULTS,
    PaperRow,
    against_su,
    mode,
    render,
    render_headline,
)
from embudget.bench.records import (
    RESULTS_FILE,
    SETTINGS_FILE,
    load_results,
    recorded_settings,
    run_config,
)
from embudget.config import RunConfig
from embudget.errors import ResultError, RunDirError

log = logging.getLogger(__name__)

_PROCEDURE = ("model", "train", "eval", "search")
_NOT_PROCEDURE = ("model.name", "search.method")
#: settings a baseline (SU, SR) never reads: the search's
_SEARCH_ONLY = (
    "search.iterations",
    "search.sampler.",
    "search.probe.",
    "search.predictor.",
    "search.retrain.top",
)


@dataclass
class PaperReport:
    """What :func:`paper_report` found and rendered."""

    markdown: str
    rows: list[PaperRow]
    notes: list[str]


def find_results(paths: Sequence[str | Path]) -> list[Path]:
    """The ``results.jsonl`` files named by ``paths``: files, results directories, folders
    searched recursively, or glob patterns of any of these.

    Raises:
        RunDirError: a path matches nothing, or no results file is found.
    """
    found: list[Path] = []
    for p in map(str, paths):
        matches = sorted(glob.glob(p, recursive=True)) if glob.has_magic(p) else [p]
        if not matches or not Path(matches[0]).exists():
            raise RunDirError(f"{p} matches no file or directory")
        for m in map(Path, matches):
            if m.is_file():
                found.append(m)
            elif (m / RESULTS_FILE).is_file():
                found.append(m / RESULTS_FILE)
            else:
                found += sorted(m.rglob(RESULTS_FILE))
    unique = list(dict.fromkeys(found))
    if not unique:
        raise RunDirError(f"no {RESULTS_FILE} under {', '.join(map(str, paths))}")
    return unique


def bet_deviations(cfg: RunConfig) -> dict[str, Any]:
    """The procedure settings of ``cfg`` that differ from bet.md's (backbone presets included,
    e.g. NCF's learning rate)."""
    return {
        k: v
        for k, v in cfg.flat().items()
        if k.split(".", 1)[0] in _PROCEDURE and k not in _NOT_PROCEDURE and BET_DEFAULTS[k] != v
    }


def _relevant(settings: dict[str, Any], method: str) -> dict[str, Any]:
    """The settings that can change a run of ``method``: a baseline ignores the search's, and
    one retrained from scratch ignores Θ0's (its training cap is the retraining's)."""
    if method not in BASELINES:
        return dict(settings)
    out = {k: v for k, v in settings.items() if not k.startswith(_SEARCH_ONLY)}
    if out.get("search.retrain.init") != "shared":
        for name in ("max_steps", "patience"):
            cap = out.pop(f"search.retrain.{name}", None)
            if cap is not None:
                out[f"train.{name}"] = cap
            if out.get(f"train.{name}") == BET_DEFAULTS[f"train.{name}"]:
                del out[f"train.{name}"]
        out = {
            k: v
            for k, v in out.items()
            if not k.startswith(("search.pretrain.", "search.retrain.validate_first"))
        }
    return out


def collect(results_files: Sequence[Path]) -> tuple[list[PaperRow], list[str]]:
    """The rows of every Table 1 cell in ``results_files``; also notes on what was left out."""
    grid = paper_table.GRID
    rows: dict[tuple[Any, ...], PaperRow] = {}
    unknown: list[str] = []
    outside: dict[str, set[str]] = {}
    for path in results_files:
        folder = path.parent
        runs, _ = _runs(load_results(path))
        recorded = recorded_settings(folder)
        for run in sorted(runs, key=lambda r: (r.seed, r.run_id)):
            m = run.meta
            cell_ok = (
                m["protocol"] == "paper"
                and m["dataset"] in grid["datasets"]
                and m["backbone"] in grid["backbones"]
                and run.method in grid["methods"]
                and run.sparsity in grid["sparsities"]
            )
            if not cell_ok:
                if run.method != "full":
                    where = f"{m['dataset']} {m['backbone']} (protocol {m['protocol']})"
                    outside.setdefault(where, set()).add(run.method.upper())
                continue
            assert run.sparsity is not None
            cfg = run_config(folder, m, recorded)
            settings = None if cfg is None else _relevant(bet_deviations(cfg), run.method)
            if settings is None:
                unknown.append(f"{folder}/{run.run_id}")
            setting_key = (
                json.dumps(settings, sort_keys=True) if settings is not None else str(folder)
            )
            key = (m["dataset"], m["protocol"], m["backbone"], run.sparsity, run.method)
            row = rows.get((*key, setting_key))
            if row is None:
                row = rows[(*key, setting_key)] = PaperRow(
                    *key, settings=settings, row=Row(run.method, run.sparsity, {})
                )
            if str(folder) not in row.folders:
                row.folders.append(str(folder))
            row.devices.add(str(m["device"]))
            if run.seed not in row.row.runs:  # the same run twice (two folders): the first
                row.row.runs[run.seed] = replace(run, run_dir=str(folder / run.run_dir))
    notes = []
    if unknown:
        notes.append(
            f"{len(unknown)} run(s) without recorded settings (no config.yaml, no matching "
            f"{SETTINGS_FILE} entry): " + ", ".join(unknown)
        )
    if outside:
        listed = (f"{k}: {', '.join(sorted(v))}" for k, v in sorted(outside.items()))
        notes.append("Runs outside the paper's Table 1, not shown: " + "; ".join(listed) + ".")
    order = {name: i for i, name in enumerate(grid["methods"])}
    ranked = sorted(
        rows.values(),
        key=lambda r: (
            grid["datasets"].index(r.dataset),
            grid["backbones"].index(r.backbone),
            r.sparsity,
            order[r.method],
            mode(r.settings) != "faithful",
            json.dumps(r.settings, sort_keys=True),
        ),
    )
    for r in ranked:
        if r.method not in BASELINES and r.method != "full":
            r.su = su_row(ranked, r)
    return ranked, notes


def su_row(rows: Sequence[PaperRow], bet: PaperRow) -> PaperRow | None:
    """The SU row trained as ``bet``'s tables were (same cell, same baseline-relevant settings)."""
    if bet.settings is None:
        return None
    want = _relevant(bet.settings, "su")
    return next(
        (
            r
            for r in rows
            if r.method == "su"
            and (r.dataset, r.protocol, r.backbone, r.sparsity)
            == (bet.dataset, bet.protocol, bet.backbone, bet.sparsity)
            and r.settings == want
        ),
        None,
    )


def paper_report(paths: Sequence[str | Path]) -> PaperReport:
    """The paper table for the results files under ``paths`` (see :func:`find_results`).

    Raises:
        RunDirError: no results file, or none of its runs is a cell of the paper's Table 1.
        ResultError: a results or settings file cannot be read.
    """
    files = find_results(paths)
    try:
        rows, notes = collect(files)
    except KeyError as e:
        raise ResultError(f"a record lacks the field {e}") from None
    except (TypeError, ValueError) as e:
        raise ResultError(f"a record has a field of the wrong type ({e})") from None
    if not rows:
        grid = paper_table.GRID
        raise RunDirError(
            f"none of the runs in {', '.join(map(str, files))} is a cell of the paper's Table 1 "
            f"({', '.join(grid['datasets'])} × {', '.join(grid['backbones'])} × "
            f"{', '.join(grid['methods'])}, protocol paper)"
        )
    vs_su = against_su(rows)
    parts = [
        "## The BET paper's Table 1 beside ours",
        "",
        "**At a glance**: BET against SU at the same budget, one row per cell.",
        "",
        render_headline(rows, vs_su),
        "**Every cell and procedure**:",
        "",
        render(rows, len(files), vs_su),
    ]
    parts += [f"> **Note.** {n}\n" for n in notes]
    return PaperReport("\n".join(parts), rows, notes)
