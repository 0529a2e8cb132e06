"""Full-ranking evaluation: golden case G5, tie/exclusion/skip rules, NaN, and equivalence with a
slow loop-based reference (protocol.md §5, §6)."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from embudget.data import load_dataset
from embudget.data.dataset import Dataset
from embudget.data.load import SHIPPED_DIR
from embudget.errors import ConfigError, EmbudgetError
from embudget.training.evaluate import EvalResult, ScoreError, _n_groups, evaluate, top_k

TOL = 1e-4
NEG_INF = float("-inf")


def _pairs(p: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    a = np.array(p, dtype=np.int64).reshape(-1, 2)
    return a[:, 0], a[:, 1]


def _dataset(
    n_users: int,
    n_items: int,
    train: list[tuple[int, int]],
    valid: list[tuple[int, int]],
    test: list[tuple[int, int]],
) -> Dataset:
    splits = {"train": _pairs(train), "valid": _pairs(valid), "test": _pairs(test)}
    return Dataset.from_arrays("tiny", "paper", 42, splits, np.arange(n_users), np.arange(n_items))


def _matrix_scorer(s: torch.Tensor):  # type: ignore[no-untyped-def]
    return lambda u: s[u]


# --- G5 ---------------------------------------------------------------------------------------

A, B, C = 0, 1, 2
G5 = _dataset(
    3,
    6,
    train=[(A, 0), (B, 1), (C, 2)],
    valid=[(A, 3), (C, 0)],
    test=[(A, 1), (A, 5), (C, 5)],
)
G5_SCORES = torch.tensor(
    [
        [0.9, 0.5, 0.7, 0.8, 0.5, 0.1],
        [0.3, 0.3, 0.3, 0.3, 0.3, 0.3],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    ]
)


def test_g5_test_split() -> None:
    r = evaluate(_matrix_scorer(G5_SCORES), G5, split="test", ks=(2,))
    assert r.n_users_evaluated == 2
    np.testing.assert_array_equal(r.users, [A, C])  # B has no test item: skipped
    np.testing.assert_allclose(r.per_user["recall@2"], [0.5, 1.0], atol=TOL)
    np.testing.assert_allclose(r.per_user["ndcg@2"], [0.3869, 1.0], atol=TOL)
    np.testing.assert_allclose(r.per_user["precision@2"], [0.5, 0.5], atol=TOL)
    assert r.means["recall@2"] == pytest.approx(0.75, abs=TOL)
    assert r.means["ndcg@2"] == pytest.approx(0.6934, abs=TOL)
    assert r.means["precision@2"] == pytest.approx(0.5, abs=TOL)
    assert r.means["hitrate@2"] == pytest.approx(1.0, abs=TOL)
    assert "quality" not in r.means  # Q needs K = 5, 10, 20


def test_g5_valid_split() -> None:
    r = evaluate(_matrix_scorer(G5_SCORES), G5, split="valid", ks=(2,))
    assert r.n_users_evaluated == 2
    np.testing.assert_allclose(r.per_user["recall@2"], [1.0, 0.0], atol=TOL)
    np.testing.assert_allclose(r.per_user["ndcg@2"], [1.0, 0.0], atol=TOL)
    assert r.means["recall@2"] == pytest.approx(0.5, abs=TOL)
    assert r.means["ndcg@2"] == pytest.approx(0.5, abs=TOL)


def test_g5_tie_goes_to_lower_index() -> None:
    s = G5_SCORES.clone()
    s[A, [0, 3]] = NEG_INF  # A's test-time exclusions
    np.testing.assert_array_equal(top_k(s, 2)[A].numpy(), [2, 1])
    np.testing.assert_array_equal(top_k(s, 4)[A].numpy(), [2, 1, 4, 5])


def test_result_types_and_to_dict() -> None:
    r = evaluate(_matrix_scorer(G5_SCORES), G5, split="test", ks=(2, 1))
    assert isinstance(r, EvalResult)
    assert r.ks == (2, 1)
    assert all(v.dtype == np.float32 and v.shape == (2,) for v in r.per_user.values())
    d = json.loads(json.dumps(r.to_dict()))
    assert d["n_users_evaluated"] == 2 and d["means"]["recall@2"] == pytest.approx(0.75)
    with pytest.raises(AttributeError):
        r.split = "valid"  # type: ignore[misc]


def test_quality_present_with_default_ks() -> None:
    rng = np.random.default_rng(0)
    ds, s = _random_case(rng, n_users=20, n_items=40)
    r = evaluate(_matrix_scorer(s), ds, split="valid")
    keys = ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"]
    q = np.mean([r.per_user[k].astype(np.float64) for k in keys], axis=0)
    np.testing.assert_allclose(r.per_user["quality"], q, atol=1e-6)
    assert r.means["quality"] == pytest.approx(np.mean([r.means[k] for k in keys]), abs=1e-9)


def test_fewer_items_than_k_are_non_hits() -> None:
    # user 0 may rank only items 3 and 4; its single target (4) is found at rank 2 of 5
    ds = _dataset(1, 5, train=[(0, 0), (0, 1), (0, 2)], valid=[(0, 4)], test=[(0, 3)])
    s = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    r = evaluate(_matrix_scorer(s), ds, split="valid", ks=(5, 20))
    assert r.means["recall@5"] == 1.0 and r.means["precision@5"] == pytest.approx(0.2)
    assert r.means["precision@20"] == pytest.approx(0.05)
    assert r.means["ndcg@5"] == pytest.approx(1 / math.log2(3))
    # at test time items 0-2 and 4 are excluded: one rankable item, target 3 at rank 1
    r = evaluate(_matrix_scorer(s), ds, split="test", ks=(5,))
    assert r.means["ndcg@5"] == pytest.approx(1.0)


# --- NaN, shapes, arguments ---------------------------------------------------------------


@pytest.mark.parametrize("n_items", [6, 60, 3000])  # sort path, plain topk, group filter
@pytest.mark.parametrize("where", ["first", "last", "excluded"])
def test_nan_scores_raise(n_items: int, where: str) -> None:
    ds = _dataset(2, n_items, train=[(0, 1), (1, 2)], valid=[(0, 0), (1, 0)], test=[(1, 3)])
    s = torch.arange(2 * n_items, dtype=torch.float32).reshape(2, n_items)
    col = {"first": 0, "last": n_items - 1, "excluded": 1}[where]
    s[0, col] = float("nan")
    with pytest.raises(ValueError, match="NaN") as info:
        evaluate(_matrix_scorer(s), ds, split="valid", ks=(5,))
    assert isinstance(info.value, ScoreError) and isinstance(info.value, EmbudgetError)


def test_nan_in_skipped_user_is_not_scored() -> None:
    s = G5_SCORES.clone()
    s[B] = float("nan")  # B has no target: never scored
    r = evaluate(_matrix_scorer(s), G5, split="test", ks=(2,))
    assert r.means["recall@2"] == pytest.approx(0.75, abs=TOL)


def test_wrong_shape_raises() -> None:
    with pytest.raises(ScoreError, match="shape"):
        evaluate(lambda u: G5_SCORES[u][:, :5], G5, split="test", ks=(2,))


def test_scorer_output_view_is_not_modified() -> None:
    s = G5_SCORES.clone()
    before = s.clone()
    # returns a view of the caller's matrix (all users in one batch)
    r = evaluate(
        lambda u: s[: len(u)] if len(u) == 3 else s[u],
        G5,
        "test",
        ks=(2,),
        users=np.array([0, 1, 2]),
        batch_users=3,
    )
    torch.testing.assert_close(s, before)
    assert r.n_users_evaluated == 2


def test_scores_on_another_device_raise() -> None:
    with pytest.raises(ScoreError, match="device"):
        evaluate(lambda u: G5_SCORES[u].to("meta"), G5, split="test", ks=(2,))


def test_non_contiguous_scores() -> None:
    st_ = G5_SCORES.t().contiguous()
    r = evaluate(lambda u: st_[:, u].t(), G5, split="test", ks=(2,))
    assert r.means["recall@2"] == pytest.approx(0.75, abs=TOL)
    torch.testing.assert_close(st_.t(), G5_SCORES)


def test_bad_arguments_raise_config_error() -> None:
    sc = _matrix_scorer(G5_SCORES)
    for kwargs in [
        {"split": "train"},
        {"split": "test", "users": np.array([1])},  # only users without targets
        {"split": "test", "users": np.array([0, 3])},
        {"split": "test", "users": np.array([0.5])},
        {"split": "test", "ks": ()},
        {"split": "test", "batch_users": 0},
        {"split": "test", "max_batch_bytes": 0},
    ]:
        with pytest.raises(ConfigError):
            evaluate(sc, G5, **kwargs)  # type: ignore[arg-type]


def test_users_subset_and_integer_scores() -> None:
    r = evaluate(
        lambda u: (G5_SCORES[u] * 10).round().long(), G5, "test", ks=(2,), users=np.array([2, 1, 2])
    )
    np.testing.assert_array_equal(r.users, [2])
    assert r.means["recall@2"] == 1.0


# --- equivalence with a slow reference --------------------------------------------------------


def _random_case(
    rng: np.random.Generator, n_users: int, n_items: int, levels: int = 4, p_inf: float = 0.0
) -> tuple[Dataset, torch.Tensor]:
    """Random splits (each pair in at most one split) and integer scores with many ties."""
    part = rng.choice(4, size=(n_users, n_items), p=[0.7, 0.12, 0.09, 0.09])  # none/tr/va/te
    splits = {}
    for code, name in ((1, "train"), (2, "valid"), (3, "test")):
        u, i = np.nonzero(part == code)
        splits[name] = (u.astype(np.int64), i.astype(np.int64))
    ds = Dataset.from_arrays("rand", "paper", 0, splits, np.arange(n_users), np.arange(n_items))
    s = rng.integers(0, levels, size=(n_users, n_items)).astype(np.float32)
    s[rng.random(s.shape) < p_inf] = NEG_INF
    return ds, torch.from_numpy(s)


def _reference(
    s: np.ndarray, ds: Dataset, split: str, ks: tuple[int, ...], users: np.ndarray | None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One user at a time: mask, stable argsort, loop metrics."""
    tr, va, te = (ds.train.toarray() > 0), (ds.valid.toarray() > 0), (ds.test.toarray() > 0)
    target = te if split == "test" else va
    excl = (tr | va) if split == "test" else tr
    cand = range(ds.n_users) if users is None else sorted(set(users.tolist()))
    kept, out = [], {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg", "precision", "hitrate")}
    for u in cand:
        t = set(np.flatnonzero(target[u]).tolist())
        if not t or not tr[u].any():  # no target, or cold start (protocol.md §4.4)
            continue
        kept.append(u)
        row = s[u].astype(np.float64).copy()
        row[excl[u]] = NEG_INF
        order = np.argsort(-row, kind="stable")  # score desc, index asc
        for k in ks:
            r = [1 if (i < len(order) and order[i] in t) else 0 for i in range(k)]
            dcg = sum(r[i] / math.log2(i + 2) for i in range(k))
            idcg = sum(1 / math.log2(i + 2) for i in range(min(len(t), k)))
            out[f"recall@{k}"].append(sum(r) / len(t))
            out[f"precision@{k}"].append(sum(r) / k)
            out[f"hitrate@{k}"].append(float(sum(r) > 0))
            out[f"ndcg@{k}"].append(dcg / idcg)
    return np.array(kept), {k: np.array(v) for k, v in out.items()}


def _assert_matches_reference(
    r: EvalResult, s: torch.Tensor, ds: Dataset, split: str, users: np.ndarray | None
) -> None:
    users_ref, ref = _reference(s.numpy(), ds, split, r.ks, users)
    np.testing.assert_array_equal(r.users, users_ref)
    for key, want in ref.items():
        np.testing.assert_allclose(r.per_user[key], want, atol=1e-6, err_msg=key)
        assert r.means[key] == pytest.approx(want.mean(), abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_users=st.integers(1, 10),
    n_items=st.sampled_from([1, 3, 8, 25, 400, 900]),
    levels=st.integers(1, 6),
    p_inf=st.sampled_from([0.0, 0.0, 0.3]),
    ks=st.lists(st.sampled_from([1, 2, 3, 5, 10, 20]), min_size=1, max_size=3, unique=True),
    split=st.sampled_from(["valid", "test"]),
    subset=st.booleans(),
    batch=st.sampled_from([None, 1, 3]),
)
def test_matches_slow_reference(
    seed: int,
    n_users: int,
    n_items: int,
    levels: int,
    p_inf: float,
    ks: list[int],
    split: str,
    subset: bool,
    batch: int | None,
) -> None:
    rng = np.random.default_rng(seed)
    ds, s = _random_case(rng, n_users, n_items, levels, p_inf)
    users = rng.integers(0, n_users, size=n_users) if subset else None
    try:
        r = evaluate(_matrix_scorer(s), ds, split, tuple(ks), users=users, batch_users=batch)
    except ConfigError:  # nobody to evaluate: the reference must agree
        assert len(_reference(s.numpy(), ds, split, tuple(ks), users)[0]) == 0
        return
    _assert_matches_reference(r, s, ds, split, users)


@pytest.mark.parametrize("k", [1, 5, 20])
@pytest.mark.parametrize("levels", [2, 7, 1000])
def test_top_k_matches_stable_sort_with_ties(k: int, levels: int) -> None:
    g = torch.Generator().manual_seed(k * levels)
    for n in (30, 4000, 5003):  # plain topk, group filter (with and without a tail)
        s = torch.randint(0, levels, (64, n), generator=g).float()
        s[torch.rand(s.shape, generator=g) < 0.2] = NEG_INF
        s[:3] = 0.0  # every row tied
        s[3, : n - 2] = NEG_INF  # fewer than k finite scores
        want = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]
        torch.testing.assert_close(top_k(s, k), want, rtol=0, atol=0)
    assert _n_groups(4000, k) > 0 and _n_groups(30, k) == 0


def test_top_k_ties_far_down_the_row() -> None:
    # the tied k-th score first occurs beyond several prefix scans
    s = torch.zeros(3, 20000)
    s[:, [5000, 19997, 19998, 19999]] = 1.0
    s[1, 7] = 2.0
    s[2, :] = torch.arange(20000, dtype=torch.float32)
    s[2, 3] = s[2, 19999]
    want = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :3]
    got = top_k(s, 3)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert got[0].tolist() == [5000, 19997, 19998] and got[1].tolist() == [7, 5000, 19997]
    assert got[2].tolist() == [3, 19999, 19998]


def test_top_k_group_filter_on_continuous_scores() -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.randn(32, 40981, generator=g)
    want = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :20]
    assert _n_groups(40981, 20) > 0
    torch.testing.assert_close(top_k(s, 20), want, rtol=0, atol=0)


def test_batch_size_invariance_and_ks_order() -> None:
    rng = np.random.default_rng(3)
    ds, s = _random_case(rng, n_users=30, n_items=500, levels=5)
    base = evaluate(_matrix_scorer(s), ds, "test", ks=(5, 10, 20))
    _assert_matches_reference(base, s, ds, "test", None)
    for kw in [
        {"batch_users": 1},
        {"batch_users": 7},
        {"batch_users": 64},
        {"max_batch_bytes": 3 * 500 * 4},
    ]:
        r = evaluate(_matrix_scorer(s), ds, "test", ks=(5, 10, 20), **kw)  # type: ignore[arg-type]
        np.testing.assert_array_equal(r.users, base.users)
        for key in base.per_user:
            np.testing.assert_array_equal(r.per_user[key], base.per_user[key], err_msg=key)
    r = evaluate(_matrix_scorer(s), ds, "test", ks=(20, 5, 10))
    for key in base.per_user:
        np.testing.assert_array_equal(r.per_user[key], base.per_user[key], err_msg=key)
        assert r.means[key] == base.means[key]


# --- real data --------------------------------------------------------------------------------


def _gowalla_mini_with_cold_start(root: Path, cold: tuple[int, ...] = (3, 7)) -> Path:
    """gowalla-mini (LightGCN files, uncompressed) with the given-train items of the users
    ``cold`` removed: cold-start users (test items, no training item) next to test-only items."""
    src = SHIPPED_DIR / "gowalla-mini"
    d = root / "gowalla-mini-cold"
    d.mkdir()
    train = gzip.decompress((src / "train.txt.gz").read_bytes()).decode().splitlines()
    rows = [ln.split() for ln in train if ln.strip()]
    (d / "train.txt").write_text(
        "".join(f"{r[0] if int(r[0]) in cold else ' '.join(r)}\n" for r in rows)
    )
    (d / "test.txt").write_bytes(gzip.decompress((src / "test.txt.gz").read_bytes()))
    return d


@pytest.mark.parametrize("split", ["valid", "test"])
def test_real_data_matches_reference(split: str, tmp_path: Path) -> None:
    """Protocol S gowalla-mini with two cold-start users (items without training data, users
    without test items), MF-like scores."""
    ds = load_dataset(_gowalla_mini_with_cold_start(tmp_path), protocol="standard")
    assert ds.meta["cold_start_users"] == 2 and ds.meta["users_empty_test"] == 25
    assert ((ds.train + ds.valid).getnnz(axis=0) == 0).sum() == 14  # test-only items
    g = torch.Generator().manual_seed(0)
    u_emb = torch.randn(ds.n_users, 16, generator=g)
    v_emb = torch.randn(ds.n_items, 16, generator=g)
    s = (u_emb @ v_emb.T).round()  # rounding leaves many ties to resolve
    users = np.arange(0, ds.n_users, 7)
    r = evaluate(lambda u: u_emb[u] @ v_emb.T, ds, split, users=users)  # continuous scores
    has = (ds.split(split)[users].getnnz(axis=1) > 0) & (ds.train[users].getnnz(axis=1) > 0)
    assert r.n_users_evaluated == int(has.sum())
    if split == "test":  # the 2 cold-start users have test items but are not evaluated
        cold = np.flatnonzero((ds.train.getnnz(axis=1) == 0) & (ds.test.getnnz(axis=1) > 0))
        assert len(cold) == 2
        full = evaluate(lambda u: u_emb[u] @ v_emb.T, ds, split)
        assert full.n_users_evaluated == int((ds.test.getnnz(axis=1) > 0).sum()) - 2
        assert not np.isin(cold, full.users).any()
    r = evaluate(_matrix_scorer(s), ds, split, users=users, batch_users=17)
    _assert_matches_reference(r, s, ds, split, users)
    assert 0.0 <= r.means["quality"] <= 1.0
