"""Compact (jagged) tables: same lookups, gradients, scores and training as the masked form."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from embudget.models import Backbone, build_model
from embudget.tables.compact import (
    CompactEmbedding,
    compact_pays,
    is_compact,
    load_weights,
    to_compact,
    to_masked,
)
from embudget.tables.sized import SizedEmbedding

NAMES = ["mf", "ncf", "ngcf", "lightgcn"]
NU, NI, D = 30, 24, 16


def random_train(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    m = rng.random((NU, NI)) < 0.25
    m[np.arange(NU), np.arange(NU) % NI] = True  # every user has an interaction
    return sp.csr_matrix(m.astype(np.float32))


def random_sizes(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(1, D + 1, NU), rng.integers(1, D + 1, NI)


def masked_table(sizes: np.ndarray, d: int, seed: int = 0) -> SizedEmbedding:
    t = SizedEmbedding(len(sizes), d, sizes)
    with torch.no_grad():
        t.weight.normal_(generator=torch.Generator().manual_seed(seed))
    return t


def slow_lookup(t: SizedEmbedding, ids: torch.Tensor) -> torch.Tensor:
    """Loop reference: row by row, prefix then zeros."""
    out = torch.zeros(len(ids), t.d_max)
    for r, i in enumerate(ids.tolist()):
        s = int(t.sizes[i])
        out[r, :s] = t.weight[i, :s]
    return out


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(1, 9), min_size=1, max_size=20),
    st.lists(st.integers(0, 10**6), min_size=0, max_size=30),
)
def test_lookup_and_full_equal_masked(sizes: list[int], raw_ids: list[int]) -> None:
    sizes_a = np.array(sizes)
    m = masked_table(sizes_a, 9)
    c = CompactEmbedding.from_sized(m)
    ids = torch.tensor([i % len(sizes) for i in raw_ids], dtype=torch.int64)
    assert c.values.numel() == sizes_a.sum() == c.params_used() == m.params_used()
    assert torch.equal(c(ids), slow_lookup(m, ids))
    assert torch.equal(c(ids), m(ids))
    assert torch.equal(c.full(), m.full())
    assert torch.equal(c.offsets, torch.from_numpy(np.concatenate([[0], np.cumsum(sizes_a)])))
    vals, lengths = c.narrow(ids)
    assert lengths.tolist() == [sizes[i] for i in ids.tolist()]
    expect = [m.weight[i, : sizes[i]] for i in ids.tolist()]
    assert torch.equal(vals, torch.cat(expect) if expect else torch.zeros(0))
    back = c.to_sized()
    assert torch.equal(back.full(), m.full()) and torch.equal(back.sizes, m.sizes)
    w = max(sizes)  # past the widest row every column is zero: full(w) drops only those
    assert m.width == c.width == w
    for t in (m, c):
        assert torch.equal(t.full(w), m.full()[:, :w]) and not m.full()[:, w:].any()
        with pytest.raises(ValueError, match="width must lie in"):
            t.full(w - 1)


def test_lookup_keeps_batch_shape_and_gradients_match() -> None:
    sizes = np.array([1, 4, 2, 4, 3])
    m = masked_table(sizes, 4)
    c = CompactEmbedding.from_sized(m)
    ids = torch.tensor([[0, 1, 1], [3, 4, 1]])
    assert c(ids).shape == (2, 3, 4)
    w = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(3))
    (m(ids) * w).sum().backward()
    (c(ids) * w).sum().backward()
    assert m.weight.grad is not None and c.values.grad is not None
    mask = m.mask()
    assert torch.equal(c.values.grad, m.weight.grad[mask])
    assert torch.all(m.weight.grad[~mask] == 0)
    # full() back-propagates into the stored values too
    c.values.grad = None
    (c.full() * torch.arange(20.0).view(5, 4)).sum().backward()
    assert torch.equal(c.values.grad, torch.arange(20.0).view(5, 4)[mask])


def test_set_sizes_keeps_common_prefix_and_state_dict_adopts_sizes() -> None:
    m = masked_table(np.array([3, 1, 2]), 3)
    c = CompactEmbedding.from_sized(m)
    c.set_sizes(np.array([1, 3, 2]))
    full = c.full()
    assert c.values.numel() == 6
    assert torch.equal(full[0], torch.tensor([m.weight[0, 0].item(), 0.0, 0.0]))
    assert torch.equal(full[1], torch.tensor([m.weight[1, 0].item(), 0.0, 0.0]))
    assert torch.equal(full[2, :2], m.weight[2, :2])
    other = CompactEmbedding(np.array([3, 3, 3]), 3)
    other.load_state_dict(c.state_dict())
    assert torch.equal(other.full(), c.full()) and torch.equal(other.sizes, c.sizes)
    assert set(c.state_dict()) == {"values", "sizes"}


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError):
        CompactEmbedding(np.array([0, 2]), 4)
    with pytest.raises(ValueError):
        CompactEmbedding(np.array([5]), 4)
    with pytest.raises(ValueError):
        CompactEmbedding(np.array([2, 2]), 4, values=torch.zeros(3))
    with pytest.raises(ValueError):
        CompactEmbedding(2, 4)


def test_compact_pays() -> None:
    # 10 users, no items, d_max 8: dense 320 B; jagged 4·Σ + 8·11 + 8·1 (item offsets) B
    assert compact_pays([np.full(10, 5)], 8)  # 296 < 320
    assert not compact_pays([np.full(10, 6)], 8)  # 336 > 320
    # users and items: one offsets array each, 4·(50 + 30) + 8·(11 + 7) = 464 < 512
    assert compact_pays([np.full(10, 5), np.full(6, 5)], 8)


# --------------------------------------------------------------------------------------------
# every backbone: masked vs compact
# --------------------------------------------------------------------------------------------
def build(name: str, seed: int = 0) -> Backbone:
    return build_model(
        name, NU, NI, random_train(), D, generator=torch.Generator().manual_seed(seed)
    )


def run_steps(model: Backbone, steps: int = 12, seed: int = 5) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    losses = []
    for _ in range(steps):
        users = torch.randint(0, NU, (16,), generator=g)
        pos = torch.randint(0, NI, (16,), generator=g)
        neg = torch.randint(0, NI, (16,), generator=g)
        loss = model.loss(users, pos, neg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def all_scores(model: Backbone) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model.scorer()(torch.arange(NU))


@pytest.mark.parametrize("name", NAMES)
def test_backbone_compact_equals_masked(name: str) -> None:
    us, vs = random_sizes()
    masked = build(name)
    masked.set_sizes(us, vs)
    compact = to_compact(copy.deepcopy(masked))
    assert is_compact(compact) and not is_compact(masked)
    assert all(isinstance(t, CompactEmbedding) for t in compact.embedding_tables())
    assert compact.embedding_params_used() == masked.embedding_params_used()
    assert compact.dense_params() == masked.dense_params()
    torch.testing.assert_close(all_scores(compact), all_scores(masked), rtol=0, atol=1e-6)

    emb_numel = sum(t.values.numel() for t in compact.embedding_tables())
    assert emb_numel == masked.embedding_params_used()
    assert sum(p.numel() for p in compact.parameters()) == emb_numel + masked.dense_params()

    lm, lc = run_steps(masked), run_steps(compact)
    np.testing.assert_allclose(lc, lm, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(all_scores(compact), all_scores(masked), rtol=1e-4, atol=1e-5)
    for tm, tc in zip(masked.embedding_tables(), compact.embedding_tables(), strict=True):
        torch.testing.assert_close(tc.full(), tm.full(), rtol=1e-5, atol=1e-6)


def test_adam_state_follows_the_budget() -> None:
    us, vs = random_sizes()
    model = build("mf")
    model.set_sizes(us, vs)
    to_compact(model)
    run_steps(model, steps=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.loss(torch.tensor([0]), torch.tensor([1]), torch.tensor([2])).backward()
    opt.step()
    state_numel = sum(s["exp_avg"].numel() + s["exp_avg_sq"].numel() for s in opt.state.values())
    assert state_numel == 2 * int(us.sum() + vs.sum())


@pytest.mark.parametrize("name", ["ncf", "lightgcn"])
def test_round_trip_and_load_weights_either_form(name: str) -> None:
    us, vs = random_sizes()
    masked = build(name)
    masked.set_sizes(us, vs)
    ref = all_scores(masked)
    compact = to_compact(copy.deepcopy(masked))
    back = to_masked(copy.deepcopy(compact))
    assert not is_compact(back)
    assert torch.equal(all_scores(back), ref)

    # a compact state into a fresh masked model, and a masked state into a compact model
    fresh = build(name, seed=9)
    load_weights(fresh, compact.state_dict())
    assert is_compact(fresh) and torch.equal(all_scores(fresh), all_scores(compact))
    fresh2 = to_compact(build(name, seed=9))
    load_weights(fresh2, masked.state_dict())
    assert not is_compact(fresh2)
    torch.testing.assert_close(all_scores(fresh2), ref, rtol=0, atol=1e-6)
    with pytest.raises(RuntimeError):
        load_weights(build(name), {"nonsense": torch.zeros(1)})
