"""What every stage builds from a config: the dataset, fresh backbones, the resolved budget,
and the training and evaluation calls with the config's evaluation settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embudget.budget.usage import ResolvedBudget
from embudget.config import ModelConfig, RunConfig, TrainConfig
from embudget.config.validate import check_for_dataset
from embudget.data.dataset import Dataset
from embudget.data.load import load_configured
from embudget.models import build_model
from embudget.models.base import Backbone
from embudget.models.registry import GRAPH_MODELS
from embudget.seeds import int_seed, torch_generator
from embudget.training.evaluate import EvalResult
from embudget.training.fit import FitResult, SizesAt, fit, validate, validation_users

PRETRAIN_STREAM = "pretrain"  # seed stream of every full-size training


def load_data(cfg: RunConfig) -> Dataset:
    """The config's dataset; raises ConfigError for settings it cannot support (a cut-off
    above its item count)."""
    dataset = load_configured(cfg.data)
    check_for_dataset(cfg, dataset.n_items)
    return dataset


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


def resolve_budget(cfg: RunConfig, dataset: Dataset) -> ResolvedBudget:
    """The config's budget against the dataset and backbone (a byte budget becomes B after the
    storage's size-independent overhead, bet.md §14.2)."""
    return ResolvedBudget.from_config(
        cfg.budget,
        dataset.n_users,
        dataset.n_items,
        cfg.model.d_max,
        tables_per_entity(cfg),
        cfg.search.sampler.size_step,
    )


def model_options(mc: ModelConfig) -> dict[str, Any]:
    """Only the options the chosen backbone understands."""
    opts: dict[str, Any] = {}
    if mc.reg is not None:
        opts["reg"] = mc.reg
    if mc.name in GRAPH_MODELS:  # propagation layers
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


def fit_model(
    cfg: RunConfig,
    model: Backbone,
    dataset: Dataset,
    stream: str,
    *,
    train: TrainConfig | None = None,
    checkpoint: Path | None,
    progress: bool,
    desc: str,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
    sizes_at: SizesAt | None = None,
    validate_first: bool = False,
) -> FitResult:
    """:func:`~embudget.training.fit.fit` with the run's settings: ``train`` (default
    ``cfg.train``), the seed of ``stream``, the cut-offs, the selection users and the evaluation
    batch size."""
    return fit(
        model,
        dataset,
        cfg.train if train is None else train,
        seed=int_seed(cfg.seed, stream),
        ks=cfg.eval.ks,
        eval_users=selection_users(cfg, dataset),
        eval_batch_users=cfg.eval.batch_users,
        checkpoint=checkpoint,
        checkpoint_seconds=60.0 * cfg.checkpoint_minutes,
        progress=progress,
        on_eval=on_eval,
        desc=desc,
        sizes_at=sizes_at,
        validate_first=validate_first,
    )


def evaluate_model(cfg: RunConfig, model: Backbone, dataset: Dataset, split: str) -> EvalResult:
    """Full-ranking evaluation of ``model`` on ``split`` at the config's cut-offs."""
    return validate(model, dataset, split, cfg.eval.ks, batch_users=cfg.eval.batch_users)
