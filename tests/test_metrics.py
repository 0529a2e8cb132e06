"""Per-user metrics against the golden cases G1–G4 of protocol.md §6 and a loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from embudget.errors import ConfigError
from embudget.training.metrics import QUALITY_KEYS, has_quality, quality, ranking_metrics

TOL = 1e-4


def _one(r: list[int], n_targets: int, ks: tuple[int, ...]) -> dict[str, float]:
    hits = torch.tensor([r], dtype=torch.bool)
    out = ranking_metrics(hits, torch.tensor([n_targets]), ks)
    return {k: float(v[0]) for k, v in out.items()}


def test_g1_ndcg_ideal_over_targets_not_hits() -> None:
    m = _one([1, 0, 1], 3, (3,))
    assert m["recall@3"] == pytest.approx(0.6667, abs=TOL)
    assert m["precision@3"] == pytest.approx(0.6667, abs=TOL)
    assert m["hitrate@3"] == 1.0
    assert m["ndcg@3"] == pytest.approx(0.7039, abs=TOL)
    # NGCF's hit-based ideal DCG (1.5 / 1.6309) must not be produced
    assert abs(m["ndcg@3"] - 0.9197) > 0.1


def test_g2_recall_divides_by_all_targets() -> None:
    m = _one([1, 0, 1], 5, (3,))
    assert m["recall@3"] == pytest.approx(0.4, abs=TOL)  # truncated recall would be 0.6667
    assert m["precision@3"] == pytest.approx(0.6667, abs=TOL)
    assert m["ndcg@3"] == pytest.approx(0.7039, abs=TOL)


def test_g3_single_target() -> None:
    m = _one([0, 0, 1, 0, 0], 1, (5,))
    assert m["recall@5"] == pytest.approx(1.0, abs=TOL)
    assert m["precision@5"] == pytest.approx(0.2, abs=TOL)
    assert m["hitrate@5"] == 1.0
    assert m["ndcg@5"] == pytest.approx(0.5, abs=TOL)


def test_g4_several_k_at_once() -> None:
    r = [0] * 10
    r[1] = r[5] = 1  # hits at ranks 2 and 6
    m = _one(r, 4, (5, 10))
    assert m["recall@10"] == pytest.approx(0.5, abs=TOL)
    assert m["precision@10"] == pytest.approx(0.2, abs=TOL)
    assert m["ndcg@10"] == pytest.approx(0.3854, abs=TOL)
    assert m["recall@5"] == pytest.approx(0.25, abs=TOL)
    assert m["precision@5"] == pytest.approx(0.2, abs=TOL)
    assert m["ndcg@5"] == pytest.approx(0.2463, abs=TOL)
    assert m["hitrate@5"] == m["hitrate@10"] == 1.0


def test_golden_rows_in_one_batch_do_not_mix() -> None:
    rows = [[1, 0, 1, 0, 0], [1, 0, 1, 0, 0], [0, 0, 1, 0, 0], [0, 1, 0, 0, 0]]
    hits = torch.tensor(rows, dtype=torch.float32)
    out = ranking_metrics(hits, torch.tensor([3, 5, 1, 4]), (3, 5))
    np.testing.assert_allclose(out["ndcg@3"][:2].numpy(), [0.7039, 0.7039], atol=TOL)
    np.testing.assert_allclose(out["recall@3"].numpy(), [2 / 3, 0.4, 1.0, 0.25], atol=TOL)
    np.testing.assert_allclose(out["ndcg@5"][2:].numpy(), [0.5, 0.2463], atol=TOL)
    np.testing.assert_allclose(out["hitrate@3"].numpy(), [1, 1, 1, 1])
    np.testing.assert_allclose(out["precision@5"].numpy(), [0.4, 0.4, 0.2, 0.2], atol=TOL)


def test_no_hit_gives_zeros() -> None:
    m = _one([0, 0, 0], 2, (1, 3))
    assert all(v == 0.0 for v in m.values())


def _slow_metrics(r: list[int], n_t: int, k: int) -> dict[str, float]:
    dcg = sum(r[i] / math.log2(i + 2) for i in range(k))
    idcg = sum(1 / math.log2(i + 2) for i in range(min(n_t, k)))
    h = sum(r[:k])
    return {"recall": h / n_t, "precision": h / k, "hitrate": float(h > 0), "ndcg": dcg / idcg}


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.lists(st.integers(0, 1), min_size=12, max_size=12), st.integers(1, 15)),
        min_size=1,
        max_size=6,
    ),
    ks=st.lists(st.integers(1, 12), min_size=1, max_size=4, unique=True),
)
def test_matches_loop_reference(data: list[tuple[list[int], int]], ks: list[int]) -> None:
    hits = torch.tensor([r for r, _ in data], dtype=torch.bool)
    nt = torch.tensor([n for _, n in data])
    out = ranking_metrics(hits, nt, ks)
    for row, (r, n_t) in enumerate(data):
        for k in ks:
            for name, want in _slow_metrics(r, n_t, k).items():
                assert float(out[f"{name}@{k}"][row]) == pytest.approx(want, abs=1e-9)


def test_quality_is_mean_of_six_and_commutes_with_macro_mean() -> None:
    g = torch.Generator().manual_seed(0)
    hits = torch.rand(50, 20, generator=g) < 0.2
    nt = torch.randint(1, 8, (50,), generator=g)
    per_user = ranking_metrics(hits, nt, (5, 10, 20))
    q = quality(per_user)
    want = sum(per_user[k] for k in QUALITY_KEYS) / 6
    torch.testing.assert_close(q, want)
    means = {k: float(v.mean()) for k, v in per_user.items()}
    assert quality(means) == pytest.approx(float(q.mean()), abs=1e-12)
    assert has_quality(means) and not has_quality({"recall@5": 1.0})


def test_quality_needs_all_six() -> None:
    with pytest.raises(ConfigError):
        quality({"recall@5": 0.1, "ndcg@5": 0.2})


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="max"):
        ranking_metrics(torch.zeros(2, 3), torch.tensor([1, 1]), (5,))
    with pytest.raises(ValueError, match="T_u"):
        ranking_metrics(torch.zeros(2, 3), torch.tensor([1, 0]), (3,))
    with pytest.raises(ValueError, match="shape"):
        ranking_metrics(torch.zeros(2, 3), torch.tensor([1, 1, 1]), (3,))
    for ks in [(), (0,), (2.5,), (True,)]:
        with pytest.raises(ConfigError):
            ranking_metrics(torch.zeros(1, 3), torch.tensor([1]), ks)  # type: ignore[arg-type]
