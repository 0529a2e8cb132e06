"""Budgets (exact arithmetic), feasibility, the (I1)/(I2) check, repair, SU and SR."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embudget.budget.core import (
    Budget,
    check_budget,
    check_feasible,
    random_sizes,
    repair,
    repair_histograms,
    sampler_budget,
    uniform_sizes,
)
from embudget.budget.usage import ResolvedBudget, Usage
from embudget.data import load_dataset
from embudget.errors import BudgetError, BudgetErrorType

# (users, items) of the entity sets in protocol.md §2.
COUNTS = {
    "gowalla": (29_858, 40_981),
    "yelp2018": (31_668, 38_048),
    "lastfm": (1_880, 4_489),
    "ml-100k": (943, 1_682),
    "gowalla-mini": (800, 993),  # shipped; checked against the data below
}
# bet.md §2.1: B at sparsity 0.80 / 0.90 / 0.95.
GOLDEN_B = {
    "gowalla": (1_813_478, 906_739, 453_369),
    "yelp2018": (1_784_729, 892_364, 446_182),
    "lastfm": (163_046, 81_523, 40_761),
    "ml-100k": (67_200, 33_600, 16_800),
    "gowalla-mini": (45_900, 22_950, 11_475),
}


def naive_repair(sizes: np.ndarray, B: int, priority: np.ndarray, step: int = 1) -> np.ndarray:
    """Unit-by-unit reference: take one step from the currently largest size; among equal
    sizes, from the entity last in the order (original size desc, priority asc)."""
    d = [int(x) for x in sizes]
    n = len(d)
    order = sorted(range(n), key=lambda i: (-d[i], priority[i]))
    pos = {e: k for k, e in enumerate(order)}
    while sum(d) > B - B % step:
        top = max(d)
        cands = [i for i in range(n) if d[i] == top]
        i = max(cands, key=lambda e: pos[e])
        assert d[i] - step >= step
        d[i] -= step
    return np.array(d, dtype=np.int64)


# -- Budget ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_golden_budgets(name: str) -> None:
    n = sum(COUNTS[name])
    for c, expected in zip((0.8, 0.9, 0.95), GOLDEN_B[name], strict=True):
        assert Budget(sparsity=c).resolve(n, 128) == expected
        k = round(1 - c, 2)
        assert Budget(kept_fraction=k).resolve(n, 128) == expected


def test_shipped_counts_match_the_data() -> None:
    ds = load_dataset("gowalla-mini")
    assert (ds.n_users, ds.n_items) == COUNTS["gowalla-mini"]


def test_exact_arithmetic_beats_float() -> None:
    # bet.md §2.1: float gives ⌊(1 − 0.9)·128·10⌋ = 127; exact arithmetic gives 128.
    assert int((1 - 0.9) * 128 * 10) == 127
    assert Budget(sparsity=0.9).resolve(10, 128) == 128
    assert Budget(kept_fraction=0.1).resolve(10, 128) == 128
    assert Budget(params=12345).resolve(10, 128) == 12345
    assert Budget(sparsity=0).resolve(7, 128) == 7 * 128
    assert Budget(kept_fraction=1).resolve(7, 128) == 7 * 128


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"sparsity": 0.8, "params": 100},
        {"sparsity": 1.0},
        {"sparsity": -0.1},
        {"kept_fraction": 0.0},
        {"kept_fraction": 1.5},
        {"params": 0},
        {"params": 2.5},
        {"params": True},
        {"sparsity": float("nan")},
        {"sparsity": "0.8"},
    ],
)
def test_invalid_budget(kwargs: dict) -> None:
    with pytest.raises(BudgetError) as ei:
        Budget(**kwargs)
    assert ei.value.error_type is BudgetErrorType.INVALID


def test_budget_dict_roundtrip() -> None:
    for b in (Budget(sparsity=0.95), Budget(kept_fraction=0.2), Budget(params=70_839)):
        d = json.loads(json.dumps(b.to_dict()))
        assert Budget.from_dict(d) == b
        assert len(d) == 1
    assert Budget.from_dict({"sparsity": 0.9, "params": None}) == Budget(sparsity=0.9)
    with pytest.raises(BudgetError) as ei:
        Budget.from_dict({"sparsty": 0.9})
    assert ei.value.error_type is BudgetErrorType.INVALID


# -- feasibility and check_budget --------------------------------------------------------------


def test_infeasible() -> None:
    with pytest.raises(BudgetError) as ei:
        check_feasible(60_000, 70_839, 128)
    assert ei.value.error_type is BudgetErrorType.INFEASIBLE
    assert "70,839" in str(ei.value)
    check_feasible(70_839, 70_839, 128)
    with pytest.raises(BudgetError) as ei:
        check_feasible(4 * 70_839 - 1, 70_839, 128, step=4)
    assert ei.value.error_type is BudgetErrorType.INFEASIBLE
    check_feasible(4 * 70_839, 70_839, 128, step=4)


@settings(max_examples=30, deadline=None)
@given(nu=st.integers(1, 300), nv=st.integers(1, 300), d_max=st.integers(1, 128), data=st.data())
def test_below_n_is_infeasible_everywhere(
    nu: int, nv: int, d_max: int, data: st.DataObject
) -> None:
    B = data.draw(st.integers(0, nu + nv - 1))
    for fn in (
        lambda: check_feasible(B, nu + nv, d_max),
        lambda: uniform_sizes(nu, nv, B, d_max),
        lambda: random_sizes(nu, nv, B, d_max, np.random.default_rng(0)),
    ):
        with pytest.raises(BudgetError) as ei:
            fn()
        assert ei.value.error_type is BudgetErrorType.INFEASIBLE


def test_check_budget_violations() -> None:
    ok = np.array([3, 2, 1])
    check_budget(ok, np.array([1]), 7, 3)
    for us, vs, B in (
        (np.array([3, 2, 1]), np.array([1]), 6),  # (I2)
        (np.array([4, 1]), np.array([1]), 100),  # above d_max
        (np.array([0, 1]), np.array([1]), 100),  # below 1
        (np.array([1.5, 1]), np.array([1]), 100),  # not integers
    ):
        with pytest.raises(BudgetError) as ei:
            check_budget(us, vs, B, 3)
        assert ei.value.error_type is BudgetErrorType.VIOLATED
    with pytest.raises(BudgetError):
        check_budget(np.array([4, 8]), np.array([6]), 100, 8, step=4)
    check_budget(np.array([4, 8]), np.array([4]), 16, 8, step=4)


# -- repair ----------------------------------------------------------------------------------


def test_repair_small_golden() -> None:
    sizes = np.array([5, 5, 3, 1])
    # Σ = 14, B = 10: level 3 (Σ min = 10); both 5s go to 3.
    assert repair(sizes, 10, np.arange(4)).tolist() == [3, 3, 3, 1]
    # B = 11: level 3, slack 1 goes to the first 5 in priority order.
    assert repair(sizes, 11, np.arange(4)).tolist() == [4, 3, 3, 1]
    assert repair(sizes, 11, np.array([3, 2, 1, 0])).tolist() == [3, 4, 3, 1]
    # Nothing to do: unchanged copy.
    out = repair(sizes, 14, np.arange(4))
    assert out.tolist() == sizes.tolist() and out is not sizes


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    d_max=st.integers(1, 20),
    step=st.sampled_from([1, 1, 2, 4]),
    data=st.data(),
)
def test_repair_equals_naive_loop(n: int, d_max: int, step: int, data: st.DataObject) -> None:
    d_max = max(step, d_max - d_max % step)
    units = data.draw(st.lists(st.integers(1, d_max // step), min_size=n, max_size=n))
    sizes = np.array(units, dtype=np.int64) * step
    B = data.draw(st.integers(step * n, int(sizes.sum()) + 5))
    prio = np.random.default_rng(data.draw(st.integers(0, 2**16))).permutation(n)
    got = repair(sizes, B, prio, step=step)
    assert np.array_equal(got, naive_repair(sizes, B, prio, step))
    assert np.all(got <= sizes) and np.all(got >= step) and np.all(got % step == 0)
    if sizes.sum() > B:
        assert got.sum() == B - B % step  # lands on the budget (in units of the step)
    else:
        assert np.array_equal(got, sizes)


def test_repair_rejects_bad_input() -> None:
    with pytest.raises(BudgetError) as ei:
        repair(np.array([3, 3]), 1, np.arange(2))
    assert ei.value.error_type is BudgetErrorType.INFEASIBLE
    with pytest.raises(BudgetError) as ei:
        repair(np.array([3, 3]), 4, np.array([0, 0]))  # not a total order
    assert ei.value.error_type is BudgetErrorType.INVALID
    with pytest.raises(BudgetError) as ei:
        repair(np.array([3, 4]), 4, np.arange(2), step=2)
    assert ei.value.error_type is BudgetErrorType.INVALID


@settings(max_examples=50, deadline=None)
@given(d_max=st.integers(1, 24), step=st.sampled_from([1, 1, 2, 3]), data=st.data())
def test_repair_histograms_equals_repair(d_max: int, step: int, data: st.DataObject) -> None:
    d_max = max(step, d_max - d_max % step)
    n_units = d_max // step
    hu_units = np.array(data.draw(st.lists(st.integers(0, 6), min_size=n_units, max_size=n_units)))
    hv_units = np.array(data.draw(st.lists(st.integers(0, 6), min_size=n_units, max_size=n_units)))
    if hu_units.sum() + hv_units.sum() == 0:
        hu_units[0] = 1
    hu = np.zeros(d_max, np.int64)
    hv = np.zeros(d_max, np.int64)
    hu[step - 1 :: step] = hu_units
    hv[step - 1 :: step] = hv_units
    d = np.arange(1, d_max + 1)
    su = np.repeat(d[::-1], hu[::-1])  # sorted descending = rank order
    sv = np.repeat(d[::-1], hv[::-1])
    total = int(su.sum() + sv.sum())
    n = su.size + sv.size
    B = data.draw(st.integers(step * n, total + 3))
    (ru, rv), removed = repair_histograms([hu, hv], B, step)
    ref = repair(np.concatenate([su, sv]), B, np.arange(n), step)
    assert np.array_equal(np.repeat(d[::-1], ru[::-1]), ref[: su.size])
    assert np.array_equal(np.repeat(d[::-1], rv[::-1]), ref[su.size :])
    assert removed == total - int(ref.sum())


# -- SU / SR ---------------------------------------------------------------------------------


def test_su_gowalla_golden() -> None:
    nu, nv = COUNTS["gowalla"]
    for B, expected in zip(GOLDEN_B["gowalla"], (25, 12, 6), strict=True):
        us, vs = uniform_sizes(nu, nv, B, 128)
        assert set(us.tolist()) == {expected} and set(vs.tolist()) == {expected}
        assert us.size == nu and vs.size == nv
    us, vs = uniform_sizes(3, 2, 10_000, 128)  # capped at d_max
    assert set(us.tolist()) | set(vs.tolist()) == {128}


@settings(max_examples=40, deadline=None)
@given(nu=st.integers(1, 300), nv=st.integers(1, 300), d_max=st.integers(1, 128), data=st.data())
def test_su_sr_invariants(nu: int, nv: int, d_max: int, data: st.DataObject) -> None:
    n = nu + nv
    B = data.draw(st.integers(n, d_max * n))
    seed = data.draw(st.integers(0, 2**32 - 1))
    for us, vs in (
        uniform_sizes(nu, nv, B, d_max),
        random_sizes(nu, nv, B, d_max, np.random.default_rng(seed)),
    ):
        assert us.shape == (nu,) and vs.shape == (nv,)
        s = np.concatenate([us, vs])
        assert s.min() >= 1 and s.max() <= d_max and s.sum() <= B
        check_budget(us, vs, B, d_max)


def sr_reference(nu: int, nv: int, B: int, d_max: int, seed: int) -> np.ndarray:
    """bet.md §9 SR, written directly with Python integers."""
    rng = np.random.default_rng(seed)
    u = rng.integers(1, d_max + 1, size=nu + nv, dtype=np.int64)
    total = int(u.sum())
    d = np.array([min(d_max, max(1, int(x) * B // total)) for x in u], dtype=np.int64)
    return naive_repair(d, B, np.arange(nu + nv))


@settings(max_examples=25, deadline=None)
@given(nu=st.integers(1, 30), nv=st.integers(1, 30), d_max=st.integers(1, 16), data=st.data())
def test_sr_matches_reference(nu: int, nv: int, d_max: int, data: st.DataObject) -> None:
    n = nu + nv
    B = data.draw(st.integers(n, d_max * n))
    seed = data.draw(st.integers(0, 1000))
    us, vs = random_sizes(nu, nv, B, d_max, np.random.default_rng(seed))
    assert np.array_equal(np.concatenate([us, vs]), sr_reference(nu, nv, B, d_max, seed))


def test_sr_is_random_but_seeded() -> None:
    a = random_sizes(100, 150, 3200, 128, np.random.default_rng(1))
    b = random_sizes(100, 150, 3200, 128, np.random.default_rng(1))
    c = random_sizes(100, 150, 3200, 128, np.random.default_rng(2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    # Uses the budget well: rescaling to B leaves little slack.
    assert 3200 - 250 <= int(a[0].sum() + a[1].sum()) <= 3200


# -- summary ---------------------------------------------------------------------------------


def test_usage_summary_and_ncf() -> None:
    us, vs = np.array([4, 2]), np.array([1, 1, 2])
    budget = ResolvedBudget.resolve(params=12, n_users=2, n_items=3, d_max=4)
    u = Usage.of_sizes(us, vs, budget=budget, dense_params=7)
    assert (u.params_budget, u.params, u.fraction_of_full, u.params_slack, u.dense_params) == (
        12,
        10,
        10 / 20,
        2,
        7,
    )
    # NCF shared: B_ncf over both tables; the sampler works with ⌊B_ncf / 2⌋.
    n = sum(COUNTS["gowalla"])
    b_ncf = Budget(sparsity=0.8).resolve(2 * n, 128)
    assert b_ncf == 3_626_956
    assert sampler_budget(b_ncf, 2) == 1_813_478
    rb = ResolvedBudget.resolve(
        sparsity=0.8,
        n_users=COUNTS["gowalla"][0],
        n_items=COUNTS["gowalla"][1],
        d_max=128,
        tables=2,
    )
    assert (rb.params, rb.per_entity) == (b_ncf, 1_813_478)
    us, vs = uniform_sizes(*COUNTS["gowalla"], rb.per_entity, 128)
    u = Usage.of_sizes(us, vs, budget=rb)
    assert u.params == 2 * 25 * n and u.params_slack is not None and u.params_slack >= 0
    assert u.fraction_of_full == pytest.approx(25 / 128)
