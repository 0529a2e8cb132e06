"""Backbone registry: the name → class dict of the built-in backbones, the backbones users
register (:func:`register_backbone`, ``embudget.register_backbone``), and a validating factory.

A registered backbone is built by name like a built-in one: :func:`build_model`, a config's
``model.name`` (``load_config``, ``run_search`` / ``run_train``, the CLI's
``--set model.name=NAME`` in the process that registered it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import scipy.sparse as sp
import torch

from embudget.config.choices import BackboneName, add_choice, choices, remove_choice
from embudget.config.presets import PRESET_DIR
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


#: ``factory(n_users, n_items, d_max, *, generator, **options)`` (``graph=True``:
#: ``factory(n_users, n_items, train, d_max, *, generator, **options)``) -> a Backbone; a
#: Backbone subclass with that constructor is one.
BackboneFactory = Callable[..., Backbone]


@dataclass(frozen=True)
class Registered:
    """A user's backbone: its factory, the options it accepts with their defaults, and whether
    it takes the training graph."""

    factory: BackboneFactory
    defaults: dict[str, float | int]
    graph: bool


#: the backbones added with :func:`register_backbone`, by name
REGISTERED: dict[str, Registered] = {}
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")


def register_backbone(
    name: str,
    factory: BackboneFactory,
    *,
    defaults: Mapping[str, float | int] | None = None,
    graph: bool = False,
) -> None:
    """Make a user's backbone available by name, like the built-in ones.

    The factory is called as ``factory(n_users, n_items, d_max, generator=g, **options)``
    (with ``graph=True``: ``factory(n_users, n_items, train_csr, d_max, ...)``) and must
    return a :class:`~embudget.models.base.Backbone` (tables read through ``table(ids)``,
    ``loss(users, pos, neg)``, ``scorer()``); a Backbone subclass with that constructor is a
    factory. ``defaults`` names the options it accepts (a config's ``model.reg`` is passed as
    ``reg`` when set, so list ``reg`` to accept it). The budget counts one table per entity.

    Example::

        embudget.register_backbone("tiny-mf", MyMF, defaults={"reg": 1e-4})
        cfg = load_config(updates={"model": {"name": "tiny-mf"}})

    Raises:
        ConfigError: a name that is not lowercase letters, digits, ``-`` or ``_`` (starting
            with a letter), that of a built-in backbone or of a shipped preset, one already
            registered (:func:`unregister_backbone` it first), a factory that is not callable,
            or defaults that are not numbers.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"a backbone name must be lowercase letters, digits, '-' or '_', starting with a "
            f"letter (at most 64), got {name!r}"
        )
    if name in MODELS:
        raise ConfigError(f"{name!r} is a built-in backbone; register yours under another name")
    if name in REGISTERED:
        raise ConfigError(
            f"a backbone {name!r} is already registered; call unregister_backbone({name!r}) "
            "first to replace it"
        )
    if (PRESET_DIR / f"{name}.yaml").is_file():
        raise ConfigError(f"{name!r} is the name of a shipped preset; choose another name")
    if not callable(factory):
        raise ConfigError(f"factory must be callable, got {type(factory).__name__}")
    opts = dict(defaults or {})
    for k, v in opts.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"defaults must map option names to numbers, got {k!r}: {v!r}")
    REGISTERED[name] = Registered(factory, opts, bool(graph))
    add_choice(BackboneName, name)


def unregister_backbone(name: str) -> None:
    """Remove a backbone added with :func:`register_backbone`.

    Raises:
        ConfigError: no backbone of that name was registered.
    """
    if name not in REGISTERED:
        raise ConfigError(f"no registered backbone {name!r}; registered: {sorted(REGISTERED)}")
    del REGISTERED[name]
    remove_choice(BackboneName, name)


def backbone_names() -> tuple[str, ...]:
    """Every backbone a config accepts: the built-in ones, then the registered ones."""
    return (*MODELS, *REGISTERED)


def model_defaults(name: str) -> dict[str, float | int]:
    """The options a backbone accepts, with their defaults."""
    key = _lookup(name)
    if key in REGISTERED:
        return dict(REGISTERED[key].defaults)
    return dict(getattr(MODELS[key], "defaults", {}))


def _lookup(name: str) -> str:
    key = name.lower() if isinstance(name, str) else None
    if key is None or (key not in MODELS and key not in REGISTERED):
        raise ConfigError(f"unknown backbone {name!r}; choose one of {list(backbone_names())}")
    return key


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
    key = _lookup(name)
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
    if key in REGISTERED:
        return _build_registered(key, n_users, n_items, train, int(d_max), generator, kwargs)
    cls = MODELS[key]
    if key in GRAPH_MODELS:
        return cls(n_users, n_items, train, int(d_max), generator=generator, **kwargs)  # type: ignore[call-arg]
    return cls(n_users, n_items, int(d_max), generator=generator, **kwargs)  # type: ignore[call-arg]


def _build_registered(
    key: str,
    n_users: int,
    n_items: int,
    train: sp.csr_matrix,
    d_max: int,
    generator: torch.Generator | None,
    options: dict[str, Any],
) -> Backbone:
    r = REGISTERED[key]
    args = (n_users, n_items, train, d_max) if r.graph else (n_users, n_items, d_max)
    model = r.factory(*args, generator=generator, **options)
    if not isinstance(model, Backbone):
        raise ConfigError(
            f"the factory registered as {key!r} returned {type(model).__name__}, not an "
            "embudget.models.base.Backbone"
        )
    return model
