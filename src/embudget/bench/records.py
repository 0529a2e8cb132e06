"""The long-format records of a grid's ``results.jsonl`` (protocol.md §9.2); no torch.

One line per (run, split, metric, K); all lines of a cell are written at once and each carries
``n_records``, so a reader drops a cell cut short by a torn write. A line of another schema
version, or one that is not a record, is a :class:`~embudget.errors.ResultError`.

A run's config comes from its run directory's ``config.yaml`` or, where the run directory is not
at hand (committed results keep none), from the folder's ``settings.json``
(:func:`record_settings`), whose entries count only when they rebuild the recorded config hash.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from embudget.bench.cells import Cell, Settings, cell_config, deviations, preset
from embudget.config import RunConfig, load_config
from embudget.errors import ConfigError, ResultError
from embudget.io import atomic_path
from embudget.result import RunResult, Training

log = logging.getLogger(__name__)

SCHEMA = 1
RESULTS_FILE = "results.jsonl"
#: each run's settings that differ from the faithful defaults, kept beside a committed
#: results.jsonl whose run directories are not (written by :func:`record_settings`)
SETTINGS_FILE = "settings.json"
SETTINGS_ABOUT = (
    "Each run's procedure settings that differ from bet.md's defaults and its backbone's preset "
    "(embudget.bench.cells.deviations), recovered by matching the recorded config hash. "
    "`embudget report` and `embudget report --paper` rebuild each run's config from these settings "
    "and use them only where its hash equals the one in results.jsonl."
)


def _split_metric(name: str) -> tuple[str, int | None]:
    if "@" in name:
        metric, k = name.split("@", 1)
        return metric, int(k)
    return name, None


def result_records(
    cell: Cell, cfg: RunConfig, result: RunResult, run_dir: str
) -> list[dict[str, Any]]:
    """The long-format lines of one finished cell (protocol.md §9.2)."""
    usage, timing = result.usage, result.timing
    common: dict[str, Any] = {
        "schema": SCHEMA,
        "run_id": Path(run_dir).name,
        "cell_id": cell.cell_id,
        "config_hash": result.config_hash,
        "dataset": result.dataset,
        "protocol": result.protocol,
        "split_seed": cfg.data.split_seed,
        "split_fingerprint": result.split_fingerprint,
        "backbone": result.backbone,
        "method": result.method,
        "preset": preset(cfg),
        "seed": result.seed,
        "sparsity": result.sparsity,
        "kept_fraction": result.kept_fraction,
        "budget_params": usage.params_budget,
        "params_used": usage.params,
        "fraction_of_full": usage.fraction_of_full,
        "dense_params": usage.dense_params,
        "bytes_used": usage.bytes,
        "time_pretrain_s": timing.pretrain,
        "time_search_s": timing.search,
        "time_retrain_s": timing.retrain,
        "time_total_s": timing.total,
        "n_probes": result.n_probes,
        "device": result.device,
        "torch_version": result.torch_version,
        "embudget_version": result.embudget_version,
        "run_dir": run_dir,
        # how the kept model's and Θ0's fits ended (None: not recorded by the run); added
        # after the first committed results, which lack them
        **_fit_fields("", result.training),
        **_fit_fields("theta0_", result.theta0_training),
    }
    lines = []
    for split, block in (("valid", result.valid), ("test", result.test)):
        for name, value in block.means.items():
            metric, k = _split_metric(name)
            lines.append(
                {
                    **common,
                    "split": split,
                    "metric": metric,
                    "k": k,
                    "value": float(value),
                    "n_users_evaluated": block.n_users_evaluated,
                }
            )
    for line in lines:
        line["n_records"] = len(lines)  # lets a reader spot a cell cut short mid-write
    return lines


#: what the records keep of how a fit ended (:class:`~embudget.result.Training`)
_FIT_NAMES = ("steps", "best_step", "stopped_early")
#: those record fields, for the kept model and (``theta0_``) for Θ0
FIT_FIELDS = tuple(f"{prefix}{name}" for prefix in ("", "theta0_") for name in _FIT_NAMES)


def _fit_fields(prefix: str, training: Training | None) -> dict[str, Any]:
    return {
        f"{prefix}{name}": None if training is None else getattr(training, name)
        for name in _FIT_NAMES
    }


#: the fields :func:`load_results` needs to tell whether a cell was written completely
_CELL_FIELDS = ("run_id", "config_hash", "n_records")


def _checked(record: Any, path: Path, line: int) -> dict[str, Any]:
    """``record`` if it is a record of this :data:`SCHEMA`; else a ResultError saying why."""
    where = f"{path} line {line}"
    if not isinstance(record, dict):
        raise ResultError(f"{where} is not a record (a JSON object) but {type(record).__name__}")
    schema = record.get("schema")
    if schema != SCHEMA:
        found = "no schema version" if schema is None else f"schema {schema!r}"
        raise ResultError(
            f"{where} has {found}; this embudget reads schema {SCHEMA}. The file was written "
            "by another embudget version: rerun the grid into a new --out"
        )
    missing = [k for k in _CELL_FIELDS if k not in record]
    if missing:
        raise ResultError(f"{where} lacks the field(s) {', '.join(missing)}")
    return record


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """The complete cells' records of a results file (a torn last write is dropped).

    Raises:
        ResultError: the file cannot be read, or a line is a JSON value but not a record of
            this schema version.
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ResultError(f"{path} cannot be read ({e})") from None
    records: list[dict[str, Any]] = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s line %d is not valid JSON (a torn write?); ignored", path, i)
            continue
        records.append(_checked(record, path, i))
    counts: dict[tuple[str, str], int] = {}
    for r in records:
        key = (r["run_id"], r["config_hash"])
        counts[key] = counts.get(key, 0) + 1
    complete = [r for r in records if counts[(r["run_id"], r["config_hash"])] == r["n_records"]]
    if len(complete) != len(records):
        n_bad = len(records) - len(complete)
        log.warning("%s: %d records of unfinished cells ignored", path, n_bad)
    return complete


def record_settings(folder: Path) -> dict[str, Any]:
    """Write ``folder/settings.json`` from its run directories' ``config.yaml`` (before the
    folder is committed without them); a run whose directory is gone keeps its entry of the
    existing ``settings.json`` (a committed folder that new runs extend). Every entry is checked
    to rebuild its run's recorded config hash.

    Raises:
        ResultError: a run has neither a ``config.yaml`` nor an entry that rebuilds its hash, or
            its ``config.yaml`` does not give the recorded hash.
    """
    folder = Path(folder)
    kept = recorded_settings(folder)
    runs: dict[str, Any] = {}
    for meta in load_results(folder / RESULTS_FILE):
        path = folder / meta["run_dir"] / "config.yaml"
        if path.is_file():
            cfg = load_config([path], fast=False)
            if cfg.hash() != meta["config_hash"]:
                raise ResultError(
                    f"{path} does not give the recorded config hash of {meta['run_id']}"
                )
            changes = deviations(cfg)
        elif isinstance(kept.get(meta["run_id"]), dict):
            changes = kept[meta["run_id"]]
        else:
            raise ResultError(
                f"{path} is missing and {folder / SETTINGS_FILE} has no entry for "
                f"{meta['run_id']}: settings are recorded from the run directories"
            )
        if config_from_settings(meta, changes, folder) is None:
            raise ResultError(f"the settings of {meta['run_id']} do not rebuild its config hash")
        runs[meta["run_id"]] = changes
    doc = {"schema": 1, "about": SETTINGS_ABOUT, "runs": dict(sorted(runs.items()))}
    with atomic_path(folder / SETTINGS_FILE) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
    return runs


def recorded_settings(folder: Path) -> dict[str, Any]:
    """run id -> the run's settings that differ from the faithful defaults, from
    ``folder/settings.json`` ({} without one).

    Raises:
        ResultError: the file is not JSON or holds no ``runs`` object.
    """
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


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *head, last = key.split(".")
        node = out
        for h in head:
            node = node.setdefault(h, {})
        node[last] = value
    return out
