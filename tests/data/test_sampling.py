"""BPRSampler: triple validity, distinct users, uniformity, determinism, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from embudget.data.sampling import BPRSampler
from embudget.errors import ConfigError, SamplerError


def random_train(seed: int, n_users: int = 300, n_items: int = 60, density: float = 0.15):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    m = (rng.random((n_users, n_items)) < density).astype(np.float32)
    m[:5] = 0.0  # users without training items
    m[5] = 1.0  # a user who has every item: no valid negative exists
    return sp.csr_matrix(m)


def check_batch(
    train: sp.csr_matrix, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> None:
    assert users.dtype == pos.dtype == neg.dtype == torch.int64
    u, p, n = users.numpy(), pos.numpy(), neg.numpy()
    dense = train.toarray() > 0
    assert dense[u, p].all(), "a positive is not a training item of its user"
    assert not dense[u, n].any(), "a negative is a training item of its user"
    assert (n >= 0).all() and (n < train.shape[1]).all()


def test_triples_valid_users_distinct_and_drops_counted() -> None:
    train = random_train(0)
    s = BPRSampler(train, batch_users=200, rng=np.random.default_rng(1))
    active = set(np.flatnonzero(np.diff(train.indptr) > 0).tolist())
    dropped_before = 0
    for _ in range(20):
        users, pos, neg = s.sample()
        check_batch(train, users, pos, neg)
        ul = users.tolist()
        assert set(ul) <= active and 5 not in ul  # user 5 can never get a negative
        drawn_5 = 200 - len(ul)  # ... so its triple is dropped when drawn
        assert len(set(ul)) == len(ul)
        assert s.dropped - dropped_before == drawn_5
        dropped_before = s.dropped
    assert s.dropped > 0


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_users=st.integers(1, 30),
    n_items=st.integers(2, 12),
    batch=st.integers(1, 40),
)
def test_property_random_matrices(seed: int, n_users: int, n_items: int, batch: int) -> None:
    rng = np.random.default_rng(seed)
    m = rng.random((n_users, n_items)) < 0.4
    m[0, 0] = True
    m[0, 1] = False  # at least one user with a positive and a possible negative
    train = sp.csr_matrix(m.astype(np.float32))
    s = BPRSampler(train, batch_users=batch, rng=np.random.default_rng(seed), max_rounds=50)
    users, pos, neg = s.sample()
    check_batch(train, users, pos, neg)
    n_active = int((m.sum(1) > 0).sum())
    if n_active >= batch:
        assert len(set(users.tolist())) == len(users)  # without replacement
    assert len(users) + s.dropped == batch  # every draw is either kept or counted


def test_fewer_users_than_batch_draws_with_replacement() -> None:
    train = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32))
    users, pos, neg = BPRSampler(train, batch_users=50, rng=np.random.default_rng(0)).sample()
    assert len(users) == 50 and set(users.tolist()) == {0, 1}
    check_batch(train, users, pos, neg)


def test_positives_and_negatives_uniform() -> None:
    # one user, items 0..3 positive, 4..9 negative: both draws uniform over their sets
    m = np.zeros((1, 10), dtype=np.float32)
    m[0, :4] = 1
    s = BPRSampler(sp.csr_matrix(m), batch_users=1, rng=np.random.default_rng(0))
    draws = [s.sample() for _ in range(6000)]
    pc = np.bincount([int(d[1]) for d in draws], minlength=10)
    nc = np.bincount([int(d[2]) for d in draws], minlength=10)
    assert pc[4:].sum() == 0 and nc[:4].sum() == 0
    assert np.abs(pc[:4] / 6000 - 1 / 4).max() < 0.03
    assert np.abs(nc[4:] / 6000 - 1 / 6).max() < 0.03


def test_users_uniform_without_replacement() -> None:
    train = random_train(2, n_users=40)
    s = BPRSampler(train, batch_users=10, rng=np.random.default_rng(3), max_rounds=200)
    counts = np.zeros(40)
    for _ in range(1000):
        counts[s.sample()[0].numpy()] += 1
    counts[5] += s.dropped  # user 5's draws were dropped (it has every item)
    active = np.diff(train.indptr) > 0
    assert counts[~active].sum() == 0
    expected = 1000 * 10 / active.sum()
    assert np.abs(counts[active] / expected - 1).max() < 0.15


def test_same_seed_same_batches() -> None:
    train = random_train(4)
    a = BPRSampler(train, 64, rng=np.random.default_rng(9))
    b = BPRSampler(train, 64, rng=np.random.default_rng(9))
    c = BPRSampler(train, 64, rng=np.random.default_rng(10))
    for _ in range(3):
        ba, bb, bc = a.sample(), b.sample(), c.sample()
        assert all(torch.equal(x, y) for x, y in zip(ba, bb, strict=True))
    assert not torch.equal(ba[0], bc[0])


@pytest.mark.parametrize("bitgen", [np.random.PCG64, np.random.MT19937, np.random.Philox])
def test_state_dict_json_round_trip_resumes_exactly(bitgen) -> None:  # type: ignore[no-untyped-def]
    train = random_train(5)
    s = BPRSampler(train, 100, rng=np.random.Generator(bitgen(1)))
    s.sample()
    state = json.loads(json.dumps(s.state_dict()))  # plain JSON data
    want = s.sample()
    r = BPRSampler(train, 100, rng=np.random.Generator(bitgen(777)))
    r.load_state_dict(state)
    got = r.sample()
    assert all(torch.equal(x, y) for x, y in zip(want, got, strict=True))
    assert r.dropped == s.dropped


def test_load_state_dict_rejects_other_generator() -> None:
    train = random_train(6)
    state = BPRSampler(train, 10, rng=np.random.Generator(np.random.MT19937(0))).state_dict()
    with pytest.raises(SamplerError, match="MT19937"):
        BPRSampler(train, 10, rng=np.random.default_rng(0)).load_state_dict(state)


def test_steps_per_epoch_and_epoch() -> None:
    train = random_train(7)
    s = BPRSampler(train, batch_users=100, rng=np.random.default_rng(0))
    assert s.steps_per_epoch == -(-train.nnz // 100)
    assert len(list(s.epoch())) == s.steps_per_epoch


def test_bad_arguments() -> None:
    train = random_train(8)
    with pytest.raises(ConfigError):
        BPRSampler(train, batch_users=0, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError):
        BPRSampler(train, rng=np.random.RandomState(0))  # type: ignore[arg-type]
    with pytest.raises(SamplerError, match="no interactions"):
        BPRSampler(sp.csr_matrix((3, 4), dtype=np.float32), rng=np.random.default_rng(0))


def test_gowalla_batch() -> None:
    from embudget.data import load_dataset

    ds = load_dataset("gowalla")
    s = BPRSampler(ds.train, batch_users=10_000, rng=np.random.default_rng(0))
    assert s.steps_per_epoch == 52  # protocol.md §3.6
    users, pos, neg = s.sample()
    assert len(users) == 10_000 and len(torch.unique(users)) == 10_000
    u, p, n = (x.numpy().copy() for x in (users, pos, neg))
    assert (np.asarray(ds.train[u, p]).ravel() == 1).all()
    assert (np.asarray(ds.train[u, n]).ravel() == 0).all()


def test_dense_membership_lookup_draws_the_same_batches() -> None:
    from embudget.data import load_dataset

    train = load_dataset("gowalla-mini").train
    dense = BPRSampler(train, batch_users=3000, rng=np.random.default_rng(5))
    sparse = BPRSampler(train, batch_users=3000, rng=np.random.default_rng(5))
    assert dense._dense is not None
    sparse._dense = None  # the sorted-key binary search used for large matrices
    rng = np.random.default_rng(0)
    users = rng.integers(0, train.shape[0], 20000)
    items = rng.integers(0, train.shape[1], 20000)
    np.testing.assert_array_equal(dense.is_positive(users, items), sparse.is_positive(users, items))
    assert dense.is_positive(users, items).sum() == train[users, items].A1.astype(bool).sum()
    for _ in range(3):
        for a, b in zip(dense.sample(), sparse.sample(), strict=True):
            assert torch.equal(a, b)
