"""The closed sets of values a setting may take, each defined once as a ``Literal`` type.

The config loader validates against these types (:func:`typing.get_args`), and the modules that
act on a setting import its type or :func:`choices` instead of repeating the strings.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

__all__ = [
    "BackboneName",
    "DataFormat",
    "Dtype",
    "Layout",
    "Method",
    "OnExhausted",
    "PredictorOutput",
    "PretrainMode",
    "RetrainInit",
    "TIME_PROTOCOLS",
    "SplitProtocol",
    "UpdateMode",
    "accepted",
    "add_choice",
    "choices",
    "remove_choice",
]

#: The search method (bet.md §5) or baseline (bet.md §9) of a run, in the order grids run and
#: reports list them: the unbudgeted reference, the baselines, the searches.
Method = Literal["full", "su", "sr", "bet", "bet-simple", "bet-random"]
#: A backbone of bet.md §8 (``models.base.Backbone`` is the model class, hence the suffix).
BackboneName = Literal["mf", "ncf", "ngcf", "lightgcn"]
#: How interactions are split into train / validation / test (protocol.md): ``temporal`` (a
#: global time cut) and ``leave-last-out`` (each user's latest interactions) need timestamps.
SplitProtocol = Literal["paper", "standard", "temporal", "leave-last-out"]
#: The protocols that order interactions by time (they need ``data.time_col``).
TIME_PROTOCOLS = ("temporal", "leave-last-out")
#: The file format of a dataset; ``auto`` detects it from the files.
DataFormat = Literal["auto", "lightgcn", "lastfm", "recbole", "movielens", "csv", "parquet"]
#: The storage precision a byte budget counts (bet.md §14.2).
Dtype = Literal["fp32", "fp16", "bf16", "int8"]
#: The storage layout a byte budget counts (bet.md §14.2).
Layout = Literal["jagged", "bucketed"]
#: What the bounded sampler does when its draws keep exceeding the budget (bet.md §3.2).
OnExhausted = Literal["clamp", "error"]
#: How Θ0 is pretrained: at full size (bet.md §7.1) or with every prefix trained (fast mode).
PretrainMode = Literal["standard", "nested"]
#: Where a retrained candidate starts: from scratch (bet.md §7.3) or from Θ0's prefixes.
RetrainInit = Literal["scratch", "shared"]
#: One replay pair per predictor update (bet.md §4.6) or all pairs at once.
UpdateMode = Literal["single", "batch"]
#: The predictor's output unit: the reference leaky ReLU or a linear one.
PredictorOutput = Literal["leaky_relu", "linear"]


def choices(alias: Any) -> tuple[str, ...]:
    """The allowed values of a ``Literal`` alias, in order: ``choices(Layout)``."""
    args = typing.get_args(alias)
    if typing.get_origin(alias) is not Literal or not args:
        raise TypeError(f"{alias!r} is not a Literal type")
    return tuple(str(a) for a in args)


#: Values a Literal accepts beyond its own, added at run time by registries (a backbone added
#: with ``embudget.register_backbone`` becomes a valid ``model.name``), keyed by the alias.
_ADDED: dict[Any, list[str]] = {}


def accepted(alias: Any) -> tuple[str, ...]:
    """What the config loader accepts for a ``Literal`` setting: :func:`choices` and the values
    added with :func:`add_choice`."""
    return choices(alias) + tuple(_ADDED.get(alias, ()))


def add_choice(alias: Any, value: str) -> None:
    """Accept ``value`` for the ``Literal`` ``alias`` from now on (a registry's new name)."""
    choices(alias)  # a Literal, or TypeError
    if value not in accepted(alias):
        _ADDED.setdefault(alias, []).append(value)


def remove_choice(alias: Any, value: str) -> None:
    """Undo :func:`add_choice` (a value the ``Literal`` itself lists stays)."""
    added = _ADDED.get(alias, [])
    if value in added:
        added.remove(value)
