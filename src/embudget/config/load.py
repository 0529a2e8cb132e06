"""Resolve a :class:`RunConfig` from layered presets, YAML files and ``key=value`` overrides.

Precedence (later wins): bet.md's defaults < the backbone's defaults < the fast preset (fast
mode only) < ``--config`` files in order < a mapping (e.g. command-line flags) < ``--set``
overrides. Unknown keys and type mismatches raise :class:`~embudget.errors.ConfigError` naming
the key, the nearest valid key and the expected type. Values are parsed with
``yaml.safe_load`` (never ``eval``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from embudget.config.choices import accepted
from embudget.config.legacy import LEGACY_KEYS
from embudget.config.presets import is_fast, load_preset, preset_layers
from embudget.config.schema import RunConfig
from embudget.config.validate import validate
from embudget.errors import ConfigError

T = TypeVar("T")


def load_config(
    files: Iterable[str | Path] = (),
    overrides: Iterable[str] = (),
    base: RunConfig | None = None,
    updates: Mapping[str, Any] | None = None,
    fast: bool | None = None,
) -> RunConfig:
    """Resolve a :class:`RunConfig`: ``base`` (default: bet.md's defaults), the backbone's
    defaults, the fast preset when fast, then ``files``, ``updates`` and ``overrides``.

    ``fast=None`` (the default, as on the command line without ``--fast``/``--faithful``): fast
    mode for the backbones in :data:`~embudget.config.FAST_BY_DEFAULT`, the faithful procedure
    for the others. ``fast=False`` is bet.md's faithful procedure for every backbone,
    ``fast=True`` the fast preset for every backbone."""
    files = list(files)
    overrides = list(overrides)
    start = base or RunConfig()
    # the backbone (which the user's settings may choose) decides the layers under them
    name = apply_layers(start, files, updates, overrides).model.name
    layered = start
    for preset in preset_layers(name, is_fast(fast, name)):
        layered = merge(layered, load_preset(preset))
    return validate(apply_layers(layered, files, updates, overrides))


def apply_layers(
    cfg: RunConfig,
    files: list[str | Path],
    updates: Mapping[str, Any] | None,
    overrides: list[str],
) -> RunConfig:
    """``cfg`` updated by the YAML files, then the mapping, then the overrides."""
    for f in files:
        cfg = merge(cfg, read_yaml(f))
    if updates:
        cfg = merge(cfg, updates)
    for o in overrides:
        cfg = merge(cfg, parse_override(o))
    return cfg


def read_yaml(f: str | Path) -> Mapping[str, Any]:
    path = Path(f)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; pass a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text ({e}); save it as UTF-8") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(doc, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return doc


def parse_override(text: str) -> dict[str, Any]:
    """``"train.lr=0.01"`` -> ``{"train": {"lr": 0.01}}`` (value parsed by yaml.safe_load)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. train.lr=0.01")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: cannot parse value: {e}") from e
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def merge(cfg: T, updates: Mapping[str, Any], prefix: str = "") -> T:
    """A copy of the dataclass ``cfg`` with ``updates`` (nested mappings) checked and applied."""
    hints = typing.get_type_hints(type(cfg))
    names = [f.name for f in fields(cfg)]  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key, value in updates.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(_unknown_key(full, str(key), names, prefix))
        current = getattr(cfg, key)
        if is_dataclass(current):
            if not isinstance(value, Mapping):
                moved = LEGACY_KEYS.get(full)
                hint = f" (the format-1 key {full} is now {moved})" if moved else ""
                raise ConfigError(f"{full}: expected a mapping of sub-keys, got {value!r}{hint}")
            changes[key] = merge(current, value, prefix=f"{full}.")
        else:
            changes[key] = coerce(value, hints[key], full)
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


def _unknown_key(full: str, key: str, names: list[str], prefix: str) -> str:
    moved = LEGACY_KEYS.get(full)
    if moved:  # a format-1 key (legacy.py)
        return (
            f"unknown config key {full!r}; it is now {moved!r} (an older run's config.yaml is "
            "converted by scripts/migrate_results.py)"
        )
    near = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean {prefix + near[0]!r}?" if near else ""
    valid = ", ".join(prefix + n for n in names)
    return f"unknown config key {full!r}{hint} (valid here: {valid})"


def type_name(tp: Any) -> str:
    """How a setting's type reads in messages and comments: ``int or null``, ``a | b``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        named = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(named + (["null"] if type(None) in args else []))
    if origin is tuple:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return the converted value."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = accepted(tp)  # with names registered at run time (register_backbone)
        if isinstance(value, str) and value in allowed:
            return value
        raise ConfigError(f"{key} = {value!r} is not one of {', '.join(map(str, allowed))}")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {type_name(tp)}, got {value!r}")
    if origin is tuple:
        (inner, *_rest) = typing.get_args(tp)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(coerce(v, inner, key) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    else:
        raise ConfigError(f"{key}: unsupported type {tp}")
    raise ConfigError(f"{key}: expected {type_name(tp)}, got {value!r} ({type(value).__name__})")
