"""Value checks that the types alone cannot express (choices are checked by the loader).

Every numeric setting has a range here, and every float must be finite (YAML reads ``.nan``
and ``.inf`` as floats); :func:`check_for_dataset` adds the bounds that need the data.
"""

from __future__ import annotations

import math
import re
from typing import Any

from embudget.config.choices import TIME_PROTOCOLS
from embudget.config.schema import DataConfig, RunConfig
from embudget.errors import ConfigError

#: Largest embedding size: sizes are stored as int16.
D_MAX_LIMIT = 2**15 - 1
#: Largest evaluation cut-off at config time (the dataset's item count bounds it again).
K_LIMIT = 1000
#: Largest seed: seeds are recorded as 64-bit signed integers.
SEED_LIMIT = 2**63 - 1
#: Most propagation layers of a graph backbone (bet.md uses 3).
LAYERS_LIMIT = 64
#: Most CPU threads (an unbounded count makes the OpenMP runtime fail to allocate its pool).
THREADS_LIMIT = 1024

#: Counts that must be at least 1.
AT_LEAST_ONE = (
    "train.batch_users",
    "train.lr_decay_every",
    "train.eval_every_steps",
    "train.patience",
    "train.max_steps",
    "search.iterations",
    "search.sampler.candidates",
    "search.probes_per_iteration",
    "search.sampler.max_attempts",
    "search.sampler.size_step",
    "search.probe.lr_decay_every",
    "search.predictor.updates",
    "search.retrain.top",
)
#: Optional counts that must be at least 1 when given (null: the ``train.*`` value, or for
#: ``threads`` the count chosen from the run's work).
AT_LEAST_ONE_OR_NULL = (
    "threads",
    "search.retrain.patience",
    "search.retrain.max_steps",
    "eval.batch_users",
)
#: Optional counts that may be 0 when given.
AT_LEAST_ZERO_OR_NULL = (
    "search.probe.epochs",
    "search.probe.steps",
    "search.probe.small_data_steps",
)
#: cpu, cuda, cuda:N or auto (whether CUDA is there is checked when the run starts).
DEVICE_PATTERN = re.compile(r"cpu|auto|cuda(:[0-9]{1,3})?")
#: Integers with their inclusive range.
BOUNDED_INTS = {
    "seed": (0, SEED_LIMIT),
    "data.split_seed": (0, SEED_LIMIT),
    "model.d_max": (1, D_MAX_LIMIT),
    "model.n_layers": (0, LAYERS_LIMIT),
    "data.min_user_interactions": (0, 2**31 - 1),
    "data.min_item_interactions": (0, 2**31 - 1),
    "search.probe.small_data_users": (0, 2**31 - 1),
}
#: Fractions in (0, 1]: of the validation users (one fixed sample per run), the per-step
#: learning-rate decay factors, the smallest kept fraction of nested pretraining.
FRACTIONS = (
    "train.eval_user_fraction",
    "train.lr_decay",
    "search.probe.user_fraction",
    "search.probe.lr_decay",
)
#: Learning rates and their floors: positive.
POSITIVE = ("train.lr", "train.lr_min", "search.probe.lr", "search.probe.lr_min")
#: Dropout probabilities in [0, 1).
DROPOUTS = ("model.node_dropout", "model.mess_dropout")
#: Optional floats that must be >= 0 when given.
NON_NEGATIVE_OR_NULL = ("model.reg", "train.min_delta")
#: Optional floats that must be positive when given.
POSITIVE_OR_NULL = ("train.eval_every_epochs",)
#: The four ways to state a budget; exactly one is given.
BUDGET_KEYS = ("sparsity", "kept_fraction", "params", "bytes")


def _finite(flat: dict[str, Any]) -> None:
    for key, value in flat.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{key} must be a finite number, got {v}")


def _ranges(flat: dict[str, Any]) -> None:
    for key in AT_LEAST_ONE:
        if flat[key] < 1:
            raise ConfigError(f"{key} must be at least 1, got {flat[key]}")
    for key in AT_LEAST_ONE_OR_NULL:
        if flat[key] is not None and flat[key] < 1:
            raise ConfigError(
                f"{key} must be at least 1 (or null for the default), got {flat[key]}"
            )
    if flat["threads"] is not None and flat["threads"] > THREADS_LIMIT:
        raise ConfigError(f"threads must be at most {THREADS_LIMIT}, got {flat['threads']}")
    for key in AT_LEAST_ZERO_OR_NULL:
        if flat[key] is not None and flat[key] < 0:
            raise ConfigError(f"{key} must be >= 0, got {flat[key]}")
    for key, (low, top) in BOUNDED_INTS.items():
        if not low <= flat[key] <= top:
            raise ConfigError(f"{key} must lie in [{low}, {top}], got {flat[key]}")
    for key in FRACTIONS:
        if not 0.0 < flat[key] <= 1.0:
            raise ConfigError(f"{key} must lie in (0, 1], got {flat[key]}")
    for key in POSITIVE:
        if not flat[key] > 0.0:
            raise ConfigError(f"{key} must be positive, got {flat[key]}; e.g. 0.03 (bet.md §9)")
    for key in DROPOUTS:
        if not 0.0 <= flat[key] < 1.0:
            raise ConfigError(f"{key} must lie in [0, 1), got {flat[key]}")
    for key in NON_NEGATIVE_OR_NULL:
        if flat[key] is not None and flat[key] < 0:
            raise ConfigError(f"{key} must be >= 0 (or null), got {flat[key]}")
    for key in POSITIVE_OR_NULL:
        if flat[key] is not None and not flat[key] > 0:
            raise ConfigError(f"{key} must be positive (or null), got {flat[key]}; e.g. 40")
    ks = flat["eval.ks"]
    if not ks or not all(1 <= k <= K_LIMIT for k in ks):
        raise ConfigError(
            f"eval.ks must be a non-empty list of cut-offs in [1, {K_LIMIT}], got {ks}; "
            "e.g. [5, 10, 20]"
        )
    if not str(flat["data.name"]).strip():
        raise ConfigError(
            "data.name is empty; name a dataset (e.g. gowalla, gowalla-mini) or give its path"
        )
    if not flat["checkpoint_minutes"] >= 0.0:
        raise ConfigError(
            f"checkpoint_minutes must be >= 0, got {flat['checkpoint_minutes']}; e.g. 10 "
            "(0 saves the training state after every step)"
        )
    if not str(flat["cache_dir"]).strip():
        raise ConfigError("cache_dir is empty; give a directory (default: cache)")
    if not DEVICE_PATTERN.fullmatch(str(flat["device"])):
        raise ConfigError(f"device {flat['device']!r} is not valid; use cpu, cuda, cuda:N or auto")
    sparsity, kept = flat["budget.sparsity"], flat["budget.kept_fraction"]
    if sparsity is not None and not 0.0 <= sparsity < 1.0:
        raise ConfigError(
            f"budget.sparsity must lie in [0, 1) (the share of the full table removed), got "
            f"{sparsity}; e.g. 0.8 keeps 20 %"
        )
    if kept is not None and not 0.0 < kept <= 1.0:
        raise ConfigError(f"budget.kept_fraction must lie in (0, 1], got {kept}; e.g. 0.2")


def _data(d: DataConfig) -> None:
    for key in ("user_col", "item_col", "time_col"):
        value = getattr(d, key)
        if value is not None and not value.strip():
            raise ConfigError(f"data.{key} is empty; name a header column (or null)")
    if d.sep is not None and (not d.sep or d.sep in ("\n", "\r", '"')):
        raise ConfigError(
            f"data.sep must be a field delimiter such as ',', '\\t' or ';', got {d.sep!r} "
            "(or null to sniff it)"
        )
    if d.protocol in TIME_PROTOCOLS and d.time_col is None:
        raise ConfigError(
            f"data.protocol={d.protocol} orders interactions by time; name the timestamp "
            "column with data.time_col (--time-col), or use protocol paper or standard"
        )
    for key in ("test_fraction", "valid_fraction"):
        if not 0.0 <= getattr(d, key) < 1.0:
            raise ConfigError(f"data.{key} must lie in [0, 1), got {getattr(d, key)}")
    if d.test_fraction + d.valid_fraction >= 1.0:
        raise ConfigError(
            f"data.test_fraction + data.valid_fraction must stay below 1 (training keeps the "
            f"rest), got {d.test_fraction} + {d.valid_fraction}"
        )


def validate(cfg: RunConfig) -> RunConfig:
    """Return ``cfg`` if its values are consistent; raise :class:`ConfigError` otherwise."""
    flat = cfg.flat()
    _finite(flat)
    _ranges(flat)
    _data(cfg.data)
    s = cfg.search
    if s.sampler.size_step > 1 and s.method in ("su", "sr"):
        raise ConfigError(
            f"search.sampler.size_step={s.sampler.size_step} applies to searched methods only; "
            "SU and SR sizes are not restricted to a grid (use --method bet, or size_step=1)"
        )
    if not 0.0 < s.pretrain.nested_kept_min <= 1.0:
        raise ConfigError(
            f"search.pretrain.nested_kept_min must lie in (0, 1], got "
            f"{s.pretrain.nested_kept_min}; it is the smallest kept fraction nested pretraining "
            "trains for (e.g. 0.03)"
        )
    if s.retrain.init == "shared" and s.pretrain.mode != "nested":
        raise ConfigError(
            "search.retrain.init=shared warm-starts from the nested Θ0; it needs "
            "search.pretrain.mode=nested (or use search.retrain.init=scratch)"
        )
    b = cfg.budget
    given = [k for k in BUDGET_KEYS if getattr(b, k) is not None]
    if len(given) != 1:
        raise ConfigError(
            "give exactly one of budget.sparsity, budget.kept_fraction, budget.params, "
            f"budget.bytes (got {given or 'none'}); e.g. --set budget.sparsity=null "
            "--set budget.params=100000"
        )
    if b.bytes is not None and b.bytes < 1:
        raise ConfigError(f"budget.bytes must be a positive integer, got {b.bytes}")
    return cfg


def check_for_dataset(cfg: RunConfig, n_items: int) -> None:
    """Refuse settings the dataset cannot support: a cut-off K above the item count (the
    ranked list holds at most ``n_items`` items, and ranking memory grows with K).

    Raises:
        ConfigError: naming the setting, the item count and the fix.
    """
    k_max = max(cfg.eval.ks)
    if k_max > n_items:
        raise ConfigError(
            f"eval.ks has K={k_max} but the dataset has only {n_items:,} items; use cut-offs "
            f"<= {n_items} (e.g. --set eval.ks=[5,10,20])"
        )
