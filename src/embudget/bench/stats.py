"""Paired significance test over per-user scores (protocol.md §8)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import scipy.stats

from embudget.errors import ConfigError


def _vector(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ConfigError(f"{name} must be 1-D (one value per user), got shape {a.shape}")
    return a


def align_per_user(
    users_a: np.ndarray, values_a: np.ndarray, users_b: np.ndarray, values_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the users evaluated by both runs.

    Returns ``(users, a, b)``: the common user indices (ascending) and each run's values for them.
    """
    ua, va = _vector(users_a, "users_a"), _vector(values_a, "values_a")
    ub, vb = _vector(users_b, "users_b"), _vector(values_b, "values_b")
    for u, v, tag in ((ua, va, "a"), (ub, vb, "b")):
        if len(u) != len(v):
            raise ConfigError(
                f"users_{tag} has {len(u)} entries but values_{tag} has {len(v)}; "
                "pass the users and per-user values of the same evaluation"
            )
        if len(np.unique(u)) != len(u):
            raise ConfigError(f"users_{tag} contains duplicate users; each user appears once")
    common, ia, ib = np.intersect1d(ua, ub, assume_unique=True, return_indices=True)
    return common, va[ia], vb[ib]


def mean_per_user(
    runs: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's score averaged over several runs (e.g. seeds), for the users every run
    evaluated.

    Args:
        runs: ``(users, values)`` of each run, one value per user, users in any order.

    Returns:
        ``(users, mean)``: the common users (ascending) and their mean score (float64).
    """
    if not runs:
        raise ConfigError("mean_per_user needs at least one run")
    # each run checked (lengths, no duplicate user) and sorted by user
    ordered = [align_per_user(u, v, u, v)[:2] for u, v in runs]
    users = ordered[0][0]
    for u, _ in ordered[1:]:
        users = np.intersect1d(users, u, assume_unique=True)
    stacked = [v[np.searchsorted(u, users)].astype(np.float64) for u, v in ordered]
    return users, np.mean(np.stack(stacked), axis=0)


def paired_ttest(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Two-sided paired t-test of ``a - b`` over users (``scipy.stats.ttest_rel``).

    Args:
        a, b: per-user scores of the method and the baseline, aligned by user
            (see :func:`align_per_user`); with several seeds, average each user over the seeds
            first.
        confidence: level of the confidence interval of the mean difference.

    Returns:
        ``mean_diff`` (mean of a − b), ``ci_low``, ``ci_high`` (Student-t interval), ``t``, ``p``
        and ``n``. Identical inputs have no variance: t and p are then NaN.
    """
    x, y = _vector(a, "a").astype(np.float64), _vector(b, "b").astype(np.float64)
    if len(x) != len(y):
        raise ConfigError(
            f"a has {len(x)} users and b has {len(y)}; align them with align_per_user first"
        )
    if len(x) < 2:
        raise ConfigError(f"a paired t-test needs at least 2 users, got {len(x)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ConfigError("per-user scores contain NaN or inf; evaluate again or drop them")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")
    n = len(x)
    d = x - y
    mean = float(d.mean())
    se = float(d.std(ddof=1)) / np.sqrt(n)
    half = float(scipy.stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * se
    with warnings.catch_warnings():
        # scipy warns about precision loss when the differences are (nearly) constant
        warnings.simplefilter("ignore", RuntimeWarning)
        res = scipy.stats.ttest_rel(x, y)
    return {
        "mean_diff": mean,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "t": float(res.statistic),
        "p": float(res.pvalue),
        "n": n,
    }
