"""From a resolved config to a finished run directory: the glue the CLI calls.

A run directory holds ``config.yaml`` (resolved), ``env.json``, ``run.log``, ``metrics.jsonl``
(every validation), ``checkpoint.pt`` while training (resume point), ``model.safetensors``,
``per_user_{valid,test}.npz`` and ``results.json``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from embudget.config import ModelConfig, RunConfig, load_config
from embudget.data import load_dataset
from embudget.data.dataset import Dataset
from embudget.errors import RunDirError
from embudget.io import (
    RunDir,
    append_jsonl,
    atomic_path,
    environment,
    read_json,
    resolve_device,
    save_npz,
    write_json,
    write_text,
)
from embudget.models import build_model
from embudget.models.base import Backbone
from embudget.seeds import int_seed, torch_generator
from embudget.training.evaluate import EvalResult
from embudget.training.fit import fit, validate, validation_users

log = logging.getLogger(__name__)

PRETRAIN_STREAM = "pretrain"  # seed stream of every full-size training

HEADLINE = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")


def load_data(cfg: RunConfig) -> Dataset:
    d = cfg.data
    return load_dataset(
        d.name, protocol=d.protocol, split_seed=d.split_seed, fmt=d.format, min_rating=d.min_rating
    )


def selection_users(cfg: RunConfig, dataset: Dataset) -> np.ndarray | None:
    """The validation users that select models during training (``train.eval_user_fraction``;
    None = all). One fixed sample per config seed, shared by Θ0 and every retraining."""
    fraction = cfg.train.eval_user_fraction
    if fraction >= 1.0:
        return None
    return validation_users(dataset, fraction, cfg.seed, "selection-users")


def tables_per_entity(cfg: RunConfig) -> int:
    """NCF (shared budget mode) keeps a GMF and an MLP row per entity, both sized d_n."""
    return 2 if cfg.model.name == "ncf" else 1


def model_options(mc: ModelConfig) -> dict[str, Any]:
    """Only the options the chosen backbone understands."""
    opts: dict[str, Any] = {}
    if mc.reg is not None:
        opts["reg"] = mc.reg
    if mc.name in ("lightgcn", "ngcf"):
        opts["n_layers"] = mc.n_layers
    if mc.name == "ngcf":
        opts["node_dropout"] = mc.node_dropout
        opts["mess_dropout"] = mc.mess_dropout
    return opts


def make_model(
    cfg: RunConfig, dataset: Dataset, device: torch.device, *stream: str | int
) -> Backbone:
    """A freshly initialised backbone; ``stream`` names the init seed stream."""
    model = build_model(
        cfg.model.name,
        dataset.n_users,
        dataset.n_items,
        dataset.train,
        d_max=cfg.model.d_max,
        generator=torch_generator(cfg.seed, "init", *stream),
        **model_options(cfg.model),
    )
    return model.to(device)


def save_weights(model: Backbone, path: Path) -> None:
    """Dense tensors of the state dict (parameters and sizes) as safetensors, atomically."""
    tensors = {
        k: v.detach().contiguous().cpu()
        for k, v in model.state_dict().items()
        if isinstance(v, torch.Tensor) and v.layout == torch.strided
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def metrics_block(res: EvalResult) -> dict[str, float]:
    out = {k: float(v) for k, v in res.means.items()}
    out["n_users_evaluated"] = res.n_users_evaluated
    return out


def save_per_user(path: Path, res: EvalResult) -> None:
    save_npz(path, users=res.users, **res.per_user)


def open_run(
    cfg: RunConfig, out: str | Path, overwrite: bool, resume: bool
) -> tuple[RunDir, dict[str, Any] | None]:
    """Create (or reopen, to resume) a run directory; return it and its results if finished."""
    run = RunDir.create(out, overwrite=overwrite, resume=resume)
    if resume:
        if load_config([run.file("config.yaml")]).hash() != cfg.hash():
            raise RunDirError(
                f"cannot resume {run.path}: its config.yaml differs from the requested config; "
                "resume with the same --config/--set options, or start a new --out"
            )
        if run.file("results.json").is_file():
            return run, dict(read_json(run.file("results.json")))
    return run, None


def start_run(cfg: RunConfig, run: RunDir) -> torch.device:
    """Apply the runtime settings and record the resolved config and environment."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    write_text(run.file("config.yaml"), cfg.to_yaml())
    write_json(run.file("env.json"), environment(device))
    return device


def run_train(
    cfg: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a full-size backbone (``embudget train``) and write its run directory."""
    run, finished = open_run(cfg, out, overwrite, resume)
    if finished is not None:
        return finished
    handler = run.attach_log()
    try:
        device = start_run(cfg, run)
        t0 = time.perf_counter()
        ds = load_data(cfg)
        t_data = time.perf_counter() - t0
        log.info("data %s: %s (%.1fs)", ds.name, ds.stats(), t_data)
        # The same streams as the search's pretraining, so `train` and `search --method full`
        # produce the same model for the same config and seed.
        model = make_model(cfg, ds, device, PRETRAIN_STREAM)
        metrics_path = run.file("metrics.jsonl")
        if not resume and metrics_path.exists():
            metrics_path.unlink()
        fr = fit(
            model,
            ds,
            cfg.train,
            seed=int_seed(cfg.seed, PRETRAIN_STREAM),
            ks=cfg.eval.ks,
            eval_users=selection_users(cfg, ds),
            eval_batch_users=cfg.eval.batch_users,
            checkpoint=run.file("checkpoint.pt"),
            progress=progress,
            on_eval=lambda rec: append_jsonl(metrics_path, rec),
            desc=f"train {cfg.model.name}",
        )
        assert fr.valid is not None
        # The appends above stream progress; a kill between an append and the checkpoint can
        # repeat a line on resume, so the final file is rewritten from the fit's history.
        write_text(metrics_path, "".join(json.dumps(rec) + "\n" for rec in fr.history))
        test = validate(model, ds, "test", cfg.eval.ks, batch_users=cfg.eval.batch_users)
        save_weights(model, run.file("model.safetensors"))
        save_per_user(run.file("per_user_valid.npz"), fr.valid)
        save_per_user(run.file("per_user_test.npz"), test)
        results: dict[str, Any] = {
            "dataset": ds.name,
            "protocol": ds.protocol,
            "split_fingerprint": ds.fingerprint(),
            "model": cfg.model.name,
            "seed": cfg.seed,
            "config_hash": cfg.hash(),
            "valid": metrics_block(fr.valid),
            "test": metrics_block(test),
            "best_step": fr.best_step,
            "steps": fr.steps,
            "stopped_early": fr.stopped_early,
            "train_seconds": fr.seconds,
            "data_seconds": t_data,
            "embedding_params": model.embedding_params_used(),
            "dense_params": model.dense_params(),
        }
        write_json(run.file("results.json"), results)
        run.file("checkpoint.pt").unlink(missing_ok=True)
        return results
    finally:
        RunDir.detach_log(handler)
