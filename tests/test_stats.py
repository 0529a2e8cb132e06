"""Paired t-test and per-user alignment (protocol.md §8)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.stats

from embudget.bench.stats import align_per_user, mean_per_user, paired_ttest
from embudget.errors import ConfigError


def test_hand_checked_example() -> None:
    # differences 1..5: mean 3, sd sqrt(2.5), se sqrt(0.5), t = 3 / sqrt(0.5) = 4.2426,
    # t_{0.975, 4} = 2.7764 -> CI = 3 ± 1.9632
    b = np.array([0.2, 0.1, 0.4, 0.3, 0.0])
    a = b + np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    r = paired_ttest(a, b)
    assert r["n"] == 5
    assert r["mean_diff"] == pytest.approx(3.0)
    assert r["t"] == pytest.approx(4.2426, abs=1e-4)
    assert r["ci_low"] == pytest.approx(1.0368, abs=1e-4)
    assert r["ci_high"] == pytest.approx(4.9632, abs=1e-4)
    assert r["p"] == pytest.approx(0.013236, abs=1e-6)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_matches_scipy(confidence: float) -> None:
    rng = np.random.default_rng(0)
    b = rng.random(300)
    a = b + rng.normal(0.01, 0.05, size=300)
    r = paired_ttest(a, b, confidence=confidence)
    ref = scipy.stats.ttest_rel(a, b)
    ci = ref.confidence_interval(confidence_level=confidence)
    assert r["t"] == pytest.approx(float(ref.statistic), rel=1e-12)
    assert r["p"] == pytest.approx(float(ref.pvalue), rel=1e-9)
    assert r["ci_low"] == pytest.approx(float(ci.low), rel=1e-9)
    assert r["ci_high"] == pytest.approx(float(ci.high), rel=1e-9)
    assert r["mean_diff"] == pytest.approx(float(np.mean(a - b)), rel=1e-12)
    # swapping the arguments mirrors the result
    s = paired_ttest(b, a, confidence=confidence)
    assert s["t"] == pytest.approx(-r["t"]) and s["p"] == pytest.approx(r["p"])
    assert s["ci_low"] == pytest.approx(-r["ci_high"])


def test_wider_interval_at_higher_confidence() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random(50), rng.random(50)
    lo, hi = paired_ttest(a, b, 0.9), paired_ttest(a, b, 0.99)
    assert hi["ci_low"] < lo["ci_low"] < lo["ci_high"] < hi["ci_high"]


def test_identical_inputs_give_nan_without_warning() -> None:
    a = np.array([0.1, 0.2, 0.3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = paired_ttest(a, a.copy())
    assert r["mean_diff"] == 0.0 and r["ci_low"] == 0.0 and r["ci_high"] == 0.0
    assert np.isnan(r["t"]) and np.isnan(r["p"])


def test_bad_inputs_raise() -> None:
    with pytest.raises(ConfigError, match="align"):
        paired_ttest(np.zeros(3), np.zeros(4))
    with pytest.raises(ConfigError, match="at least 2"):
        paired_ttest(np.zeros(1), np.zeros(1))
    with pytest.raises(ConfigError, match="NaN"):
        paired_ttest(np.array([0.0, np.nan]), np.zeros(2))
    with pytest.raises(ConfigError, match="confidence"):
        paired_ttest(np.zeros(3), np.ones(3), confidence=1.0)
    with pytest.raises(ConfigError, match="1-D"):
        paired_ttest(np.zeros((2, 2)), np.zeros((2, 2)))


def test_align_keeps_common_users_in_order() -> None:
    ua, va = np.array([5, 1, 3, 9]), np.array([0.5, 0.1, 0.3, 0.9], dtype=np.float32)
    ub, vb = np.array([3, 5, 7, 1]), np.array([3.0, 5.0, 7.0, 1.0])
    users, a, b = align_per_user(ua, va, ub, vb)
    np.testing.assert_array_equal(users, [1, 3, 5])
    np.testing.assert_array_equal(a, np.array([0.1, 0.3, 0.5], dtype=np.float32))
    np.testing.assert_array_equal(b, [1.0, 3.0, 5.0])


def test_align_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="duplicate"):
        align_per_user(np.array([1, 1]), np.zeros(2), np.array([1]), np.zeros(1))
    with pytest.raises(ConfigError, match="entries"):
        align_per_user(np.array([1, 2]), np.zeros(3), np.array([1]), np.zeros(1))


def test_mean_per_user_averages_the_users_every_run_has() -> None:
    seed0 = (np.array([4, 0, 2, 7]), np.array([0.4, 0.0, 0.2, 0.7], dtype=np.float32))
    seed1 = (np.array([2, 4, 0]), np.array([0.6, 0.0, 1.0], dtype=np.float32))
    users, mean = mean_per_user([seed0, seed1])
    np.testing.assert_array_equal(users, [0, 2, 4])  # user 7 was evaluated once only
    np.testing.assert_allclose(mean, [0.5, 0.4, 0.2], rtol=1e-6)
    assert mean.dtype == np.float64
    one_users, one = mean_per_user([seed0])  # one run: its scores, sorted by user
    np.testing.assert_array_equal(one_users, [0, 2, 4, 7])
    np.testing.assert_allclose(one, [0.0, 0.2, 0.4, 0.7], rtol=1e-6)
    with pytest.raises(ConfigError, match="at least one run"):
        mean_per_user([])
    with pytest.raises(ConfigError, match="duplicate"):
        mean_per_user([seed0, (np.array([1, 1]), np.zeros(2))])
