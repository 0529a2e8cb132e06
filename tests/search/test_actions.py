"""Rank order, the canonical action form and the single rank assignment."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embudget.errors import BudgetError, DataFormatError
from embudget.search.actions import Action, RankAssignment, rank_order


def rank_order_reference(freq: np.ndarray) -> list[int]:
    return sorted(range(len(freq)), key=lambda i: (-freq[i], i))


def test_rank_order_golden() -> None:
    assert rank_order(np.array([3, 5, 3, 0, 5])).tolist() == [1, 4, 0, 2, 3]
    assert rank_order(np.array([], dtype=np.int64)).tolist() == []
    assert rank_order(np.array([2.0, 7.5, 7.5])).tolist() == [1, 2, 0]
    # Unsigned counts must not wrap around when negated.
    assert rank_order(np.array([1, 0, 9], dtype=np.uint32)).tolist() == [2, 0, 1]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=0, max_size=200))
def test_rank_order_matches_reference(freq: list[int]) -> None:
    f = np.array(freq, dtype=np.int64)
    assert rank_order(f).tolist() == rank_order_reference(f)


@pytest.mark.parametrize("bad", [np.array([1, -1]), np.array([1.0, np.nan]), np.ones((2, 2))])
def test_rank_order_rejects(bad: np.ndarray) -> None:
    with pytest.raises(DataFormatError):
        rank_order(bad)


def test_action_from_sizes_and_rebuild_golden() -> None:
    # Users: freq [1, 9, 4] → rank [1, 2, 0]; items: freq [0, 0] → rank [0, 1].
    ra = RankAssignment(np.array([1, 9, 4]), np.array([0, 0]))
    act = Action.from_sizes(np.array([2, 3, 1]), np.array([1, 4]), d_max=4)
    assert act.hist_u.tolist() == [1, 1, 1, 0] and act.hist_v.tolist() == [1, 0, 0, 1]
    us, vs = ra.sizes(act)
    assert us.tolist() == [1, 3, 2]  # largest size to the most frequent user
    assert vs.tolist() == [4, 1]  # tie on frequency: lower index first
    assert act.params_used == 11 and act.n_users == 3 and act.n_items == 2 and act.d_max == 4
    assert us.dtype == np.int64


def test_action_identity_and_immutability() -> None:
    a = Action(np.array([1, 2, 0]), np.array([0, 0, 3]), {"w": 0.5})
    b = Action(np.array([1, 2, 0], dtype=np.int32), np.array([0, 0, 3]), {"w": 0.9})
    c = Action(np.array([2, 1, 0]), np.array([0, 0, 3]))
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    with pytest.raises(ValueError):
        a.hist_u[0] = 5
    with pytest.raises(BudgetError):
        Action(np.array([1, 2]), np.array([1, 2, 3]))
    with pytest.raises(BudgetError):
        Action(np.array([1, -1]), np.array([1, 2]))
    with pytest.raises(BudgetError):
        Action.from_sizes(np.array([0, 1]), np.array([1]), d_max=4)


@settings(max_examples=40, deadline=None)
@given(nu=st.integers(1, 60), nv=st.integers(1, 60), d_max=st.integers(1, 32), data=st.data())
def test_roundtrip_and_rank_assignment(nu: int, nv: int, d_max: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    uf = rng.integers(0, 4, size=nu)  # many ties
    vf = rng.integers(0, 4, size=nv)
    us = rng.integers(1, d_max + 1, size=nu)
    vs = rng.integers(1, d_max + 1, size=nv)
    ra = RankAssignment(uf, vf)
    act = Action.from_sizes(us, vs, d_max, record={"w": np.float64(0.25), "attempts": np.int64(3)})
    ru, rv = ra.sizes(act)
    # Same multiset of sizes per side, non-increasing along the rank, ties by index.
    assert sorted(ru.tolist()) == sorted(us.tolist())
    assert sorted(rv.tolist()) == sorted(vs.tolist())
    for sizes, freq in ((ru, uf), (rv, vf)):
        order = rank_order_reference(freq)
        assert all(sizes[order[k]] >= sizes[order[k + 1]] for k in range(len(order) - 1))
    assert ra.follows_rank(ru, rv)
    assert ra.action(ru, rv, d_max) == act
    # JSON round trip rebuilds the same per-entity sizes.
    back = Action.from_dict(json.loads(json.dumps(act.to_dict())))
    assert back == act and back.record == {"w": 0.25, "attempts": 3}
    bu, bv = ra.sizes(back)
    assert np.array_equal(bu, ru) and np.array_equal(bv, rv)
    # The batched form agrees with the single one.
    other = Action.from_sizes(rng.integers(1, d_max + 1, nu), rng.integers(1, d_max + 1, nv), d_max)
    mu, mv = ra.sizes_batch(
        np.stack([act.hist_u, other.hist_u]), np.stack([act.hist_v, other.hist_v])
    )
    ou, ov = ra.sizes(other)
    assert np.array_equal(mu, np.stack([ru, ou])) and np.array_equal(mv, np.stack([rv, ov]))


def test_rank_assignment_checks() -> None:
    ra = RankAssignment(np.array([5, 1, 3]), np.array([2, 2]))
    assert ra.user_order.tolist() == [0, 2, 1] and ra.user_rank.tolist() == [0, 2, 1]
    assert ra.repair_priority().tolist() == [0, 2, 1, 3, 4]
    assert not ra.follows_rank(np.array([1, 2, 3]), np.array([1, 1]))
    with pytest.raises(BudgetError):
        ra.action(np.array([1, 2, 3]), np.array([1, 1]), d_max=4)
    wrong = Action(np.array([2, 0]), np.array([1, 1]))  # 2 users, dataset has 3
    with pytest.raises(BudgetError):
        ra.sizes(wrong)
    with pytest.raises(ValueError):
        ra.user_order[0] = 1
