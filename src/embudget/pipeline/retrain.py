"""Retraining the proposed candidates and choosing one on validation (bet.md §7.2–§7.3).

Each finished retraining is logged to ``retrain.jsonl`` beside its weights, so a resumed run
retrains only the candidates it had not finished.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embudget.budget.core import check_budget
from embudget.config import RunConfig
from embudget.data.dataset import Dataset
from embudget.errors import DamagedFileError, ResultError
from embudget.io import RunDir, append_jsonl, load_safetensors, read_jsonl
from embudget.models.base import Backbone
from embudget.pipeline.build import evaluate_model, fit_model, make_model
from embudget.pipeline.rundir import save_weights
from embudget.result import Chosen, Training
from embudget.search.proposers import Candidate
from embudget.tables.compact import compact_pays, load_weights, to_compact
from embudget.training.distributed import Group, current
from embudget.training.evaluate import EvalResult

log = logging.getLogger(__name__)

LOG_FILE = "retrain.jsonl"


@dataclass
class Trained:
    model: Backbone
    valid: EvalResult | None  # None on ranks other than 0 (training.distributed)
    seconds: float
    training: Training


def train_sizes(
    cfg: RunConfig,
    dataset: Dataset,
    device: torch.device,
    user_sizes: np.ndarray,
    item_sizes: np.ndarray,
    stream: str,
    checkpoint: Path | None,
    progress: bool,
    init: dict[str, torch.Tensor] | None = None,
) -> Trained:
    """A backbone with fixed sizes from step 0, trained to convergence (bet.md §7.2): fresh, or
    with ``init`` (fast mode's warm start) Θ0's weights truncated to the sizes.

    The tables are compact (jagged) whenever that is smaller than the masked form, so the
    parameters, gradients and Adam state follow the budget; the trajectory is the same.
    """
    model = make_model(cfg, dataset, device, stream)
    if init is not None:
        model.load_state_dict(init)
    model.set_sizes(user_sizes, item_sizes)
    if compact_pays([user_sizes, item_sizes], cfg.model.d_max):
        to_compact(model)
    s = cfg.search
    train = dataclasses.replace(
        cfg.train,
        patience=s.retrain.patience or cfg.train.patience,
        max_steps=s.retrain.max_steps or cfg.train.max_steps,
    )
    fr = fit_model(
        cfg,
        model,
        dataset,
        stream,
        train=train,
        checkpoint=checkpoint,
        progress=progress,
        desc=stream,
        validate_first=init is not None and s.retrain.validate_first,
    )
    group = current(device)
    main = group is None or group.is_main
    assert fr.valid is not None or not main
    if checkpoint is not None and main:
        checkpoint.unlink(missing_ok=True)
    return Trained(model, fr.valid, fr.seconds, fr.training())


@dataclass
class Retrained:
    """The chosen candidate's model, validation and fit (None when its retraining was logged
    before fits were recorded), and the seconds all retrainings took."""

    model: Backbone
    valid: EvalResult
    chosen: Chosen
    seconds: float
    training: Training | None


def _finished(path: Path, resume: bool) -> dict[str, dict[str, Any]]:
    """The retrainings logged by an interrupted run (resuming), else a fresh log."""
    done: dict[str, dict[str, Any]] = {}
    if resume and path.exists():
        fix = (
            "delete it to retrain every candidate (with --resume), or start the run again with "
            "--overwrite"
        )
        for i, d in enumerate(read_jsonl(path, fix=fix), 1):
            try:
                name, quality, seconds = d["name"], d["valid"]["quality"], d["seconds"]
                if not isinstance(name, str):
                    raise TypeError("name is not a string")
                float(quality), float(seconds)
                if d.get("training") is not None:  # lines written before fits were kept lack it
                    d["training"] = Training.from_dict(d["training"], str(path))
            except (KeyError, TypeError, ValueError, ResultError) as e:
                raise DamagedFileError(path, f"line {i} is not a retraining: {e!r}", fix) from None
            done[name] = d
    elif path.exists():
        path.unlink()
    return done


def retrain(
    cfg: RunConfig,
    dataset: Dataset,
    device: torch.device,
    run: RunDir,
    candidates: tuple[Candidate, ...],
    per_entity: int,
    resume: bool,
    progress: bool,
    init: dict[str, torch.Tensor] | None = None,
) -> Retrained | None:
    """Retrain every candidate (from scratch, or from ``init`` truncated); choose by validation
    quality, the first on a tie (bet.md §7.3).

    Under torchrun (P > 1) every rank retrains beside rank 0, which alone chooses, writes and
    returns; the others return None.

    Raises:
        BudgetError: a candidate's sizes exceed ``per_entity`` (VIOLATED: an internal bug).
    """
    group = current(device)
    if group is not None and not group.is_main:
        _follow_retrain(cfg, dataset, device, run, candidates, per_entity, group, init)
        return None
    done_path = run.file(LOG_FILE)
    done = _finished(done_path, resume)
    seconds = sum(float(d["seconds"]) for d in done.values())
    best: tuple[float, Candidate] | None = None
    fits: dict[str, Training | None] = {}
    for c in candidates:
        check_budget(c.user_sizes, c.item_sizes, per_entity, cfg.model.d_max)
        weights = run.file(f"{c.name}.safetensors")
        finished = c.name in done and weights.is_file()
        if group is not None:  # the other ranks skip it too, or retrain it beside this one
            group.broadcast_value(float(finished))
        if finished:
            q = float(done[c.name]["valid"]["quality"])
            fits[c.name] = done[c.name].get("training")
        else:
            tr = train_sizes(
                cfg,
                dataset,
                device,
                c.user_sizes,
                c.item_sizes,
                c.name,
                run.file(f"{c.name}.ckpt.pt"),
                progress,
                init,
            )
            save_weights(tr.model, weights)
            assert tr.valid is not None
            q = float(tr.valid.means["quality"])
            means = {k: float(v) for k, v in tr.valid.means.items()}
            rec = {
                "name": c.name,
                "valid": {**means, "n_users_evaluated": tr.valid.n_users_evaluated},
                "seconds": tr.seconds,
                "training": tr.training.to_dict(),
            }
            fits[c.name] = tr.training
            append_jsonl(done_path, rec)
            seconds += tr.seconds
            log.info("retrained %s: valid Q %.4f (%.0fs)", c.name, q, tr.seconds)
        if best is None or q > best[0]:
            best = (q, c)
    assert best is not None
    q, c = best
    model = make_model(cfg, dataset, device, c.name)
    model.set_sizes(c.user_sizes, c.item_sizes)
    weights = run.file(f"{c.name}.safetensors")
    fix = "delete it to retrain that candidate (with --resume), or start again with --overwrite"
    state = load_safetensors(weights, str(device), fix=fix)
    load_weights(model, state)  # compact or masked, as it was trained
    valid = evaluate_model(cfg, model, dataset, "valid")
    return Retrained(model, valid, Chosen(c.name, q), seconds, fits[c.name])


def _follow_retrain(
    cfg: RunConfig,
    dataset: Dataset,
    device: torch.device,
    run: RunDir,
    candidates: tuple[Candidate, ...],
    per_entity: int,
    group: Group,
    init: dict[str, torch.Tensor] | None,
) -> None:
    """:func:`retrain` on a rank other than 0: the candidates rank 0 has not finished, trained
    beside it (reading, never writing, their checkpoints)."""
    for c in candidates:
        check_budget(c.user_sizes, c.item_sizes, per_entity, cfg.model.d_max)
        if group.broadcast_value(0.0):
            continue  # finished before a resume
        ckpt = run.file(f"{c.name}.ckpt.pt")
        train_sizes(cfg, dataset, device, c.user_sizes, c.item_sizes, c.name, ckpt, False, init)
