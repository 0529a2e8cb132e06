"""The run configuration: nested frozen dataclasses whose defaults are bet.md's settings.

What every key means is written once, in ``presets/defaults.yaml`` (a test keeps that file
equal to these defaults); ``embudget config show`` prints a resolved config with those
descriptions.

The hash of a config names its runs and cache entries. It covers the *procedure* only: the
runtime keys (:data:`RUNTIME_KEYS`) say where a run executes, not what it computes. It is
the sha256 of ``{"format": HASH_FORMAT, "changes": ...}``, where the changes are the
procedure settings that differ from these defaults, so a new setting added with a default
leaves every existing hash unchanged. Changing a default changes what the hash means:
bump :data:`HASH_FORMAT` with it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, is_dataclass
from functools import cache
from typing import Any

import yaml

from embudget.config.choices import (
    BackboneName,
    DataFormat,
    Dtype,
    Layout,
    Method,
    OnExhausted,
    PredictorOutput,
    PretrainMode,
    RetrainInit,
    SplitProtocol,
    UpdateMode,
)

#: Version of what a config hash means: 1 hashed every setting (with a list of later additions
#: left out at their default), 2 hashes the changes from the defaults below.
HASH_FORMAT = 2
#: Top-level settings that say where a run executes, not what it computes.
RUNTIME_KEYS = ("device", "threads", "cache_dir", "checkpoint_minutes")


@dataclass(frozen=True)
class DataConfig:
    name: str = "gowalla"
    protocol: SplitProtocol = "paper"
    split_seed: int = 42
    format: DataFormat = "auto"
    min_rating: float | None = None
    user_col: str | None = None
    item_col: str | None = None
    time_col: str | None = None
    sep: str | None = None
    min_user_interactions: int = 0
    min_item_interactions: int = 0
    test_fraction: float = 0.2
    valid_fraction: float = 0.1


@dataclass(frozen=True)
class ModelConfig:
    name: BackboneName = "mf"
    d_max: int = 128
    reg: float | None = None
    n_layers: int = 3
    node_dropout: float = 0.1
    mess_dropout: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    batch_users: int = 10000
    lr: float = 0.03
    lr_decay: float = 0.95
    lr_decay_every: int = 200
    lr_min: float = 0.001
    eval_every_steps: int = 2000
    eval_every_epochs: float | None = None
    eval_user_fraction: float = 1.0
    patience: int = 3
    min_delta: float = 0.0
    max_steps: int = 100000


@dataclass(frozen=True)
class EvalConfig:
    ks: tuple[int, ...] = (5, 10, 20)
    batch_users: int | None = None


@dataclass(frozen=True)
class BudgetConfig:
    sparsity: float | None = 0.8
    kept_fraction: float | None = None
    params: int | None = None
    bytes: int | None = None
    dtype: Dtype = "fp32"
    layout: Layout = "jagged"


@dataclass(frozen=True)
class SamplerConfig:
    candidates: int = 100
    max_attempts: int = 100
    on_exhausted: OnExhausted = "clamp"
    size_step: int = 1


@dataclass(frozen=True)
class PretrainConfig:
    mode: PretrainMode = "standard"
    nested_kept_min: float = 0.03


@dataclass(frozen=True)
class ProbeConfig:
    epochs: int | None = None
    steps: int | None = None
    lr: float = 0.03
    lr_decay: float = 0.98
    lr_decay_every: int = 200
    lr_min: float = 0.001
    user_fraction: float = 1.0
    small_data_users: int = 0
    small_data_steps: int | None = None


@dataclass(frozen=True)
class PredictorConfig:
    updates: int = 2
    update_mode: UpdateMode = "single"
    output: PredictorOutput = "leaky_relu"


@dataclass(frozen=True)
class RetrainConfig:
    top: int = 5
    init: RetrainInit = "scratch"
    patience: int | None = None
    max_steps: int | None = None
    validate_first: bool = False


@dataclass(frozen=True)
class SearchConfig:
    method: Method = "bet"
    iterations: int = 50
    probes_per_iteration: int = 1
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    cache_dir: str = "cache"
    checkpoint_minutes: float = 10.0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain nested dicts, lists and scalars."""
        return dict(to_plain(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """Every setting under its dotted key, e.g. ``{"search.probe.lr": 0.03, ...}``."""
        return flatten(self.to_dict())

    def procedure(self) -> dict[str, Any]:
        """The settings that define the procedure (all but :data:`RUNTIME_KEYS`), nested."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_KEYS}

    def changes(self, sections: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The procedure settings that differ from the defaults, by dotted key; ``sections``
        keeps only keys under those top-level names (e.g. ``("data", "model", "train")``)."""
        defaults = _default_flat()
        out = {}
        for key, value in flatten(self.procedure()).items():
            if sections is not None and key.split(".", 1)[0] not in sections:
                continue
            if value != defaults[key]:
                out[key] = value
        return out

    def hash(self) -> str:
        """sha256 (first 16 hex digits) of the format and :meth:`changes`: equal for runs of
        one procedure wherever they execute, so a CPU run resumes on a GPU and a grid is
        not redone elsewhere."""
        blob = json.dumps({"format": HASH_FORMAT, "changes": self.changes()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def to_plain(obj: Any) -> Any:
    """Dataclasses to dicts and tuples to lists, recursively."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_plain(x) for x in obj]
    return obj


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are values, not sections)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@cache
def _default_flat() -> dict[str, Any]:
    return flatten(RunConfig().procedure())
