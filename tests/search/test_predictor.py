"""Tests for the fitness predictors, their online trainer and the selection rules."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr

from embudget.errors import BudgetError, BudgetErrorType, ConfigError, EmbudgetError
from embudget.search.predictor import (
    DeepSetsPredictor,
    PredictorTrainer,
    SimplePredictor,
    greedy,
    nearest,
    ranked_features,
    stack_hists,
)

D = 128


# --- helpers -----------------------------------------------------------------------------


def hist_of(sizes: np.ndarray, d_max: int) -> np.ndarray:
    return np.bincount(np.asarray(sizes) - 1, minlength=d_max).astype(np.int64)


def random_sizes(rng: np.random.Generator, n: int, d_max: int, mode: str) -> np.ndarray:
    """Per-entity sizes drawn from a random narrow range, so that many sets are empty."""
    if mode == "high":
        lo, hi = max(1, d_max - 3), d_max
    elif mode == "low":
        lo, hi = 1, min(3, d_max)
    else:
        lo = int(rng.integers(1, d_max + 1))
        hi = int(rng.integers(lo, d_max + 1))
    return rng.integers(lo, hi + 1, size=n)


def reference_embed(
    pred: DeepSetsPredictor, freq_u: np.ndarray, freq_v: np.ndarray, hu: np.ndarray, hv: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """bet.md §4.4 literally, one entity and one set at a time (slow; tests only)."""
    d_max = pred.d_max
    out_means, out_h = [], []
    for a in range(hu.shape[0]):
        # Explicit per-entity sizes: the k-th ranked entity gets the k-th largest size.
        per_entity = []
        for freq, hist in ((freq_u, hu[a]), (freq_v, hv[a])):
            order = sorted(range(len(freq)), key=lambda i, f=freq: (-f[i], i))
            desc = [d for d in range(d_max, 0, -1) for _ in range(int(hist[d - 1]))]
            sizes = [0] * len(freq)
            for k, i in enumerate(order):
                sizes[i] = desc[k]
            per_entity.append(sizes)
        sizes_u, sizes_v = per_entity
        top_u, top_v = max(freq_u.max(), 1), max(freq_v.max(), 1)  # all-zero freq -> q = 0
        means, set_embs = [], []
        for d in range(1, d_max + 1):
            xs = []
            for i in range(len(freq_u)):
                if sizes_u[i] == d:
                    q = torch.tensor([[freq_u[i] / top_u]], dtype=torch.float32)
                    xs.append(pred.rho_u(q)[0])
            for j in range(len(freq_v)):
                if sizes_v[j] == d:
                    q = torch.tensor([[freq_v[j] / top_v]], dtype=torch.float32)
                    xs.append(pred.rho_v(q)[0])
            m_d = torch.stack(xs).mean(0) if xs else torch.zeros(16)
            means.append(m_d)
            set_embs.append(pred.mu(torch.cat([m_d, torch.tensor([d / d_max])])))
        out_means.append(torch.stack(means))
        out_h.append(torch.stack(set_embs).mean(0))
    return torch.stack(out_means), torch.stack(out_h)


def budget_actions(
    rng: np.random.Generator, n_u: int, n_v: int, m: int, kept: float = 0.2
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Diverse actions at one budget: a random user share and Gamma/Dirichlet-shaped sizes."""
    budget = kept * D * (n_u + n_v)
    hus, hvs, sus, svs = [], [], [], []
    for _ in range(m):
        w = rng.uniform(0.25, 0.75)
        sides = []
        for n, share in ((n_u, w * budget), (n_v, (1 - w) * budget)):
            p = rng.gamma(10 ** rng.uniform(-1, 1), size=n)
            sizes = np.clip(np.floor(p / p.sum() * share), 1, D).astype(np.int64)
            sides.append(np.sort(sizes)[::-1])  # rank order: largest first
        sus.append(sides[0])
        svs.append(sides[1])
        hus.append(hist_of(sides[0], D))
        hvs.append(hist_of(sides[1], D))
    return np.array(hus), np.array(hvs), sus, svs


def synthetic_fitness(
    q_u: np.ndarray, q_v: np.ndarray, sus: list[np.ndarray], svs: list[np.ndarray]
) -> np.ndarray:
    """Rewards large sizes for popular entities: Σ q_n log d_n, normalised to [0, 1]."""
    norm = (q_u.sum() + q_v.sum()) * np.log(D)
    pairs = zip(sus, svs, strict=True)
    return np.array([(q_u @ np.log(su) + q_v @ np.log(sv)) / norm for su, sv in pairs])


def small_setup(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 6, size=7), rng.integers(0, 6, size=9)  # ties and zeros on purpose


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class Act:
    hist_u: np.ndarray
    hist_v: np.ndarray


# --- (a) vectorised path == loop reference ------------------------------------------------


@pytest.mark.parametrize("d_max", [1, 5, 12])
def test_set_means_and_embedding_match_loop_reference(d_max: int) -> None:
    freq_u, freq_v = small_setup(d_max)
    pred = DeepSetsPredictor.from_freqs(freq_u, freq_v, d_max=d_max, generator=gen(3))
    rng = np.random.default_rng(d_max)
    modes = [("any", "any")] * 4 + [("high", "low"), ("low", "high"), ("high", "high")]
    hu = np.array([hist_of(random_sizes(rng, 7, d_max, a), d_max) for a, _ in modes])
    hv = np.array([hist_of(random_sizes(rng, 9, d_max, b), d_max) for _, b in modes])
    assert (hu + hv == 0).any() or d_max == 1  # empty sets are exercised
    ref_means, ref_h = reference_embed(pred, freq_u, freq_v, hu, hv)
    with torch.no_grad():
        means = pred.set_means(hu, hv)
        h = pred.embed(hu, hv)
    torch.testing.assert_close(means, ref_means.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, ref_h.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pred(hu, hv), pred.decoder(ref_h).squeeze(-1), atol=1e-5, rtol=0)


@settings(max_examples=15, deadline=None)
@given(
    n_u=st.integers(1, 12),
    n_v=st.integers(1, 12),
    d_max=st.integers(1, 10),
    seed=st.integers(0, 2**31 - 1),
)
def test_set_means_property(n_u: int, n_v: int, d_max: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    freq_u, freq_v = rng.integers(0, 4, size=n_u), rng.integers(0, 4, size=n_v)
    pred = DeepSetsPredictor.from_freqs(freq_u, freq_v, d_max=d_max, generator=gen(seed))
    hu = hist_of(random_sizes(rng, n_u, d_max, "any"), d_max)[None]
    hv = hist_of(random_sizes(rng, n_v, d_max, "any"), d_max)[None]
    ref_means, ref_h = reference_embed(pred, freq_u, freq_v, hu, hv)
    with torch.no_grad():
        torch.testing.assert_close(pred.set_means(hu, hv), ref_means, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pred.embed(hu, hv), ref_h, atol=1e-5, rtol=1e-5)


def test_batch_matches_single_and_input_kinds() -> None:
    freq_u, freq_v = small_setup(1)
    pred = DeepSetsPredictor.from_freqs(freq_u, freq_v, d_max=6, generator=gen(0))
    rng = np.random.default_rng(5)
    hu = np.array([hist_of(random_sizes(rng, 7, 6, "any"), 6) for _ in range(5)])
    hv = np.array([hist_of(random_sizes(rng, 9, 6, "any"), 6) for _ in range(5)])
    with torch.no_grad():
        batch = pred(hu, hv)
        single = torch.cat([pred(hu[i], hv[i]) for i in range(5)])  # 1-D pair = one action
        from_torch = pred(torch.from_numpy(hu), torch.from_numpy(hv))
        from_objects = pred.predict_actions([Act(hu[i], hv[i]) for i in range(5)])
    assert batch.shape == (5,)
    torch.testing.assert_close(batch, single, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(batch, from_torch)
    torch.testing.assert_close(batch, from_objects)
    assert pred.embed(hu, hv).shape == (5, 64)


def test_bad_histograms_raise_typed_errors() -> None:
    pred = DeepSetsPredictor.from_freqs(np.array([2, 1]), np.array([1, 1, 1]), d_max=4)
    good_u, good_v = np.array([0, 1, 0, 1]), np.array([3, 0, 0, 0])
    pred(good_u, good_v)
    for hu, hv in [
        (np.array([0, 1, 0, 2]), good_v),  # counts 3 users, there are 2
        (np.array([0, 1, 1]), good_v),  # wrong length
        (np.array([0, 3, 0, -1]), good_v),  # negative
        (np.array([0.5, 1.5, 0, 0]), good_v),  # not integer
        (np.stack([good_u, good_u]), good_v),  # m differs
    ]:
        with pytest.raises(BudgetError) as err:
            pred(hu, hv)
        assert err.value.error_type == BudgetErrorType.INVALID


# --- (b) gradients ------------------------------------------------------------------------


def test_gradients_reach_both_element_encoders() -> None:
    freq_u, freq_v = small_setup(2)
    pred = DeepSetsPredictor.from_freqs(freq_u, freq_v, d_max=8, generator=gen(0))
    rng = np.random.default_rng(0)
    hu = np.array([hist_of(random_sizes(rng, 7, 8, "any"), 8) for _ in range(3)])
    hv = np.array([hist_of(random_sizes(rng, 9, 8, "any"), 8) for _ in range(3)])
    pred(hu, hv).sum().backward()
    for module in (pred.rho_u, pred.rho_v, pred.mu, pred.decoder):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)


# --- (c) features and construction --------------------------------------------------------


def test_ranked_features_in_unit_interval_and_non_increasing() -> None:
    freq = np.array([3, 0, 7, 7, 1, 0])
    q = ranked_features(freq)
    np.testing.assert_allclose(q, [1.0, 1.0, 3 / 7, 1 / 7, 0.0, 0.0])
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = ranked_features(rng.integers(0, 50, size=int(rng.integers(1, 40))))
        assert q.min() >= 0 and q.max() <= 1
        assert np.all(np.diff(q) <= 0)
    assert np.all(ranked_features(np.zeros(4, dtype=np.int64)) == 0)


def test_features_follow_dataset_frequencies() -> None:
    from embudget.data.dataset import Dataset

    u = np.array([0, 0, 0, 1, 2, 2])
    i = np.array([0, 1, 2, 1, 1, 2])
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    ds = Dataset.from_arrays(
        "tiny", "paper", 42, {"train": (u, i), "valid": empty, "test": empty},
        np.arange(4), np.arange(4),
    )  # fmt: skip
    pred = DeepSetsPredictor.from_freqs(ds.user_freq, ds.item_freq, d_max=4)
    np.testing.assert_allclose(pred.q_u.squeeze(1).numpy(), [1.0, 2 / 3, 1 / 3, 0.0])
    np.testing.assert_allclose(pred.q_v.squeeze(1).numpy(), [1.0, 2 / 3, 1 / 3, 0.0])


def test_bad_features_rejected() -> None:
    with pytest.raises(ConfigError):
        DeepSetsPredictor(np.array([0.5, 1.0]), np.array([1.0]), d_max=4)  # not rank order
    with pytest.raises(ConfigError):
        DeepSetsPredictor(np.array([2.0, 1.0]), np.array([1.0]), d_max=4)  # not normalised
    with pytest.raises(ConfigError):
        ranked_features(np.array([1, -1]))


def test_init_is_seeded_and_leaves_global_rng_alone() -> None:
    q = ranked_features(np.array([5, 3, 1]))
    state = torch.random.get_rng_state()
    a = DeepSetsPredictor(q, q, d_max=8, generator=gen(7))
    b = DeepSetsPredictor(q, q, d_max=8, generator=gen(7))
    c = DeepSetsPredictor(q, q, d_max=8, generator=gen(8))
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, pa), pb, pc in zip(
        a.named_parameters(), b.parameters(), c.parameters(), strict=True
    ):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name
    # Architecture of bet.md §4.3.
    shapes = [tuple(p.shape) for p in a.parameters() if p.ndim == 2]
    assert shapes == [(16, 1), (16, 16), (16, 1), (16, 16), (64, 17), (64, 64), (64, 64), (1, 64)]
    # Xavier-uniform on π: |w| <= sqrt(6 / (fan_in + fan_out)).
    assert float(a.decoder[2].weight.detach().abs().max()) <= np.sqrt(6 / 65)
    assert float(a.decoder[2].weight.detach().abs().max()) > 1 / np.sqrt(64)  # beyond default bound


# --- (d) learning --------------------------------------------------------------------------


def _train_and_rank(pred_factory: str, n_updates: int) -> tuple[float, float, float]:
    rng = np.random.default_rng(0)
    n_u, n_v = 200, 300
    freq_u = np.floor(rng.pareto(1.2, n_u) * 10).astype(np.int64)
    freq_v = np.floor(rng.pareto(1.2, n_v) * 10).astype(np.int64)
    q_u, q_v = ranked_features(freq_u), ranked_features(freq_v)
    hu, hv, sus, svs = budget_actions(rng, n_u, n_v, 64)
    r = synthetic_fitness(q_u, q_v, sus, svs)
    test_hu, test_hv, test_sus, test_svs = budget_actions(rng, n_u, n_v, 40)
    test_r = synthetic_fitness(q_u, q_v, test_sus, test_svs)
    pred: DeepSetsPredictor | SimplePredictor
    if pred_factory == "deepsets":
        pred = DeepSetsPredictor(q_u, q_v, d_max=D, generator=gen(0))
    else:
        pred = SimplePredictor(n_u, n_v, d_max=D, generator=gen(0))
    trainer = PredictorTrainer(pred)
    for i in range(len(r)):
        trainer.add((hu[i], hv[i]), float(r[i]))
    with torch.no_grad():
        mse_before = float(((pred(hu, hv).numpy() - r) ** 2).mean())
    trainer.update(np.random.default_rng(1), n_updates=n_updates)
    with torch.no_grad():
        mse_after = float(((pred(hu, hv).numpy() - r) ** 2).mean())
        rho = spearmanr(pred(test_hu, test_hv).numpy(), test_r).statistic
    return float(rho), mse_before, mse_after


def test_deepsets_learns_popularity_aware_fitness() -> None:
    rho, mse_before, mse_after = _train_and_rank("deepsets", 1200)
    assert rho >= 0.7  # untrained: -0.41
    assert mse_after < 0.1 * mse_before


# --- (e) SimplePredictor ----------------------------------------------------------------


def test_simple_predictor_shapes_and_input() -> None:
    hu = np.array([[2, 0, 1, 0], [0, 0, 0, 3]])
    hv = np.array([[1, 1, 0, 0], [0, 2, 0, 0]])
    joint = SimplePredictor(3, 2, d_max=4, generator=gen(0))
    split = SimplePredictor(3, 2, d_max=4, hist="split", generator=gen(0))
    assert joint.embed(hu, hv).shape == (2, 64) and joint(hu, hv).shape == (2,)
    assert split.embed(hu, hv).shape == (2, 64) and split(hu, hv).shape == (2,)
    assert joint.encoder[0].in_features == 4 and split.encoder[0].in_features == 8
    # Joint input x_d = |S_d| / N: moving an entity between sides at the same size changes
    # nothing for "joint", but does for "split".
    hu2, hv2 = np.array([[1, 1, 1, 0]]), np.array([[2, 0, 0, 0]])
    with torch.no_grad():
        assert torch.equal(joint(hu[:1], hv[:1]), joint(hu2, hv2))
        assert not torch.equal(split(hu[:1], hv[:1]), split(hu2, hv2))
        x = torch.tensor([[3.0, 1.0, 1.0, 0.0]]) / 5
        torch.testing.assert_close(joint.embed(hu[:1], hv[:1]), joint.encoder(x))
    with pytest.raises(ConfigError):
        SimplePredictor(3, 2, d_max=4, hist="both")  # type: ignore[arg-type]


def test_simple_predictor_learns() -> None:
    rho, mse_before, mse_after = _train_and_rank("simple", 600)
    assert rho >= 0.6  # untrained: 0.53
    assert mse_after < 0.1 * mse_before


# --- (f) trainer --------------------------------------------------------------------------


def _tiny_trainer(seed: int = 0) -> tuple[PredictorTrainer, np.ndarray, np.ndarray]:
    freq_u, freq_v = small_setup(seed)
    pred = DeepSetsPredictor.from_freqs(freq_u, freq_v, d_max=6, generator=gen(seed))
    trainer = PredictorTrainer(pred)
    rng = np.random.default_rng(seed)
    hu = np.array([hist_of(random_sizes(rng, 7, 6, "any"), 6) for _ in range(5)])
    hv = np.array([hist_of(random_sizes(rng, 9, 6, "any"), 6) for _ in range(5)])
    for i in range(5):
        trainer.add(Act(hu[i], hv[i]) if i % 2 else (hu[i], hv[i]), 0.5 + 0.1 * i)
    return trainer, hu, hv


def test_trainer_state_round_trip_resumes_exactly() -> None:
    trainer, _, _ = _tiny_trainer()
    rng = np.random.default_rng(11)
    trainer.update(rng, n_updates=4)  # Adam has state by now
    buf = io.BytesIO()
    torch.save(trainer.state_dict(), buf)
    rng_state = rng.bit_generator.state
    first = trainer.update(rng, n_updates=3)
    weights_first = [p.detach().clone() for p in trainer.predictor.parameters()]

    buf.seek(0)
    fresh, _, _ = _tiny_trainer(seed=1)  # different init and replay, all overwritten
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert len(fresh) == 5 and fresh.n_updates == 4
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = rng_state
    second = fresh.update(rng2, n_updates=3)
    assert first == second
    for a, b in zip(weights_first, fresh.predictor.parameters(), strict=True):
        assert torch.equal(a, b)

    # In-memory state is a snapshot, not a view of live tensors.
    snap = trainer.state_dict()
    trainer.update(rng, n_updates=2)
    trainer.load_state_dict(snap)
    for (k, v), w in zip(
        snap["predictor"].items(), trainer.predictor.state_dict().values(), strict=True
    ):
        assert torch.equal(v, w), k


def test_trainer_lr_schedule_and_logs() -> None:
    trainer, hu, hv = _tiny_trainer()
    rng = np.random.default_rng(0)
    lrs = []
    for _ in range(20):
        (log,) = trainer.update(rng, n_updates=1)
        lrs.append(trainer.lr)
        assert set(log) == {"index", "r", "r_hat", "loss", "lr"}
        i = int(log["index"])
        assert log["r"] == pytest.approx(0.5 + 0.1 * i)
        assert log["loss"] == pytest.approx((log["r_hat"] - log["r"]) ** 2)
    assert lrs[0] == pytest.approx(0.009)
    assert lrs[14] > 0.002  # after the 15th update
    assert lrs[15] == 0.002 and lrs[19] == 0.002  # the floor from the 16th on
    assert trainer.optimizer.param_groups[0]["lr"] == 0.002  # used by the 20th step


def test_trainer_draws_uniformly_with_replacement_and_never_evicts() -> None:
    trainer, hu, hv = _tiny_trainer()
    for _ in range(40):
        trainer.add((hu[0], hv[0]), 0.1)
    assert len(trainer) == 45
    idx = [int(x["index"]) for x in trainer.update(np.random.default_rng(3), n_updates=200)]
    expected = np.random.default_rng(3).integers(45, size=200)  # one uniform draw per update
    np.testing.assert_array_equal(idx, expected)
    assert len(set(idx)) > 30 and min(idx) < 5 <= max(idx)  # old and new entries both drawn
    replay_u, replay_v, r = trainer.replay()
    assert replay_u.shape == (45, 6) and replay_v.shape == (45, 6) and r.shape == (45,)
    np.testing.assert_array_equal(replay_u[:5], hu)


def test_trainer_rejects_misuse() -> None:
    freq_u, freq_v = small_setup(0)
    trainer = PredictorTrainer(DeepSetsPredictor.from_freqs(freq_u, freq_v, d_max=6))
    with pytest.raises(EmbudgetError):
        trainer.update(np.random.default_rng(0))
    with pytest.raises(EmbudgetError):
        trainer.add((np.eye(6, dtype=np.int64)[0] * 7, np.eye(6, dtype=np.int64)[0] * 9), np.nan)
    with pytest.raises(BudgetError):
        trainer.add((np.ones(6, dtype=np.int64), np.ones(6, dtype=np.int64)), 1.0)
    with pytest.raises(ConfigError):
        PredictorTrainer(trainer.predictor, lr=0.001, lr_min=0.002)


# --- (g) selection ------------------------------------------------------------------------


def _candidates() -> tuple[DeepSetsPredictor, np.ndarray, np.ndarray]:
    freq_u, freq_v = small_setup(4)
    pred = DeepSetsPredictor.from_freqs(freq_u, freq_v, d_max=6, generator=gen(2))
    rng = np.random.default_rng(9)
    hu = np.array([hist_of(random_sizes(rng, 7, 6, "any"), 6) for _ in range(12)])
    hv = np.array([hist_of(random_sizes(rng, 9, 6, "any"), 6) for _ in range(12)])
    _, first = np.unique(np.concatenate([hu, hv], axis=1), axis=0, return_index=True)
    keep = np.sort(first)[:6]  # six distinct actions
    assert len(keep) == 6
    return pred, hu[keep], hv[keep]


def test_greedy_is_argmax_with_lowest_index_ties() -> None:
    pred, hu, hv = _candidates()
    with torch.no_grad():
        scores = pred(hu, hv).numpy()
    best = int(np.argmax(scores))
    assert greedy(pred, hu, hv) == best
    assert scores[best] > np.delete(scores, best).max()
    # Duplicate the winner at a higher and a lower index: the lowest index wins.
    order = [best, *range(6)]
    assert greedy(pred, hu[order], hv[order]) == 0
    order = [i for i in range(6) if i != best] + [best, best]
    assert greedy(pred, hu[order], hv[order]) == 5
    # A constant predictor ties everything.
    with torch.no_grad():
        pred.decoder[2].weight.zero_()
        pred.decoder[2].bias.fill_(0.3)
    assert greedy(pred, hu, hv) == 0
    assert greedy(pred, hu[::-1].copy(), hv[::-1].copy()) == 0


def test_nearest_uses_current_embedding_and_lowest_index_ties() -> None:
    pred, hu, hv = _candidates()
    with torch.no_grad():
        h = pred.embed(hu, hv).numpy().astype(np.float64)
    best_u, best_v = hu[3] + 0, hv[3] + 0
    assert nearest(pred, hu, hv, best_u, best_v) == 3
    # Without the identical candidate, the nearest one in h-space wins.
    rest = [0, 1, 2, 4, 5]
    dist = np.linalg.norm(h[rest] - h[3], axis=1)
    assert nearest(pred, hu[rest], hv[rest], best_u, best_v) == int(np.argmin(dist))
    # Two identical candidates at distance 0: the lower index wins.
    order = [0, 3, 1, 3]
    assert nearest(pred, hu[order], hv[order], best_u, best_v) == 1
    # The predictor changes, so does the answer: it is recomputed every call.
    with torch.no_grad():
        for lin in (pred.mu[0], pred.mu[2]):
            lin.weight.zero_()
            lin.bias.fill_(0.1)  # every h is the same vector: all candidates tie
    assert nearest(pred, hu[rest], hv[rest], best_u, best_v) == 0


def test_stack_hists() -> None:
    acts = [
        Act(np.array([1, 0, 2]), np.array([0, 3, 0])),
        Act(np.array([0, 3, 0]), np.array([3, 0, 0])),
    ]
    hu, hv = stack_hists(acts)
    assert hu.dtype == np.int64 and hu.shape == (2, 3)
    np.testing.assert_array_equal(hv, [[0, 3, 0], [3, 0, 0]])
    with pytest.raises(ConfigError):
        stack_hists([])
