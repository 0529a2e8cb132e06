"""Backbone registry: the name → class dict (one class per name a config accepts) and a
validating factory."""

from __future__ import annotations

from typing import Any

import scipy.sparse as sp
import torch

from embudget.config.choices import BackboneName, choices
from embudget.errors import ConfigError
from embudget.models.base import Backbone
from embudget.models.lightgcn import LightGCN
from embudget.models.mf import MF
from embudget.models.ncf import NCF
from embudget.models.ngcf import NGCF

#: one class per name of :data:`~embudget.config.choices.BackboneName`, the names a config
#: accepts (checked below, when this module is imported)
MODELS: dict[str, type[Backbone]] = {cls.name: cls for cls in (MF, NCF, NGCF, LightGCN)}
GRAPH_MODELS = frozenset({"ngcf", "lightgcn"})

if set(MODELS) != set(choices(BackboneName)):
    raise TypeError(f"model.name accepts {choices(BackboneName)} but the models are {list(MODELS)}")


def model_defaults(name: str) -> dict[str, float | int]:
    """The options a backbone accepts, with their defaults."""
    cls = _lookup(name)
    return dict(getattr(cls, "defaults", {}))


def _lookup(name: str) -> type[Backbone]:
    cls = MODELS.get(name.lower()) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {sorted(MODELS)}")
    return cls


def _check_option(model: str, key: str, value: Any, default: float | int) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{model}: option {key!r} must be a number, got {value!r}")
    if isinstance(default, int):
        if not float(value).is_integer() or value < 1:
            raise ConfigError(f"{model}: option {key!r} must be a positive integer, got {value}")
        return int(value)
    v = float(value)
    if key.endswith("dropout"):
        if not 0.0 <= v < 1.0:
            raise ConfigError(f"{model}: option {key!r} must lie in [0, 1), got {v}")
    elif not (v >= 0.0 and v != float("inf")):
        raise ConfigError(f"{model}: option {key!r} must be a finite number >= 0, got {v}")
    return v


def build_model(
    name: str,
    n_users: int,
    n_items: int,
    train: sp.csr_matrix,
    d_max: int = 128,
    *,
    generator: torch.Generator | None = None,
    **options: Any,
) -> Backbone:
    """Build a backbone by name; initialisation is deterministic given ``generator``.

    Options (defaults): ``reg`` (mf 1e-4, lightgcn 1e-4, ngcf 1e-3, ncf 1e-2), ``n_layers``
    (graph models, 3), ``node_dropout`` and ``mess_dropout`` (ngcf, 0.1).

    Example::

        model = build_model("lightgcn", ds.n_users, ds.n_items, ds.train, reg=1e-4)
    """
    cls = _lookup(name)
    key = cls.name
    defaults = model_defaults(key)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError(
            f"{key}: unknown option(s) {unknown}; valid options are {sorted(defaults)}"
        )
    if int(d_max) < 1:
        raise ConfigError(f"d_max must be a positive integer, got {d_max}")
    if n_users < 1 or n_items < 1:
        raise ConfigError(f"need at least one user and one item, got {n_users} x {n_items}")
    if tuple(train.shape) != (n_users, n_items):
        raise ConfigError(
            f"training matrix has shape {tuple(train.shape)} but the model expects "
            f"({n_users}, {n_items}); pass the Dataset's train split with its n_users/n_items"
        )
    kwargs = {k: _check_option(key, k, v, defaults[k]) for k, v in options.items()}
    if key in GRAPH_MODELS:
        return cls(n_users, n_items, train, int(d_max), generator=generator, **kwargs)  # type: ignore[call-arg]
    return cls(n_users, n_items, int(d_max), generator=generator, **kwargs)  # type: ignore[call-arg]
