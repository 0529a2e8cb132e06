"""Recommender backbones with per-row embedding sizes (bet.md §8)."""

from embudget.models.base import Backbone, Scorer, bpr_loss
from embudget.models.lightgcn import LightGCN
from embudget.models.mf import MF
from embudget.models.ncf import NCF
from embudget.models.ngcf import NGCF
from embudget.models.registry import MODELS, build_model, model_defaults

__all__ = [
    "MODELS",
    "MF",
    "NCF",
    "NGCF",
    "Backbone",
    "LightGCN",
    "Scorer",
    "bpr_loss",
    "build_model",
    "model_defaults",
]
