"""The k-core filter: drop users and items with too few interactions, to a fixed point.

Dropping a user lowers the counts of its items, which may then fall below their threshold, and
so on; the filter repeats both passes until nothing changes. Counts only fall, so the result is
the largest set of interactions in which every user has at least ``min_user`` and every item at
least ``min_item`` interactions (the k-core for ``min_user == min_item == k``).
"""

from __future__ import annotations

import numpy as np

from embudget.errors import ConfigError


def kcore_masks(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    min_user: int,
    min_item: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the users and items that survive the filter.

    Args:
        users, items: 0-based indices of the interactions (one entry each, no duplicates).
        n_users, n_items: index ranges.
        min_user, min_item: the least interactions a kept user / item has (0 or 1: no limit).

    An interaction survives exactly when both its user and its item do.
    """
    if min_user < 0 or min_item < 0:
        raise ConfigError(f"k-core thresholds must be >= 0, got {min_user} and {min_item}")
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    keep_u = np.ones(n_users, dtype=bool)
    keep_i = np.ones(n_items, dtype=bool)
    alive = np.ones(len(users), dtype=bool)
    while True:
        cu = np.bincount(users[alive], minlength=n_users)
        ci = np.bincount(items[alive], minlength=n_items)
        new_u = keep_u & (cu >= min_user)
        new_i = keep_i & (ci >= min_item)
        if (new_u == keep_u).all() and (new_i == keep_i).all():
            return keep_u & (cu > 0), keep_i & (ci > 0)
        keep_u, keep_i = new_u, new_i
        alive = keep_u[users] & keep_i[items]


def reindex(keep: np.ndarray) -> np.ndarray:
    """New 0-based index of every kept entry of a mask (-1 for dropped ones)."""
    out = np.full(len(keep), -1, dtype=np.int64)
    out[keep] = np.arange(int(keep.sum()), dtype=np.int64)
    return out


def kcore_parts(
    uidx: list[np.ndarray],
    iidx: list[np.ndarray],
    n_users: int,
    n_items: int,
    min_user: int,
    min_item: int,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The k-core of interactions given in parts (e.g. a given train and test file).

    Counts are over the distinct (user, item) pairs of all parts together. Returns the kept
    user and item masks and, per part, the mask of its kept interactions.
    """
    u = np.concatenate(uidx)
    i = np.concatenate(iidx)
    keys = np.unique(u * n_items + i)
    keep_u, keep_i = kcore_masks(
        keys // n_items, keys % n_items, n_users, n_items, min_user, min_item
    )
    return keep_u, keep_i, [keep_u[a] & keep_i[b] for a, b in zip(uidx, iidx, strict=True)]
