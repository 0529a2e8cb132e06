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
from embudget.bench.cells import BASELINES, Cell, Settings, cell_config, deviations
from embudget.bench.paper_markdown import BET_DEFAULTS, PaperRow, mode, render
from embudget.bench.records import RESULTS_FILE, load_results
from embudget.config import RunConfig, load_config
from embudget.errors import ConfigError, ResultError, RunDirError
from embudget.io import atomic_path

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
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


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *head, last = key.split(".")
        node = out
        for h in head:
            node = node.setdefault(h, {})
        node[last] = value
    return out


def _recorded_settings(folder: Path) -> dict[str, Any]:
    """run id -> backbone-relative settings from ``folder/settings.json`` ({} without one)."""
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultError(f"{path} cannot be read ({e})") from None
    runs = doc.get("runs") if isinstance(doc, dict) else None
    if not isinstance(runs, dict):
        raise ResultError(f"{path} holds no 'runs' object")
    return runs


def run_config(folder: Path, meta: dict[str, Any], recorded: dict[str, Any]) -> RunConfig | None:
    """The run's resolved config: its ``config.yaml``, else rebuilt from ``recorded`` and
    accepted only if it has the recorded hash; None when neither gives it."""
    path = folder / meta["run_dir"] / "config.yaml"
    if path.is_file():
        try:
            return load_config([path], fast=False)
        except ConfigError as e:  # e.g. written by an older embudget: try settings.json
            log.warning("%s does not load (%s)", path, e)
    changes = recorded.get(meta["run_id"])
    if not isinstance(changes, dict):
        return None
    return config_from_settings(meta, changes, folder)


def config_from_settings(
    meta: dict[str, Any], changes: dict[str, Any], folder: Path
) -> RunConfig | None:
    """The run's config rebuilt from its recorded settings, or None (logged) when they do not
    load or do not give the run's recorded config hash."""
    sparsity = None if meta["method"] == "full" else meta["sparsity"]
    cell = Cell(meta["dataset"], meta["backbone"], meta["method"], sparsity, int(meta["seed"]))
    data = {"data.protocol": meta["protocol"], "data.split_seed": meta["split_seed"]}
    try:
        cfg = cell_config(cell, Settings(updates=_nested({**changes, **data}), fast=False))
    except ConfigError as e:
        log.warning("%s: the settings of %s do not load (%s)", folder, meta["run_id"], e)
        return None
    if cfg.hash() != meta["config_hash"]:
        log.warning("%s: the settings of %s do not give its config hash", folder, meta["run_id"])
        return None
    return cfg


SETTINGS_ABOUT = (
    "Each run's procedure settings that differ from bet.md's defaults and its backbone's preset "
    "(embudget.bench.cells.deviations), recovered by matching the recorded config hash. "
    "`embudget report --paper` rebuilds each run's config from these settings and uses them only "
    "where its hash equals the one in results.jsonl."
)


def record_settings(folder: Path) -> dict[str, Any]:
    """Write ``folder/settings.json`` from its run directories' ``config.yaml`` (before the
    folder is committed without them); every entry is checked to rebuild its run's hash.

    Raises:
        ResultError: a run directory's config is missing, does not give the recorded hash, or
            its settings do not rebuild it.
    """
    runs: dict[str, Any] = {}
    for meta in load_results(Path(folder) / RESULTS_FILE):
        path = Path(folder) / meta["run_dir"] / "config.yaml"
        if not path.is_file():
            raise ResultError(f"{path} is missing: settings are recorded from the run directories")
        cfg = load_config([path], fast=False)
        if cfg.hash() != meta["config_hash"]:
            raise ResultError(f"{path} does not give the recorded config hash of {meta['run_id']}")
        changes = deviations(cfg)
        if config_from_settings(meta, changes, Path(folder)) is None:
            raise ResultError(f"the settings of {meta['run_id']} do not rebuild its config hash")
        runs[meta["run_id"]] = changes
    doc = {"schema": 1, "about": SETTINGS_ABOUT, "runs": dict(sorted(runs.items()))}
    with atomic_path(Path(folder) / SETTINGS_FILE) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
    return runs


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
        recorded = _recorded_settings(folder)
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
    parts = ["## The BET paper's Table 1 beside ours", "", render(rows, len(files))]
    parts += [f"> **Note.** {n}\n" for n in notes]
    return PaperReport("\n".join(parts), rows, notes)
