"""Rewrite results recorded with format-1 config hashes to the current format (HASH_FORMAT).

Format 1 hashed every setting of a flat ``search`` section (with a list of later additions left
out at their default); format 2 hashes the changes from the defaults of the nested sections.
A cell of ``results.jsonl`` carries its hash three times: ``config_hash``, ``run_id`` and
``run_dir`` (``runs/<cell id>-<hash8>``). For each cell this script

1. rebuilds the cell's config with ``embudget.bench.cells.cell_config`` from the record's
   dataset, backbone, method, sparsity and seed and one of its folder's settings in
   :data:`FOLDERS` (the ``--set`` options its RESULTS.md commands used, in format-2 names),
2. recomputes the format-1 hash of that config with a frozen copy of the format-1 hash
   (:func:`legacy_hash`) and accepts the config only if it equals the recorded hash,
3. then rewrites the three fields with the config's current hash and renames the run folder.

Run folders that hold their own ``config.yaml`` (unfinished cells, runs kept outside git, any
``embudget search`` or ``train`` output) are rewritten from that file: ``config.yaml`` in
format 2, the hash in ``results.json`` and in the search state, and a grid run folder's name
(``runs/<cell id>-<hash8>``). Cells that no candidate reproduces are reported and left alone.
Rerunning is harmless: cells already in the current format are recognised and skipped.

    python scripts/migrate_results.py [ROOT ...] [--dry-run]   # default: results/
    # ROOT: a results directory, a folder of them, or one run directory
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from embudget.bench.cells import Cell, Settings, cell_config
from embudget.config import LEGACY_KEYS, RUNTIME_KEYS, RunConfig, load_config
from embudget.config.legacy import upgrade
from embudget.errors import ConfigError

# --------------------------------------------------------------------------------------------
# the format-1 hash, frozen
# --------------------------------------------------------------------------------------------
#: format-1 settings added after the first release, hashed only away from their default
LEGACY_OMIT_AT_DEFAULT: dict[str, Any] = {
    "train.eval_user_fraction": 1.0,
    "search.pretrain": "standard",
    "search.nested_kept_min": 0.03,
    "search.finetune_steps": None,
    "search.retrain_init": "scratch",
    "search.retrain_patience": None,
    "search.retrain_max_steps": None,
    "search.retrain_validate_first": False,
    "search.predictor_update": "single",
    "search.predictor_output": "leaky_relu",
}
#: the first fast-mode release hashed its six settings always; only the four settings added
#: after it were left out at their default
EARLY_OMIT_AT_DEFAULT = {
    k: LEGACY_OMIT_AT_DEFAULT[k]
    for k in (
        "train.eval_user_fraction",
        "search.retrain_patience",
        "search.retrain_max_steps",
        "search.retrain_validate_first",
    )
}
ERAS = {"format 1": LEGACY_OMIT_AT_DEFAULT, "format 1, first fast mode": EARLY_OMIT_AT_DEFAULT}
_OLD_NAME = {new: old for old, new in LEGACY_KEYS.items()}


#: settings added after format 1; format 1 never wrote them
AFTER_FORMAT_1 = (
    "data.user_col",
    "data.item_col",
    "data.time_col",
    "data.sep",
    "data.min_user_interactions",
    "data.min_item_interactions",
    "data.test_fraction",
    "data.valid_fraction",
    "search.probes_per_iteration",
    "search.probe.small_data_users",
    "search.probe.small_data_steps",
    "train.eval_every_epochs",
    "train.min_delta",
)


def legacy_document(cfg: RunConfig) -> dict[str, Any]:
    """``cfg`` as format 1 wrote it: the nested search sections flattened to their old names."""
    doc = cfg.to_dict()
    for key in AFTER_FORMAT_1:
        section, name = key.split(".", 1)
        if section != "search":  # the search section is rebuilt below
            doc[section].pop(name, None)
    search: dict[str, Any] = {}
    for key, value in cfg.flat().items():
        if key.startswith("search.") and key not in AFTER_FORMAT_1:
            search[_OLD_NAME.get(key, key).removeprefix("search.")] = value
    doc["search"] = search
    return doc


def legacy_hash(cfg: RunConfig, omit: dict[str, Any]) -> str:
    """The format-1 ``RunConfig.hash()`` of ``cfg`` with ``omit`` as its omission list."""
    # runtime keys, format 1's three and any added since, were never hashed
    d = {k: v for k, v in legacy_document(cfg).items() if k not in RUNTIME_KEYS}
    for key, default in omit.items():
        section, name = key.split(".")
        if d[section][name] == default:
            del d[section][name]
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# what each results folder ran (RESULTS.md's commands; runtime keys left out)
# --------------------------------------------------------------------------------------------
#: fast mode as MF, NCF and the first LightGCN cells ran it (probes and predictor)
FAST_PROBES = (
    "search.pretrain.mode=nested",
    "search.probe.steps=0",
    "search.probe.user_fraction=0.25",
    "search.predictor.updates=20",
    "search.predictor.update_mode=batch",
    "search.predictor.output=linear",
)
WARM = ("search.retrain.init=shared",)
VALIDATE_FIRST = ("search.retrain.validate_first=true",)
#: LightGCN's later fast mode: the standard Θ0, 20-step probes, retraining from scratch
FAST_STANDARD = (
    "search.probe.steps=20",
    "search.probe.user_fraction=0.25",
    "search.predictor.updates=20",
    "search.predictor.update_mode=batch",
    "search.predictor.output=linear",
)
MF_250 = ("train.eval_every_steps=250",)
MF_FAST = ("train.eval_every_steps=250", "train.max_steps=5000")
LG = ("train.eval_every_steps=500", "train.max_steps=3000")
LG_TOP1 = (*LG, "search.retrain.top=1")
NCF_FAITHFUL = (*LG, "train.eval_user_fraction=0.25")
NCF_FAST = (
    "train.eval_every_steps=500",
    "train.max_steps=5000",
    "train.eval_user_fraction=0.25",
    "search.retrain.top=2",
)
REDUCED_SEARCH = (
    "search.iterations=20",
    "search.probe.epochs=2",
    "search.probe.user_fraction=0.25",
)

#: results folder (relative to the root) -> the candidate settings of its cells
FOLDERS: dict[str, list[tuple[str, ...]]] = {
    "gowalla-mf": [(*MF_250, *REDUCED_SEARCH, "search.retrain.top=2")],
    "gowalla-mf-paper": [MF_250],
    "gowalla-mf-fast": [
        (*MF_FAST, *FAST_PROBES, *WARM),
        (*MF_FAST, *FAST_PROBES, *WARM, "search.retrain.top=2"),
    ],
    "gowalla-mf-fast-vf": [(*MF_FAST, *FAST_PROBES, *WARM, *VALIDATE_FIRST)],
    "gowalla-mf-fastsizes": [(*MF_FAST, *FAST_PROBES)],
    "gowalla-lightgcn": [LG, (*LG, *REDUCED_SEARCH, "search.retrain.top=1")],
    "gowalla-lightgcn-fast": [
        (*LG_TOP1, *FAST_PROBES, *WARM, "search.retrain.max_steps=1000"),
        (*LG_TOP1, *FAST_PROBES, *WARM, "search.retrain.max_steps=500"),
        (*LG_TOP1, *FAST_PROBES, *WARM, *VALIDATE_FIRST, "search.retrain.max_steps=500"),
    ],
    "gowalla-lightgcn-fastsizes": [(*LG_TOP1, *FAST_PROBES, "search.retrain.max_steps=3000")],
    "gowalla-lightgcn-quiet": [(*LG_TOP1, *FAST_STANDARD)],
    "gowalla-lightgcn-std20": [(*LG_TOP1, *FAST_STANDARD)],
    "gowalla-lightgcn-std104": [(*LG_TOP1, *FAST_STANDARD, "search.probe.steps=104")],
    "gowalla-ncf": [NCF_FAITHFUL, (*NCF_FAITHFUL, "search.probe.user_fraction=0.25")],
    "gowalla-ncf-fast": [
        (*NCF_FAST, *FAST_PROBES, *WARM, *VALIDATE_FIRST),
        (*NCF_FAST, *FAST_PROBES, *WARM, *VALIDATE_FIRST, "search.probe.user_fraction=0.1"),
    ],
    "gowalla-ncf-fastsizes": [
        (
            *NCF_FAST,
            *FAST_PROBES,
            "search.probe.user_fraction=0.1",
            "search.retrain.max_steps=3000",
        )
    ],
    "gowalla-ncf-std20": [
        (*NCF_FAITHFUL, *FAST_STANDARD, "search.retrain.top=1"),
    ],
    # the cell run before NCF's own learning rate: BET's 0.03 for training and probes
    "gowalla-ncf-fast-lr0.03": [
        (
            *LG_TOP1,
            "search.retrain.max_steps=1000",
            "train.lr=0.03",
            "search.probe.lr=0.03",
            *FAST_PROBES,
            *WARM,
            *VALIDATE_FIRST,
        )
    ],
    "gpu-h200/lightgcn-80": [LG],
    "gpu-h200/lightgcn-90": [LG, (*LG, "search.retrain.top=3")],
}


# --------------------------------------------------------------------------------------------
# the migration
# --------------------------------------------------------------------------------------------
@dataclass
class Report:
    cells: int = 0
    migrated: int = 0
    current: int = 0
    records: int = 0
    renamed: list[tuple[str, str]] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    eras: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def _cell(rec: dict[str, Any]) -> Cell:
    sparsity = None if rec["method"] == "full" else rec["sparsity"]
    return Cell(rec["dataset"], rec["backbone"], rec["method"], sparsity, rec["seed"])


def _match(cell: Cell, old: str, candidates: list[tuple[str, ...]]) -> tuple[RunConfig, str] | None:
    """The candidate config whose format-1 hash (or current hash) is ``old``, with its era."""
    for overrides in candidates:
        try:
            cfg = cell_config(cell, Settings(overrides=overrides, fast=False))
        except ConfigError:
            continue
        if cfg.hash() == old:
            return cfg, "current"
        for era, omit in ERAS.items():
            if legacy_hash(cfg, omit) == old:
                return cfg, era
    return None


def migrate_results(path: Path, folder: str, dry_run: bool, report: Report) -> None:
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    cells: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for rec in lines:
        cells[(rec["run_id"], rec["config_hash"])].append(rec)
    candidates = FOLDERS.get(folder, [])
    for (run_id, old), recs in cells.items():
        report.cells += 1
        cell = _cell(recs[0])
        found = _match(cell, old, candidates) if cell.cell_id == recs[0]["cell_id"] else None
        if found is None:
            report.unverified.append(f"{folder}: {run_id} (config_hash {old})")
            continue
        cfg, era = found
        new = cfg.hash()
        name = f"{cell.cell_id}-{new[:8]}"
        if era == "current" and run_id == name:
            report.current += 1
            continue
        report.migrated += 1
        report.eras[era] += 1
        report.records += len(recs)
        old_dir = path.parent / recs[0]["run_dir"]
        for rec in recs:
            rec.update(config_hash=new, run_id=name, run_dir=f"runs/{name}")
        if old_dir.is_dir():
            report.renamed.append((str(old_dir), str(path.parent / "runs" / name)))
            if not dry_run:
                old_dir.rename(path.parent / "runs" / name)
    if not dry_run:
        path.write_text("".join(json.dumps(rec) + "\n" for rec in lines))


def migrate_run_dir(run: Path, dry_run: bool, report: Report) -> None:
    """A run folder with its own ``config.yaml`` in format 1: rewritten from that file."""
    doc = yaml.safe_load((run / "config.yaml").read_text()) or {}
    search = doc.get("search") or {}
    if not any(f"search.{k}" in LEGACY_KEYS for k in search):
        return  # already format 2
    report.cells += 1
    cfg = load_config(updates=upgrade(doc), fast=False)
    new = cfg.hash()
    results = run / "results.json"
    recorded = json.loads(results.read_text())["config_hash"] if results.is_file() else None
    if recorded is not None and recorded not in {legacy_hash(cfg, o) for o in ERAS.values()}:
        report.unverified.append(f"{run}: config.yaml does not reproduce {recorded}")
        return
    report.migrated += 1
    target = run
    stem, _, tail = run.name.rpartition("-")
    if run.parent.name == "runs" and len(tail) == 8 and set(tail) <= set("0123456789abcdef"):
        target = run.with_name(f"{stem}-{new[:8]}")  # a grid cell's folder is named by its hash
        report.renamed.append((str(run), str(target)))
    if dry_run:
        return
    (run / "config.yaml").write_text(cfg.to_yaml())
    if results.is_file():
        data = json.loads(results.read_text())
        data["config_hash"] = new
        results.write_text(json.dumps(data, indent=2) + "\n")
    state = run / "search_state.pt"
    if state.is_file():
        from embudget.io import load_torch, save_torch

        obj = load_torch(state)
        obj["config_hash"] = new
        save_torch(state, obj)
    if target != run:
        run.rename(target)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="*", default=["results"], help="results roots (results/)")
    ap.add_argument("--dry-run", action="store_true", help="report, change nothing")
    args = ap.parse_args()
    report = Report()
    for root in map(Path, args.roots):
        for run in sorted(root.glob("**/config.yaml")):
            migrate_run_dir(run.parent, args.dry_run, report)
        for path in sorted(root.glob("**/results.jsonl")):
            migrate_results(path, path.parent.relative_to(root).as_posix(), args.dry_run, report)
    done = "would migrate" if args.dry_run else "migrated"
    eras = "".join(f"; {n} from {era}" for era, n in sorted(report.eras.items()))
    print(
        f"{report.cells} cells: {report.migrated} {done} ({report.records} records{eras}), "
        f"{report.current} already current, {len(report.unverified)} not verified"
    )
    for old, new in report.renamed:
        print(f"run folder {old} -> {new}")
    for line in report.unverified:
        print(f"not verified, left alone: {line}")
    return 1 if report.unverified else 0


if __name__ == "__main__":
    sys.exit(main())
