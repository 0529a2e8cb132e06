"""The bounded action sampler (bet.md §3): invariants, the retry cap, w, families, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import embudget.search.sampler as sampler_mod
from embudget.budget.core import Budget, check_budget, repair
from embudget.errors import BudgetError, BudgetErrorType, ConfigError, SamplerError
from embudget.search.actions import Action, RankAssignment, rank_order
from embudget.search.sampler import BETA_MAX, FAMILIES, BoundedSampler, draw_family

SCIPY = {
    "powerlaw": lambda b: stats.powerlaw(a=b),
    "truncnorm": lambda b: stats.truncnorm(a=0, b=b),
    "truncexpon": lambda b: stats.truncexpon(b=b),
    "lognorm": lambda b: stats.lognorm(s=b),
}


def assert_valid(act: Action, nu: int, nv: int, B: int, d_max: int, ra: RankAssignment) -> None:
    assert act.n_users == nu and act.n_items == nv and act.d_max == d_max
    us, vs = ra.sizes(act)
    check_budget(us, vs, B, d_max)
    assert act.params_used == int(us.sum() + vs.sum()) == act.record["params_used"]
    # Largest sizes to the most frequent entities: non-increasing along the rank.
    assert np.all(np.diff(us[ra.user_order]) <= 0) and np.all(np.diff(vs[ra.item_order]) <= 0)


@settings(max_examples=40, deadline=None)
@given(nu=st.integers(1, 300), nv=st.integers(1, 300), d_max=st.integers(1, 128), data=st.data())
def test_actions_respect_budget(nu: int, nv: int, d_max: int, data: st.DataObject) -> None:
    n = nu + nv
    B = data.draw(st.integers(n, d_max * n))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    ra = RankAssignment(rng.integers(0, 5, size=nu), rng.integers(0, 5, size=nv))
    s = BoundedSampler(nu, nv, B, d_max=d_max, max_attempts=20)
    for act in s.sample_many(3, rng):
        assert_valid(act, nu, nv, B, d_max, ra)
        assert 1 <= act.record["attempts"] <= 20


@settings(max_examples=25, deadline=None)
@given(
    nu=st.integers(1, 200),
    nv=st.integers(1, 200),
    step=st.sampled_from([2, 4, 8]),
    data=st.data(),
)
def test_size_step(nu: int, nv: int, step: int, data: st.DataObject) -> None:
    d_max = step * data.draw(st.integers(1, 16))
    n = nu + nv
    B = data.draw(st.integers(step * n, d_max * n))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    ra = RankAssignment(rng.integers(0, 5, size=nu), rng.integers(0, 5, size=nv))
    for act in BoundedSampler(nu, nv, B, d_max=d_max, size_step=step, max_attempts=20).sample_many(
        2, rng
    ):
        assert_valid(act, nu, nv, B, d_max, ra)
        us, vs = ra.sizes(act)
        assert np.all(us % step == 0) and np.all(vs % step == 0)
        check_budget(us, vs, B, d_max, step=step)
    with pytest.raises(BudgetError) as ei:
        BoundedSampler(nu, nv, step * n - 1, d_max=d_max, size_step=step)
    assert ei.value.error_type is BudgetErrorType.INFEASIBLE


def test_infeasible_and_bad_settings() -> None:
    with pytest.raises(BudgetError) as ei:
        BoundedSampler(10, 20, 29, d_max=8)
    assert ei.value.error_type is BudgetErrorType.INFEASIBLE
    BoundedSampler(10, 20, 30, d_max=8)
    for kwargs in (
        {"on_exhausted": "retry"},
        {"max_attempts": 0},
        {"size_step": 3},  # does not divide 8
        {"families": ["gamma"]},
        {"beta_max": {"lognorm": 0.0}},
    ):
        with pytest.raises(ConfigError):
            BoundedSampler(10, 20, 100, d_max=8, **kwargs)


def test_gowalla_sized_actions() -> None:
    nu, nv = 29_858, 40_981
    B = Budget(sparsity=0.8).resolve(nu + nv, 128)
    rng = np.random.default_rng(7)
    ra = RankAssignment(rng.poisson(20, size=nu), rng.poisson(10, size=nv))
    for act in BoundedSampler(nu, nv, B).sample_many(4, rng):
        assert_valid(act, nu, nv, B, 128, ra)
        assert act.params_used >= B - (nu + nv)  # floors lose less than one unit per entity
        assert act.params_used == B or act.record["repair_removed"] == 0


def test_retry_cap_clamp_and_error(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = sampler_mod.draw_family

    def counting(family: str, beta: float, size: int, rng: np.random.Generator) -> np.ndarray:
        calls.append(family)
        return real(family, beta, size, rng)

    monkeypatch.setattr(sampler_mod, "draw_family", counting)
    # Log-normal with σ up to 40 puts almost all mass on one entity: every draw exceeds d_max.
    kw = {"families": ["lognorm"], "beta_max": {"lognorm": 40.0}, "max_attempts": 7}
    nu, nv, d_max = 50, 60, 16
    B = 8 * (nu + nv)
    ra = RankAssignment(np.arange(nu), np.arange(nv))
    act = BoundedSampler(nu, nv, B, d_max=d_max, **kw).sample(np.random.default_rng(0))
    assert act.record["clamped"] is True and act.record["attempts"] == 7
    assert len(calls) == 2 * 7  # one draw per side per attempt, never more
    assert_valid(act, nu, nv, B, d_max, ra)
    calls.clear()
    with pytest.raises(SamplerError):
        BoundedSampler(nu, nv, B, d_max=d_max, on_exhausted="error", **kw).sample(
            np.random.default_rng(0)
        )
    assert len(calls) == 2 * 7


def test_no_finite_draw_raises_even_with_clamp() -> None:
    # exp(1e6·Z) overflows for every positive Z, so every attempt has a non-finite sum.
    s = BoundedSampler(
        40, 40, 400, d_max=16, max_attempts=5, families=["lognorm"], beta_max={"lognorm": 1e6}
    )
    with pytest.raises(SamplerError):
        s.sample(np.random.default_rng(0))


def test_near_full_budget_terminates() -> None:
    # At B = d_max·N only the all-d_max action fits; the sampler must still return promptly,
    # and a budget above the full table is handled the same way.
    for B in (16 * 30, 10_000):
        s = BoundedSampler(10, 20, B, d_max=16, max_attempts=50)
        act = s.sample(np.random.default_rng(3))
        assert act.params_used <= B and act.record["attempts"] <= 50


def test_w_redraw_when_kept_fraction_is_large() -> None:
    nu, nv, d_max = 100, 400, 16
    B = Budget(kept_fraction=0.9).resolve(nu + nv, d_max)  # 0.9 > |U|/N = 0.2
    s = BoundedSampler(nu, nv, B, d_max=d_max, max_attempts=3)
    lo, hi = s.w_interval
    assert lo == pytest.approx(1 - d_max * nv / B) and hi == pytest.approx(d_max * nu / B)
    ws = np.array([a.record["w"] for a in s.sample_many(150, np.random.default_rng(5))])
    assert np.all(ws * B <= d_max * nu + 1e-6) and np.all((1 - ws) * B <= d_max * nv + 1e-6)
    # Uniform on the feasible interval, like redrawing w ~ U(0, 1) until it is feasible.
    assert stats.kstest(ws, stats.uniform(loc=lo, scale=hi - lo).cdf).pvalue > 0.01
    # At a small kept fraction the interval is all of [0, 1).
    assert BoundedSampler(nu, nv, 2 * (nu + nv), d_max=d_max).w_interval == (0.0, 1.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_draws_follow_scipy(family: str) -> None:
    for beta in (0.05 * BETA_MAX[family], 0.5 * BETA_MAX[family], BETA_MAX[family]):
        x = draw_family(family, beta, 4000, np.random.default_rng(11))
        assert stats.kstest(x, SCIPY[family](beta).cdf).pvalue > 0.01
        # The same values as scipy's rvs fed from the same generator state.
        ref = SCIPY[family](beta).rvs(size=4000, random_state=np.random.default_rng(11))
        np.testing.assert_allclose(x, ref, rtol=1e-9, atol=1e-12)


def test_families_and_betas_are_uniform(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, float]] = []
    real = sampler_mod.draw_family

    def spy(family: str, beta: float, size: int, rng: np.random.Generator) -> np.ndarray:
        seen.append((family, beta))
        return real(family, beta, size, rng)

    monkeypatch.setattr(sampler_mod, "draw_family", spy)
    BoundedSampler(20, 30, 2 * 50, d_max=64, max_attempts=1).sample_many(
        1000, np.random.default_rng(2)
    )
    fams = [f for f, _ in seen]
    counts = np.array([fams.count(f) for f in FAMILIES])
    assert stats.chisquare(counts).pvalue > 0.001
    for f in FAMILIES:
        u = np.array([b / BETA_MAX[f] for g, b in seen if g == f])
        assert np.all((u > 0) & (u <= 1))
        assert stats.kstest(u, "uniform").pvalue > 0.01


def test_determinism() -> None:
    s = BoundedSampler(300, 500, 4000, d_max=32)
    a = s.sample_many(10, np.random.default_rng(42))
    b = s.sample_many(10, np.random.default_rng(42))
    assert a == b and [x.record for x in a] == [y.record for y in b]
    rng = np.random.default_rng(42)
    assert [s.sample(rng) for _ in range(10)] == a
    assert s.sample_many(10, np.random.default_rng(43)) != a
    batch = s.sample_batch(10, np.random.default_rng(42))
    assert batch.hist_u.shape == (10, 32) and batch.actions() == a
    assert batch.n_clamped == sum(x.record["clamped"] for x in a) == 0


def literal_sample(nu: int, nv: int, B: int, d_max: int, rng: np.random.Generator) -> np.ndarray:
    """bet.md §3.2 step by step with scipy's rvs and a sort (slow reference, B ≤ |U|·d_max)."""
    w = rng.random()
    while True:
        fu, fv = FAMILIES[int(rng.integers(4))], FAMILIES[int(rng.integers(4))]
        bu = BETA_MAX[fu] * (1 - rng.random())
        bv = BETA_MAX[fv] * (1 - rng.random())
        pu = SCIPY[fu](bu).rvs(size=nu, random_state=rng)
        pv = SCIPY[fv](bv).rvs(size=nv, random_state=rng)
        if not (np.isfinite(pu.sum()) and np.isfinite(pv.sum()) and pu.sum() > 0 and pv.sum() > 0):
            continue
        du = np.floor(pu / pu.sum() * (w * B))
        dv = np.floor(pv / pv.sum() * ((1 - w) * B))
        if du.max() <= d_max and dv.max() <= d_max:
            break
    du = -np.sort(-np.maximum(du, 1).astype(np.int64))
    dv = -np.sort(-np.maximum(dv, 1).astype(np.int64))
    return repair(np.concatenate([du, dv]), B, np.arange(nu + nv))


@pytest.mark.parametrize("seed", range(6))
def test_matches_literal_reference(seed: int) -> None:
    nu, nv, d_max = 60, 90, 32
    B = Budget(sparsity=0.8).resolve(nu + nv, d_max)
    act = BoundedSampler(nu, nv, B, d_max=d_max, max_attempts=10_000).sample(
        np.random.default_rng(seed)
    )
    ref = literal_sample(nu, nv, B, d_max, np.random.default_rng(seed))
    su, sv = act.sorted_sizes()
    assert np.array_equal(np.concatenate([su, sv]), ref)


def test_rank_assignment_of_sampled_actions_uses_rank_order() -> None:
    rng = np.random.default_rng(9)
    uf, vf = rng.integers(0, 3, 80), rng.integers(0, 3, 120)
    ra = RankAssignment(uf, vf)
    act = BoundedSampler(80, 120, 1000, d_max=32).sample(rng)
    us, _ = ra.sizes(act)
    su, _ = act.sorted_sizes()
    assert np.array_equal(us[rank_order(uf)], su)
