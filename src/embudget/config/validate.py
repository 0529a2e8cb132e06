"""Value checks that the types alone cannot express (choices are checked by the loader)."""

from __future__ import annotations

from embudget.config.schema import RunConfig
from embudget.errors import ConfigError

#: Counts that must be at least 1.
AT_LEAST_ONE = (
    "model.d_max",
    "train.batch_users",
    "train.lr_decay_every",
    "train.eval_every_steps",
    "train.patience",
    "train.max_steps",
    "search.iterations",
    "search.sampler.candidates",
    "search.sampler.max_attempts",
    "search.sampler.size_step",
    "search.probe.lr_decay_every",
    "search.retrain.top",
)
#: Optional counts that must be at least 1 when given (null: the ``train.*`` value).
AT_LEAST_ONE_OR_NULL = ("search.retrain.patience", "search.retrain.max_steps")
#: Optional counts that may be 0 when given.
AT_LEAST_ZERO_OR_NULL = ("search.probe.epochs", "search.probe.steps")
#: Fractions in (0, 1] of the validation users (one fixed sample per run).
FRACTIONS = ("train.eval_user_fraction", "search.probe.user_fraction")
#: The four ways to state a budget; exactly one is given.
BUDGET_KEYS = ("sparsity", "kept_fraction", "params", "bytes")


def validate(cfg: RunConfig) -> RunConfig:
    """Return ``cfg`` if its values are consistent; raise :class:`ConfigError` otherwise."""
    flat = cfg.flat()
    for key in AT_LEAST_ONE:
        if flat[key] < 1:
            raise ConfigError(f"{key} must be at least 1, got {flat[key]}")
    for key in AT_LEAST_ONE_OR_NULL:
        if flat[key] is not None and flat[key] < 1:
            raise ConfigError(
                f"{key} must be at least 1 (or null for the train.* value), got {flat[key]}"
            )
    for key in AT_LEAST_ZERO_OR_NULL:
        if flat[key] is not None and flat[key] < 0:
            raise ConfigError(f"{key} must be >= 0, got {flat[key]}")
    for key in FRACTIONS:
        if not 0.0 < flat[key] <= 1.0:
            raise ConfigError(f"{key} must lie in (0, 1], got {flat[key]}")
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
    if not cfg.eval.ks or min(cfg.eval.ks) < 1:
        raise ConfigError(f"eval.ks must be a non-empty list of positive ints, got {cfg.eval.ks}")
    if cfg.eval.batch_users is not None and cfg.eval.batch_users < 1:
        got = cfg.eval.batch_users
        raise ConfigError(f"eval.batch_users must be at least 1 (or null), got {got}")
    return cfg
