"""Typed, frozen run configuration with strict YAML and ``key=value`` overrides.

Precedence: ``--set`` overrides > later ``--config`` files > earlier files > defaults.
Unknown keys and type mismatches raise :class:`~embudget.errors.ConfigError` naming the key,
the nearest valid key and the expected type. Values are parsed with ``yaml.safe_load`` (never
``eval``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from embudget.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class DataConfig:
    name: str = "gowalla"  # dataset name (gowalla, yelp2018, lastfm, ml-100k) or a path
    protocol: str = "paper"  # paper (50/25/25 re-split per user) | standard (given train/test)
    split_seed: int = 42  # seed of the keyed split ordering (fixed for a study)
    format: str = "auto"  # auto | lightgcn | lastfm | recbole | movielens | csv
    min_rating: float | None = None  # keep ratings >= this as positives (None = all)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mf"  # mf | ncf | ngcf | lightgcn
    d_max: int = 128  # full embedding size
    reg: float | None = None  # L2 coefficient (None = the backbone's BET default)
    n_layers: int = 3  # propagation layers (lightgcn, ngcf)
    node_dropout: float = 0.1  # ngcf only
    mess_dropout: float = 0.1  # ngcf only


@dataclass(frozen=True)
class TrainConfig:
    batch_users: int = 10000  # distinct users per BPR step (one positive, one negative each)
    lr: float = 0.03  # Adam learning rate
    lr_decay: float = 0.95  # lr <- max(lr_min, lr * lr_decay) ...
    lr_decay_every: int = 200  # ... every this many steps
    lr_min: float = 0.001
    eval_every_steps: int = 2000  # validate (quality Q) this often ...
    eval_user_fraction: float = 1.0  # ... on this fraction of validation users (fixed sample)
    patience: int = 3  # evaluations without strict improvement before stopping
    max_steps: int = 100000  # hard cap on steps


@dataclass(frozen=True)
class EvalConfig:
    ks: tuple[int, ...] = (5, 10, 20)  # cut-offs reported
    batch_users: int | None = None  # users per scoring batch (None = memory-bounded auto)


@dataclass(frozen=True)
class BudgetConfig:
    sparsity: float | None = 0.8  # c: kept fraction 1 - c of the full d_max table
    kept_fraction: float | None = None  # alternative to sparsity (set sparsity to null)
    params: int | None = None  # absolute parameter budget (set sparsity to null)
    bytes: int | None = None  # budget in bytes of values + index overhead (set sparsity to null)
    dtype: str = "fp32"  # storage precision the byte budget counts: fp32 | fp16 | bf16 | int8
    layout: str = "jagged"  # storage layout the byte budget counts: jagged | bucketed


@dataclass(frozen=True)
class SearchConfig:
    method: str = "bet"  # bet | bet-random | bet-simple | su | sr | full
    iterations: int = 50  # T
    candidates: int = 100  # m, sampled actions per iteration
    finetune_epochs: int | None = None  # h per probe (None = 10, or 15 for ngcf)
    finetune_lr: float = 0.03  # probe Adam lr ...
    finetune_lr_decay: float = 0.98  # ... times this ...
    finetune_lr_decay_every: int = 200  # ... every this many steps ...
    finetune_lr_min: float = 0.001  # ... floored here
    fitness_user_fraction: float = 1.0  # validation users used by the fitness (fixed sample)
    retrain_top: int = 5  # top-k actions retrained from scratch
    predictor_updates: int = 2  # predictor updates per iteration
    max_attempts: int = 100  # sampler retry cap
    on_exhausted: str = "clamp"  # clamp | error
    size_step: int = 1  # sizes restricted to multiples of this (4 for FBGEMM/TorchRec)
    # --- fast mode (embudget, beyond the paper; each a recorded deviation, see FAST_PRESET) ---
    pretrain: str = "standard"  # standard (Θ0 at full size) | nested (every prefix trained)
    nested_kept_min: float = 0.03  # nested: kept fraction per step ~ log-uniform [this, 1]
    finetune_steps: int | None = None  # probe steps; overrides finetune_epochs when set
    retrain_init: str = "scratch"  # scratch (bet.md §7.2) | shared (warm start from Θ0)
    retrain_patience: int | None = None  # retraining's patience (None = train.patience)
    retrain_max_steps: int | None = None  # retraining's step cap (None = train.max_steps)
    retrain_validate_first: bool = False  # validate a warm start before its first step
    predictor_update: str = "single"  # single (one replay pair per update) | batch (all pairs)
    predictor_output: str = "leaky_relu"  # leaky_relu (reference) | linear (no output clamp)


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0  # training seed (init, batches, dropout)
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    threads: int | None = None  # torch intra-op threads (None = torch default)
    cache_dir: str = "cache"  # pretrained models are cached here, keyed by a hash
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def procedure(self) -> dict[str, Any]:
        """The settings that define the procedure, as hashed: where it runs
        (:data:`RUNTIME_KEYS`) is left out, and so are later additions at their default."""
        d = {k: v for k, v in self.to_dict().items() if k not in RUNTIME_KEYS}
        for key, default in HASH_OMIT_AT_DEFAULT.items():  # settings added later
            section, name = key.split(".")
            if d[section][name] == default:
                del d[section][name]
        return d

    def hash(self) -> str:
        """sha256 (first 16 hex digits) of :meth:`procedure`, so a run started on the CPU can
        be resumed on a GPU and a grid is not redone elsewhere."""
        blob = json.dumps(self.procedure(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


#: Top-level settings that say where a run executes, not what it computes.
RUNTIME_KEYS = ("device", "threads", "cache_dir")

#: Settings added after the first release, hashed only when they differ from their default, so
#: earlier runs keep their hash (``bench`` skips them, ``--resume`` accepts them).
HASH_OMIT_AT_DEFAULT: dict[str, Any] = {
    "train.eval_user_fraction": 1.0,
    "search.pretrain": "standard",
    "search.nested_kept_min": 0.03,
    "search.finetune_steps": None,
    "search.retrain_init": "scratch",
    "search.retrain_patience": None,
    "search.retrain_max_steps": None,
    "search.retrain_validate_first": False,
    "search.predictor_update": "single",
    "search.predictor_output": "leaky_relu",
}


def _to_plain(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple | list):
        return [_to_plain(x) for x in obj]
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return the converted value."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        (inner, *_rest) = typing.get_args(tp)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(v, inner, key) for v in value)
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
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _merge(cfg: T, updates: Mapping[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(type(cfg))
    names = [f.name for f in fields(cfg)]  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key, value in updates.items():
        full = f"{prefix}{key}"
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {prefix + near[0]!r}?" if near else ""
            valid = ", ".join(prefix + n for n in names)
            raise ConfigError(f"unknown config key {full!r}{hint} (valid here: {valid})")
        current = getattr(cfg, key)
        if is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{full}: expected a mapping of sub-keys, got {value!r}")
            changes[key] = _merge(current, value, prefix=f"{full}.")
        else:
            changes[key] = _coerce(value, hints[key], full)
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


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


def load_config(
    files: Iterable[str | Path] = (),
    overrides: Iterable[str] = (),
    base: RunConfig | None = None,
    updates: Mapping[str, Any] | None = None,
    fast: bool | None = False,
) -> RunConfig:
    """Resolve a :class:`RunConfig` from defaults, backbone defaults, the fast preset (when
    ``fast``), YAML files, a mapping and overrides (later wins).

    ``fast=None`` is the command line's default: fast mode for the backbones in
    :data:`FAST_BY_DEFAULT`, the faithful procedure for the others."""
    files = list(files)
    overrides = list(overrides)
    start = base or RunConfig()
    # the backbone (which the user's settings may choose) decides the layers under them
    name = _apply(start, files, updates, overrides).model.name
    layered = _merge(start, BACKBONE_DEFAULTS.get(name, {}))
    if is_fast(fast, name):
        layered = _merge(layered, fast_preset(name))
    return validate(_apply(layered, files, updates, overrides))


#: Backbone-specific defaults, applied between the global defaults and the user's settings.
#: MF is embudget's addition (bet.md §8.2): with the BET learning rate of 0.03 it overfits
#: within a few hundred steps (Gowalla valid Recall@20 0.042 vs 0.114 at lr 0.005, see
#: BENCHMARKS.md), so MF trains and fine-tunes at 0.005. NeuMF at 0.03 barely learns (Gowalla
#: valid Recall@20 0.040 after 2,000 steps; 0.077 at 0.01, 0.102 at 0.005, BENCHMARKS.md,
#: "NCF learning rate"), so NCF does the same: a deviation from BET's stated setting.
BACKBONE_DEFAULTS: dict[str, dict[str, Any]] = {
    "mf": {"train": {"lr": 0.005}, "search": {"finetune_lr": 0.005}},
    "ncf": {"train": {"lr": 0.005}, "search": {"finetune_lr": 0.005}},
}


#: ``--fast``: the search settings of embudget's fast mode (issue 6; BENCHMARKS.md measures
#: each). Θ0 is pretrained so that every prefix of every row is useful (nested), so a probe is
#: a truncation plus a short fine-tune scored on a fixed user sample; the predictor is fitted on
#: the whole replay; the retrained candidates start from Θ0's prefixes, validated before their
#: first step so retraining never ends below its start. Settings the user gives explicitly win.
FAST_PRESET: dict[str, Any] = {
    "search": {
        "pretrain": "nested",
        "finetune_steps": 0,
        "fitness_user_fraction": 0.25,
        "predictor_update": "batch",
        "predictor_updates": 20,
        "predictor_output": "linear",
        "retrain_init": "shared",
        "retrain_validate_first": True,
    }
}

#: ``--fast`` settings that differ by backbone, applied over :data:`FAST_PRESET`. LightGCN
#: keeps the standard Θ0 and retrains from scratch: a truncation of the nested Θ0 ranks
#: LightGCN tables unlike the faithful probe (Spearman 0.61) and misses the item-light tables
#: that fine-tuning favours, while 20 fine-tune steps of the standard Θ0 find them; warm
#: retraining from the nested Θ0 ended below scratch retraining (RESULTS.md, "Fast mode" 3d, 3e).
FAST_BACKBONE_PRESETS: dict[str, dict[str, Any]] = {
    "lightgcn": {
        "search": {
            "pretrain": "standard",
            "finetune_steps": 20,
            "retrain_init": "scratch",
            "retrain_validate_first": False,
        }
    },
}


#: Backbones whose ``embudget search`` / ``bench`` run fast mode unless ``--faithful`` is given:
#: those where the fast search was measured end to end at or above the faithful one and above
#: SU (Gowalla; RESULTS.md, "Where issue 6's evidence stands"). The others run the faithful
#: procedure unless ``--fast`` is given.
FAST_BY_DEFAULT: frozenset[str] = frozenset({"mf", "lightgcn"})


def is_fast(fast: bool | None, backbone: str) -> bool:
    """Whether ``fast`` (True, False, or None for the backbone's default) means fast mode."""
    return fast if fast is not None else backbone in FAST_BY_DEFAULT


def fast_preset(backbone: str) -> dict[str, Any]:
    """The ``--fast`` settings for one backbone: :data:`FAST_PRESET` updated by
    :data:`FAST_BACKBONE_PRESETS`."""
    own = FAST_BACKBONE_PRESETS.get(backbone, {}).get("search", {})
    return {"search": {**FAST_PRESET["search"], **own}}


def _apply(
    cfg: RunConfig,
    files: list[str | Path],
    updates: Mapping[str, Any] | None,
    overrides: list[str],
) -> RunConfig:
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
        if not isinstance(doc, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        cfg = _merge(cfg, doc)
    if updates:
        cfg = _merge(cfg, updates)
    for o in overrides:
        cfg = _merge(cfg, parse_override(o))
    return cfg


_CHOICES = {
    "data.protocol": ("paper", "standard"),
    "model.name": ("mf", "ncf", "ngcf", "lightgcn"),
    "search.method": ("bet", "bet-random", "bet-simple", "su", "sr", "full"),
    "search.on_exhausted": ("clamp", "error"),
    "search.pretrain": ("standard", "nested"),
    "search.retrain_init": ("scratch", "shared"),
    "search.predictor_update": ("single", "batch"),
    "search.predictor_output": ("leaky_relu", "linear"),
    "budget.dtype": ("fp32", "fp16", "bf16", "int8"),
    "budget.layout": ("jagged", "bucketed"),
}


def validate(cfg: RunConfig) -> RunConfig:
    """Value checks that types alone cannot express."""
    for key, choices in _CHOICES.items():
        section, name = key.split(".")
        v = getattr(getattr(cfg, section), name)
        if v not in choices:
            raise ConfigError(f"{key} = {v!r} is not one of {', '.join(choices)}")
    t = cfg.train
    positive = {
        "model.d_max": cfg.model.d_max,
        "train.batch_users": t.batch_users,
        "train.lr_decay_every": t.lr_decay_every,
        "train.eval_every_steps": t.eval_every_steps,
        "train.patience": t.patience,
        "train.max_steps": t.max_steps,
    }
    for key, v in positive.items():
        if v < 1:
            raise ConfigError(f"{key} must be at least 1, got {v}")
    s = cfg.search
    for key, v in {
        "search.iterations": s.iterations,
        "search.candidates": s.candidates,
        "search.retrain_top": s.retrain_top,
        "search.finetune_lr_decay_every": s.finetune_lr_decay_every,
        "search.max_attempts": s.max_attempts,
        "search.size_step": s.size_step,
    }.items():
        if v < 1:
            raise ConfigError(f"{key} must be at least 1, got {v}")
    if s.size_step > 1 and s.method in ("su", "sr"):
        raise ConfigError(
            f"search.size_step={s.size_step} applies to searched methods only; SU and SR sizes "
            "are not restricted to a grid (use --method bet, or size_step=1)"
        )
    if s.finetune_epochs is not None and s.finetune_epochs < 0:
        raise ConfigError(f"search.finetune_epochs must be >= 0, got {s.finetune_epochs}")
    for key, v in {
        "search.retrain_patience": s.retrain_patience,
        "search.retrain_max_steps": s.retrain_max_steps,
    }.items():
        if v is not None and v < 1:
            raise ConfigError(f"{key} must be at least 1 (or null for the train.* value), got {v}")
    if s.finetune_steps is not None and s.finetune_steps < 0:
        raise ConfigError(f"search.finetune_steps must be >= 0, got {s.finetune_steps}")
    if not 0.0 < s.nested_kept_min <= 1.0:
        raise ConfigError(
            f"search.nested_kept_min must lie in (0, 1], got {s.nested_kept_min}; it is the "
            "smallest kept fraction nested pretraining trains for (e.g. 0.03)"
        )
    if s.retrain_init == "shared" and s.pretrain != "nested":
        raise ConfigError(
            "search.retrain_init=shared warm-starts from the nested Θ0; it needs "
            "search.pretrain=nested (or use retrain_init=scratch)"
        )
    if not 0.0 < s.fitness_user_fraction <= 1.0:
        raise ConfigError("search.fitness_user_fraction must lie in (0, 1]")
    if not 0.0 < cfg.train.eval_user_fraction <= 1.0:
        raise ConfigError("train.eval_user_fraction must lie in (0, 1]")
    b = cfg.budget
    keys = ("sparsity", "kept_fraction", "params", "bytes")
    given = [k for k in keys if getattr(b, k) is not None]
    if len(given) != 1:
        raise ConfigError(
            "give exactly one of budget.sparsity, budget.kept_fraction, budget.params, "
            f"budget.bytes (got {given or 'none'}); e.g. --set budget.sparsity=null "
            "--set budget.params=100000"
        )
    if b.bytes is not None and b.bytes < 1:
        raise ConfigError(f"budget.bytes must be a positive integer, got {b.bytes}")
    if not cfg.eval.ks or min(cfg.eval.ks) < 1:
        raise ConfigError(f"eval.ks must be a non-empty list of positive ints, got {cfg.eval.ks}")
    return cfg
