"""A run directory: opening (or reopening, to resume) it, and the files a finished run leaves.

A run directory holds ``config.yaml`` (resolved), ``env.json``, ``run.log``, ``checkpoint.pt``
while training (resume point), ``model.safetensors``, ``per_user_{valid,test}.npz``,
``results.json`` (:class:`~embudget.result.RunResult`), and depending on the kind of run
``metrics.jsonl`` (every validation of ``train``), ``sizes.npz``, ``history.jsonl`` (one line
per search iteration), ``retrain.jsonl`` (finished retrainings) and ``search_state.pt``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from embudget.config import RunConfig, load_config
from embudget.data.dataset import Dataset
from embudget.errors import RunDirError
from embudget.io import (
    RunDir,
    atomic_path,
    environment,
    resolve_device,
    save_npz,
    write_json,
    write_text,
)
from embudget.models.base import Backbone
from embudget.result import RESULTS_FILE, Kind, Metrics, RunResult
from embudget.training.evaluate import EvalResult
from embudget.training.threads import apply_run_threads


def open_run(
    cfg: RunConfig, out: str | Path, overwrite: bool, resume: bool, kind: Kind | None = None
) -> tuple[RunDir, RunResult | None]:
    """Create (or reopen, to resume) a run directory; return it and its result if finished.

    Raises:
        RunDirError: the directory holds another run, or (resuming) another config, or a
            finished result of another ``kind``.
    """
    run = RunDir.create(out, overwrite=overwrite, resume=resume)
    if resume:
        if load_config([run.file("config.yaml")]).hash() != cfg.hash():
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
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


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
