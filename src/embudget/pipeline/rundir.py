"""A run directory: opening (or reopening, to resume) it, and the files a finished run leaves.

A run directory holds ``config.yaml`` (resolved), ``env.json``, ``run.log``, ``checkpoint.pt``
while training (resume point), ``model.safetensors``, ``per_user_{valid,test}.npz``,
``results.json`` (:class:`~embudget.result.RunResult`), and depending on the kind of run
``metrics.jsonl`` (every validation of ``train``), ``sizes.npz``, ``history.jsonl`` (one line
per search iteration), ``retrain.jsonl`` (finished retrainings) and ``search_state.pt``;
``run.log.failed`` and ``config.yaml.failed`` (numbered) are kept from failed runs that made
no progress before this one reused the directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes

from embudget.config import RunConfig, load_config
from embudget.data.dataset import Dataset
from embudget.errors import ConfigError, DamagedFileError, RunDirError
from embudget.io import (
    RunDir,
    environment,
    file_lock,
    resolve_device,
    save_npz,
    write_bytes,
    write_json,
    write_text,
)
from embudget.models.base import Backbone
from embudget.result import RESULTS_FILE, Kind, Metrics, RunResult
from embudget.training.evaluate import EvalResult
from embudget.training.threads import apply_run_threads

log = logging.getLogger(__name__)


def open_run(
    cfg: RunConfig, out: str | Path, overwrite: bool, resume: bool, kind: Kind | None = None
) -> tuple[RunDir, RunResult | None]:
    """Create (or reopen, to resume) a run directory; return it and its result if finished.

    A directory holding only a failed run (one that stopped before any progress: bad data,
    an infeasible budget; possibly before its ``config.yaml`` was written) is reused, with or
    without ``overwrite``, unless resuming the same config: its log and config are kept as
    ``run.log.failed`` and ``config.yaml.failed`` (numbered when those exist).

    Raises:
        RunDirError: the directory holds another run, or (resuming) another config, or a
            finished result of another ``kind``.
        DamagedFileError: (resuming) its ``config.yaml`` or ``results.json`` is damaged.
    """
    p = Path(out)
    if (p / "run.log").is_file():
        with file_lock(p / "run.log", wait=False) as free:
            if not free:
                raise RunDirError(
                    f"{p} is in use by another running embudget process; wait for it to end "
                    "or choose another --out"
                )
    if holds_failed_run(p) and not (resume and _same_config(p, cfg)):
        retire_failed_run(p)
        return RunDir(p), None
    run = RunDir.create(p, overwrite=overwrite, resume=resume)
    if resume:
        if read_run_config(run.file("config.yaml")).hash() != cfg.hash():
            raise RunDirError(
                f"cannot resume {run.path}: its config.yaml differs from the requested config; "
                "resume with the same --config/--set options, or start a new --out"
            )
        if run.file(RESULTS_FILE).is_file():
            finished = RunResult.read(run.file(RESULTS_FILE))
            if kind is not None and finished.kind != kind:
                raise RunDirError(
                    f"cannot resume {run.path} as a {kind} run: it holds a finished "
                    f"{finished.kind} run; use another --out"
                )
            return run, finished
    return run, None


#: what a run writes before it has made any progress worth keeping (then a failure leaves only
#: these), and what retiring a failed run leaves
_NO_PROGRESS = ("config.yaml", "env.json", "run.log", "metrics.jsonl", "history.jsonl")
_RETIRED = ("run.log.failed", "config.yaml.failed")


def read_run_config(path: Path) -> RunConfig:
    """A run directory's resolved ``config.yaml``.

    Raises:
        DamagedFileError: the file is not UTF-8 text or not a valid config.
    """
    fix = "start the run again with --overwrite"
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DamagedFileError(path, f"not UTF-8 text: {e}", fix) from None
    try:
        return load_config([path], fast=False)
    except ConfigError as e:
        raise DamagedFileError(path, f"not a valid config: {e}", fix) from None


def holds_failed_run(path: Path) -> bool:
    """Whether ``path`` holds an embudget run (its ``run.log``) that made no progress: nothing
    but the files a run writes before its first checkpoint, and earlier failed runs' logs."""
    if not (path / "run.log").is_file():
        return False
    for f in path.iterdir():
        n = f.name
        if n.startswith(".") and n.endswith(".tmp"):  # an atomic write cut short
            continue
        if n not in _NO_PROGRESS and not n.startswith(_RETIRED):
            return False
    return True


def retire_failed_run(path: Path) -> None:
    """Keep a failed run's log and config under numbered ``.failed`` names; remove the rest."""
    n = 0
    while any((path / f"{r}{f'.{n}' if n else ''}").exists() for r in _RETIRED):
        n += 1
    suffix = f".{n}" if n else ""
    for name in ("run.log", "config.yaml"):
        if (path / name).is_file():
            (path / name).rename(path / f"{name}.failed{suffix}")
    for f in path.iterdir():
        if f.name in _NO_PROGRESS or (f.name.startswith(".") and f.name.endswith(".tmp")):
            f.unlink()
    log.warning(
        "%s held only a failed run; starting a new one there (its log is kept as run.log.failed%s)",
        path,
        suffix,
    )


def _same_config(path: Path, cfg: RunConfig) -> bool:
    try:
        return read_run_config(path / "config.yaml").hash() == cfg.hash()
    except (OSError, DamagedFileError):
        return False


def start_run(cfg: RunConfig, run: RunDir, dataset: Dataset | None = None) -> torch.device:
    """Apply the runtime settings and record the resolved config and environment. An unset
    ``threads`` is chosen from the run's step work and ``dataset`` (training.threads)."""
    apply_run_threads(cfg, dataset)
    device = resolve_device(cfg.device)
    write_text(run.file("config.yaml"), cfg.to_yaml())
    write_json(run.file("env.json"), environment(device))
    return device


def metrics_of(res: EvalResult) -> Metrics:
    """The means and user count of one evaluation."""
    return Metrics({k: float(v) for k, v in res.means.items()}, res.n_users_evaluated)


def save_weights(model: Backbone, path: Path) -> None:
    """Dense tensors of the state dict (parameters and sizes) as safetensors, atomically."""
    tensors = {
        k: v.detach().contiguous().cpu()
        for k, v in model.state_dict().items()
        if isinstance(v, torch.Tensor) and v.layout == torch.strided
    }
    # serialised in memory and written by io: safetensors' own writer reports a full disk as
    # SafetensorError, io as a typed FileAccessError naming the path
    write_bytes(path, safetensors_bytes(tensors))


def save_per_user(path: Path, res: EvalResult) -> None:
    save_npz(path, users=res.users, **res.per_user)


def model_sizes(model: Backbone) -> tuple[np.ndarray, np.ndarray]:
    """The per-user and per-item sizes of a backbone's ID tables (int64)."""
    us = model.user_tables()[0].sizes.cpu().numpy().astype(np.int64)
    vs = model.item_tables()[0].sizes.cpu().numpy().astype(np.int64)
    return us, vs


def save_final(
    run: RunDir,
    model: Backbone,
    valid: EvalResult,
    test: EvalResult,
    sizes: tuple[np.ndarray, np.ndarray, Dataset] | None = None,
) -> None:
    """The kept model's files: weights, per-user scores and (``sizes``: the size arrays with
    the dataset's raw ids) ``sizes.npz``."""
    if sizes is not None:
        us, vs, dataset = sizes
        save_npz(
            run.file("sizes.npz"),
            user_sizes=us.astype(np.int16),
            item_sizes=vs.astype(np.int16),
            user_ids=dataset.user_ids,
            item_ids=dataset.item_ids,
        )
    save_weights(model, run.file("model.safetensors"))
    save_per_user(run.file("per_user_valid.npz"), valid)
    save_per_user(run.file("per_user_test.npz"), test)
