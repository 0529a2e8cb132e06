"""Splits that order interactions by time: a global time cut and leave-last-out.

- ``temporal``: all interactions sorted by time; the latest ``round(test_fraction * n)`` form
  test, the ``round(valid_fraction * n)`` before them validation, the rest train (round half
  to even, as protocol.md's per-user counts). Defaults 0.2 and 0.1: a 70/10/20 cut in time.
- ``leave-last-out``: per user, the latest interaction is test and the one before it
  validation; a user with fewer than 3 interactions keeps all of them in train.

Equal timestamps are ordered by (user, item) index, so a split is a function of the data alone.
Both return ``{"train"|"valid"|"test": (users, items)}`` sorted by (user, item), as
:mod:`embudget.data.split` does.
"""

from __future__ import annotations

import numpy as np

from embudget.data.split import SPLIT_NAMES, SplitArrays, _check, _sorted
from embudget.errors import ConfigError

#: Fewest interactions a user needs before leave-last-out holds any of them out.
LEAVE_LAST_OUT_MIN = 3


def _times(times: np.ndarray, n: int) -> np.ndarray:
    t = np.asarray(times, dtype=np.float64)
    if len(t) != n:
        raise ConfigError(f"timestamps and interactions differ in length ({len(t)} vs {n})")
    if len(t) and not np.isfinite(t).all():
        raise ConfigError("timestamps must be finite numbers")
    return t


def temporal_counts(n: int, test_fraction: float, valid_fraction: float) -> tuple[int, int]:
    """(n_valid, n_test) of the global time cut of ``n`` interactions."""
    if not (0 <= test_fraction < 1 and 0 <= valid_fraction < 1):
        raise ConfigError("test_fraction and valid_fraction must lie in [0, 1)")
    if test_fraction + valid_fraction >= 1:
        raise ConfigError("test_fraction + valid_fraction must stay below 1")
    return int(np.rint(valid_fraction * n)), int(np.rint(test_fraction * n))


def split_temporal(
    users: np.ndarray,
    items: np.ndarray,
    times: np.ndarray,
    n_users: int,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.1,
) -> SplitArrays:
    """Global time cut: latest ``test_fraction`` test, the ``valid_fraction`` before it valid."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    _check(users, items, n_users)
    t = _times(times, len(users))
    n_valid, n_test = temporal_counts(len(users), test_fraction, valid_fraction)
    order = np.lexsort((items, users, t))  # time, then user, then item
    u, i = users[order], items[order]
    n_train = len(u) - n_valid - n_test
    where = np.zeros(len(u), dtype=np.int64)
    where[n_train : n_train + n_valid] = 1
    where[n_train + n_valid :] = 2
    return {s: _sorted(u[where == k], i[where == k]) for k, s in enumerate(SPLIT_NAMES)}


def split_leave_last_out(
    users: np.ndarray, items: np.ndarray, times: np.ndarray, n_users: int
) -> SplitArrays:
    """Per user: the latest interaction test, the one before validation (users with at least
    :data:`LEAVE_LAST_OUT_MIN` interactions; the others keep all in train)."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    _check(users, items, n_users)
    t = _times(times, len(users))
    order = np.lexsort((items, t, users))  # user, then time, then item
    u, i = users[order], items[order]
    count = np.bincount(u, minlength=n_users).astype(np.int64)
    # position from the end within the user's run: 0 for the latest interaction
    end = np.cumsum(count)[u] - 1
    from_end = end - np.arange(len(u), dtype=np.int64)
    eligible = count[u] >= LEAVE_LAST_OUT_MIN
    where = np.where(eligible & (from_end == 0), 2, np.where(eligible & (from_end == 1), 1, 0))
    return {s: _sorted(u[where == k], i[where == k]) for k, s in enumerate(SPLIT_NAMES)}
