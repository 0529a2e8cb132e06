"""Protocol P/S splits: golden counts, keyed ordering vs a loop reference, invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embudget.data.dataset import Dataset
from embudget.data.split import (
    carve,
    derived_test_counts,
    keyed_rank,
    paper_counts,
    split_paper,
    split_standard,
    split_standard_single,
    split_summary,
    standard_valid_counts,
)

# protocol.md §3 step 5 (G6)
GOLDEN = {
    1: (1, 0, 0), 2: (1, 1, 0), 3: (1, 1, 1), 4: (2, 1, 1), 5: (3, 1, 1), 6: (3, 1, 2),
    7: (3, 2, 2), 8: (4, 2, 2), 9: (5, 2, 2), 10: (5, 3, 2), 11: (5, 3, 3), 12: (6, 3, 3),
}  # fmt: skip


def test_paper_count_table() -> None:
    n = np.arange(1, 13)
    tr, va, te = paper_counts(n)
    got = {int(k): (int(a), int(b), int(c)) for k, a, b, c in zip(n, tr, va, te, strict=True)}
    assert got == GOLDEN


def test_standard_and_derived_counts_round_half_even() -> None:
    n = np.array([0, 1, 4, 5, 6, 8, 14, 15, 25, 35])
    assert standard_valid_counts(n).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 4]
    assert derived_test_counts(np.array([1, 2, 3, 5, 12, 13, 20])).tolist() == [0, 0, 1, 1, 2, 3, 4]


def _reference_ranks(users: np.ndarray, items: np.ndarray, seed: int) -> dict[tuple[int, int], int]:
    """Slow loop reference of the keyed ordering (protocol.md §3 step 3)."""
    pairs = sorted(zip(users.tolist(), items.tolist(), strict=True))
    keys = np.random.Generator(np.random.PCG64(seed)).random(len(pairs))
    by_user: dict[int, list[tuple[float, int]]] = {}
    for (u, i), k in zip(pairs, keys, strict=True):
        by_user.setdefault(u, []).append((float(k), i))
    out = {}
    for u, lst in by_user.items():
        for r, (_, i) in enumerate(sorted(lst)):
            out[(u, i)] = r
    return out


def _random_pairs(rng: np.random.Generator, n_users: int, n_items: int, n: int):  # type: ignore[no-untyped-def]
    keys = rng.choice(n_users * n_items, size=n, replace=False)
    return keys // n_items, keys % n_items


def test_keyed_rank_matches_loop_reference() -> None:
    u, i = _random_pairs(np.random.default_rng(0), 30, 50, 600)
    su, si, rank = keyed_rank(u, i, seed=7)
    ref = _reference_ranks(u, i, 7)
    got = {(int(a), int(b)): int(r) for a, b, r in zip(su, si, rank, strict=True)}
    assert got == ref


def test_split_paper_matches_loop_reference() -> None:
    u, i = _random_pairs(np.random.default_rng(1), 25, 40, 400)
    sp = split_paper(u, i, 25, seed=42)
    ref = _reference_ranks(u, i, 42)
    n = np.bincount(u, minlength=25)
    tr, va, _ = paper_counts(n)
    for name, code in (("train", 0), ("valid", 1), ("test", 2)):
        want = sorted(
            p
            for p, r in ref.items()
            if code == (0 if r < tr[p[0]] else 1 if r < tr[p[0]] + va[p[0]] else 2)
        )
        got = list(zip(sp[name][0].tolist(), sp[name][1].tolist(), strict=True))
        assert got == want


def _as_set(pairs: tuple[np.ndarray, np.ndarray]) -> set[tuple[int, int]]:
    return set(zip(pairs[0].tolist(), pairs[1].tolist(), strict=True))


def _counts(pairs: tuple[np.ndarray, np.ndarray], n_users: int) -> list[int]:
    return np.bincount(pairs[0], minlength=n_users).tolist()  # type: ignore[no-any-return]


interactions = st.sets(
    st.tuples(st.integers(0, 7), st.integers(0, 11)), min_size=1, max_size=60
).map(lambda s: (np.array([p[0] for p in sorted(s)]), np.array([p[1] for p in sorted(s)])))
SETTINGS = settings(max_examples=40, deadline=None)


def _check_partition(splits, u, i, n_users) -> None:  # type: ignore[no-untyped-def]
    parts = [_as_set(splits[s]) for s in ("train", "valid", "test")]
    assert sum(len(p) for p in parts) == len(u)  # pairwise disjoint ...
    assert set().union(*parts) == _as_set((u, i))  # ... and the union is the input


@SETTINGS
@given(data=interactions, seed=st.integers(0, 2**32 - 1), other=st.integers(0, 2**32 - 1))
def test_paper_invariants(data, seed: int, other: int) -> None:  # type: ignore[no-untyped-def]
    u, i = data
    n_users = 8
    sp = split_paper(u, i, n_users, seed)
    _check_partition(sp, u, i, n_users)
    n = np.bincount(u, minlength=n_users)
    tr, va, te = paper_counts(n)
    assert _counts(sp["train"], n_users) == tr.tolist()
    assert _counts(sp["valid"], n_users) == va.tolist()
    assert _counts(sp["test"], n_users) == te.tolist()
    assert ((np.array(_counts(sp["train"], n_users)) >= 1) | (n == 0)).all()
    again = split_paper(u, i, n_users, seed)
    assert all(_as_set(again[s]) == _as_set(sp[s]) for s in sp)
    sp2 = split_paper(u, i, n_users, other)
    assert all(_counts(sp2[s], n_users) == _counts(sp[s], n_users) for s in sp)


@SETTINGS
@given(data=interactions, test_frac=st.floats(0.0, 0.5), seed=st.integers(0, 2**32 - 1))
def test_standard_invariants(data, test_frac: float, seed: int) -> None:  # type: ignore[no-untyped-def]
    u, i = data
    n_users = 8
    is_test = np.random.default_rng(seed).random(len(u)) < test_frac
    train, test = (u[~is_test], i[~is_test]), (u[is_test], i[is_test])
    sp = split_standard(train, test, n_users, seed)
    _check_partition(sp, u, i, n_users)
    assert _as_set(sp["test"]) == _as_set(test)  # the given test is kept unchanged
    n = np.bincount(train[0], minlength=n_users)
    assert _counts(sp["valid"], n_users) == standard_valid_counts(n).tolist()
    kept = np.array(_counts(sp["train"], n_users))
    assert ((kept >= 1) | (n == 0)).all()
    again = split_standard(train, test, n_users, seed)
    assert all(_as_set(again[s]) == _as_set(sp[s]) for s in sp)


@SETTINGS
@given(data=interactions, seed=st.integers(0, 2**32 - 2))
def test_standard_single_invariants(data, seed: int) -> None:  # type: ignore[no-untyped-def]
    u, i = data
    n_users = 8
    sp = split_standard_single(u, i, n_users, seed)
    _check_partition(sp, u, i, n_users)
    n = np.bincount(u, minlength=n_users)
    n_test = derived_test_counts(n)
    assert _counts(sp["test"], n_users) == n_test.tolist()
    assert _counts(sp["valid"], n_users) == standard_valid_counts(n - n_test).tolist()
    assert ((np.array(_counts(sp["train"], n_users)) >= 1) | (n == 0)).all()
    # the two carves use seed and seed + 1, in that order
    test, rest = carve(u, i, n_test, seed)
    valid, _ = carve(*rest, standard_valid_counts(n - n_test), seed + 1)
    assert _as_set(sp["test"]) == _as_set(test) and _as_set(sp["valid"]) == _as_set(valid)


def _dataset(splits, n_users: int, n_items: int, seed: int) -> Dataset:  # type: ignore[no-untyped-def]
    return Dataset.from_arrays("t", "paper", seed, splits, np.arange(n_users), np.arange(n_items))


@pytest.mark.parametrize("protocol", ["paper", "single"])
def test_seed_changes_assignment_not_counts(protocol: str) -> None:
    u, i = _random_pairs(np.random.default_rng(5), 40, 60, 800)
    fn = split_paper if protocol == "paper" else split_standard_single
    a, b, c = fn(u, i, 40, 1), fn(u, i, 40, 1), fn(u, i, 40, 2)
    fa, fb, fc = (_dataset(x, 40, 60, 0).fingerprint() for x in (a, b, c))
    assert fa == fb
    assert fa != fc
    for s in ("train", "valid", "test"):
        assert _counts(a[s], 40) == _counts(c[s], 40)
        assert _as_set(a[s]) != _as_set(c[s]) or len(a[s][0]) == 0


def test_split_summary_counts_cold_start_and_empty() -> None:
    # user 0: 1 train item only (no valid, no test); user 1: test only (cold start)
    train = (np.array([0, 2, 2, 2, 2, 2, 2]), np.array([0, 0, 1, 2, 3, 4, 5]))
    test = (np.array([1, 2]), np.array([3, 6]))
    sp = split_standard(train, test, 3, seed=0)
    s = split_summary(sp, 3)
    assert s == {
        "n_train": 6,
        "n_valid": 1,
        "n_test": 2,
        "users_empty_valid": 2,
        "users_empty_test": 1,
        "cold_start_users": 1,
    }
