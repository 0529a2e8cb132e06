"""Protocol P and S splits (protocol.md §3-4), by keyed ordering, without per-user loops.

Keyed ordering: sort the interactions by (user, item), draw one uniform key per interaction in
that order from ``Generator(PCG64(seed))``, and order each user's interactions by key. Every
carve takes the first ``count[user]`` interactions of a user in that order.

All functions take contiguous 0-based user/item indices (int64 arrays) and return
``{"train"|"valid"|"test": (users, items)}`` with pairs sorted by (user, item).
"""

from __future__ import annotations

import numpy as np

from embudget.errors import ConfigError

Pairs = tuple[np.ndarray, np.ndarray]
SplitArrays = dict[str, Pairs]
SPLIT_NAMES = ("train", "valid", "test")


def paper_counts(n: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Protocol P per-user (n_train, n_valid, n_test) for n interactions (round half to even)."""
    n = np.asarray(n, dtype=np.int64)
    n_tv = np.rint(0.75 * n).astype(np.int64)
    n_train = np.rint(2.0 / 3.0 * n_tv).astype(np.int64)
    return n_train, n_tv - n_train, n - n_tv


def standard_valid_counts(n: np.ndarray | int) -> np.ndarray:
    """Protocol S validation count n_valid = min(round(0.1 n), n - 1), at least 0."""
    n = np.asarray(n, dtype=np.int64)
    return np.clip(np.minimum(np.rint(0.1 * n).astype(np.int64), n - 1), 0, None)


def derived_test_counts(n: np.ndarray | int) -> np.ndarray:
    """Test count n_test = round(0.2 n) of the derived split for single-file datasets."""
    return np.rint(0.2 * np.asarray(n, dtype=np.int64)).astype(np.int64)


def keyed_rank(
    users: np.ndarray, items: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keyed ordering: (users, items, rank) sorted by (user, key), rank 0-based within user."""
    u, i = _sorted(np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64))
    keys = np.random.Generator(np.random.PCG64(seed)).random(len(u))
    order = np.lexsort((keys, u))  # stable: users stay grouped, keys order within a user
    u, i = u[order], i[order]
    if len(u) == 0:
        return u, i, np.zeros(0, dtype=np.int64)
    new_user = np.empty(len(u), dtype=bool)
    new_user[0] = True
    np.not_equal(u[1:], u[:-1], out=new_user[1:])
    group_start = np.maximum.accumulate(np.where(new_user, np.arange(len(u)), 0))
    return u, i, np.arange(len(u), dtype=np.int64) - group_start


def carve(
    users: np.ndarray, items: np.ndarray, count: np.ndarray, seed: int
) -> tuple[Pairs, Pairs]:
    """Split off the first ``count[user]`` interactions of each user by keyed ordering.

    Returns (carved, rest), each sorted by (user, item).
    """
    u, i, rank = keyed_rank(users, items, seed)
    take = rank < count[u] if len(u) else np.zeros(0, dtype=bool)
    return _sorted(u[take], i[take]), _sorted(u[~take], i[~take])


def _sorted(u: np.ndarray, i: np.ndarray) -> Pairs:
    """Pairs sorted by (user, item); one int64 key sort is much faster than a lexsort."""
    if len(u) == 0:
        return u, i
    o = np.argsort(u * (int(i.max()) + 1) + i, kind="stable")
    return u[o], i[o]


def _per_user(users: np.ndarray, n_users: int) -> np.ndarray:
    return np.bincount(users, minlength=n_users).astype(np.int64)


def _check(users: np.ndarray, items: np.ndarray, n_users: int) -> None:
    if len(users) != len(items):
        raise ConfigError(
            f"users and items differ in length ({len(users)} vs {len(items)}); pass aligned arrays"
        )
    if len(users) and (users.min() < 0 or users.max() >= n_users):
        raise ConfigError(f"user indices must lie in [0, {n_users}); remap ids first")


def split_paper(users: np.ndarray, items: np.ndarray, n_users: int, seed: int) -> SplitArrays:
    """Protocol P: 50/25/25 per user (see :func:`paper_counts`) by keyed ordering."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    _check(users, items, n_users)
    n_train, n_valid, _ = paper_counts(_per_user(users, n_users))
    u, i, rank = keyed_rank(users, items, seed)
    where = np.where(rank < n_train[u], 0, np.where(rank < (n_train + n_valid)[u], 1, 2))
    return {s: _sorted(u[where == k], i[where == k]) for k, s in enumerate(SPLIT_NAMES)}


def split_standard(train: Pairs, test: Pairs, n_users: int, seed: int) -> SplitArrays:
    """Protocol S with a given train/test: validation carved from train per user."""
    tu, ti = (np.asarray(a, dtype=np.int64) for a in train)
    _check(tu, ti, n_users)
    n_valid = standard_valid_counts(_per_user(tu, n_users))
    valid, rest = carve(tu, ti, n_valid, seed)
    eu, ei = (np.asarray(a, dtype=np.int64) for a in test)
    _check(eu, ei, n_users)
    return {"train": rest, "valid": valid, "test": _sorted(eu, ei)}


def split_standard_single(
    users: np.ndarray, items: np.ndarray, n_users: int, seed: int
) -> SplitArrays:
    """Protocol S without a given split: test = round(0.2 n) by ``seed``, then validation
    carved from the rest as in :func:`split_standard` with ``seed + 1``."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    _check(users, items, n_users)
    test, rest = carve(users, items, derived_test_counts(_per_user(users, n_users)), seed)
    return split_standard(rest, test, n_users, seed + 1)


def split_summary(splits: SplitArrays, n_users: int) -> dict[str, int]:
    """Counts recorded with every split: interactions per split, users with an empty
    validation/test set (among users with any interaction), cold-start users (test items
    but no training item)."""
    per = {s: _per_user(splits[s][0], n_users) for s in SPLIT_NAMES}
    active = (per["train"] + per["valid"] + per["test"]) > 0
    return {
        "n_train": int(per["train"].sum()),
        "n_valid": int(per["valid"].sum()),
        "n_test": int(per["test"].sum()),
        "users_empty_valid": int((active & (per["valid"] == 0)).sum()),
        "users_empty_test": int((active & (per["test"] == 0)).sum()),
        "cold_start_users": int(((per["test"] > 0) & (per["train"] == 0)).sum()),
    }
