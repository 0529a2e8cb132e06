"""Normalised adjacencies against dense numpy, and the hand-written sparse backward."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from embudget.errors import ConfigError
from embudget.models.graph import (
    SparseAdjacency,
    bipartite_adjacency,
    row_norm_adjacency,
    sparse_dense_mm,
    spmm,
    sym_norm_adjacency,
)


def _tiny_train() -> sp.csr_matrix:
    # 4 users x 5 items; user 3 has no items and item 4 has no users (zero-degree nodes).
    r = np.array(
        [
            [1, 1, 0, 0, 0],
            [0, 1, 1, 1, 0],
            [1, 0, 0, 1, 0],
            [0, 0, 0, 0, 0],
        ],
        dtype=np.float32,
    )
    return sp.csr_matrix(r)


def _dense_adj(r: np.ndarray) -> np.ndarray:
    nu, ni = r.shape
    a = np.zeros((nu + ni, nu + ni))
    a[:nu, nu:] = r
    a[nu:, :nu] = r.T
    return a


def _dense_sym(r: np.ndarray) -> np.ndarray:
    a = _dense_adj(r)
    deg = a.sum(1)
    with np.errstate(divide="ignore"):
        d = np.where(deg > 0, deg**-0.5, 0.0)
    return d[:, None] * a * d[None, :]


def _dense_row(r: np.ndarray) -> np.ndarray:
    a = _dense_adj(r) + np.eye(sum(r.shape))
    return a / a.sum(1, keepdims=True)


def test_bipartite_layout() -> None:
    r = _tiny_train()
    a = bipartite_adjacency(r).toarray()
    np.testing.assert_array_equal(a, _dense_adj(r.toarray()))


def test_sym_norm_matches_dense_and_handles_zero_degree() -> None:
    r = _tiny_train()
    a = sym_norm_adjacency(r)
    assert a.dtype == np.float32 and a.shape == (9, 9)
    dense = a.toarray()
    assert np.isfinite(dense).all()
    np.testing.assert_allclose(dense, _dense_sym(r.toarray()), rtol=1e-6, atol=0)
    # Hand-computed entry: user 1 (deg 3) - item 1 (deg 2): 1/sqrt(6).
    assert dense[1, 4 + 1] == pytest.approx(1 / np.sqrt(6), rel=1e-6)
    assert not dense[3].any() and not dense[:, 3].any()  # isolated user
    assert not dense[4 + 4].any()  # isolated item
    np.testing.assert_array_equal(dense, dense.T)
    assert np.diag(dense).sum() == 0  # no self loops


def test_row_norm_matches_dense() -> None:
    r = _tiny_train()
    dense = row_norm_adjacency(r).toarray()
    np.testing.assert_allclose(dense, _dense_row(r.toarray()), rtol=1e-6, atol=0)
    np.testing.assert_allclose(dense.sum(1), 1.0, rtol=1e-6)
    assert dense[3, 3] == 1.0  # an isolated node keeps only its self loop
    assert dense[0, 0] == pytest.approx(1 / 3)  # user 0: 2 items + self


@settings(max_examples=25, deadline=None)
@given(
    nu=st.integers(1, 7),
    ni=st.integers(1, 7),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_normalisations_property(nu: int, ni: int, density: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    r = (rng.random((nu, ni)) < density).astype(np.float32)
    sym = sym_norm_adjacency(sp.csr_matrix(r)).toarray()
    row = row_norm_adjacency(sp.csr_matrix(r)).toarray()
    assert sym.shape == row.shape == (nu + ni, nu + ni)
    assert np.isfinite(sym).all() and np.isfinite(row).all()
    np.testing.assert_allclose(sym, _dense_sym(r), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(row, _dense_row(r), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["lightgcn", "ngcf"])
def test_module_dense_and_transpose(kind: str) -> None:
    r = _tiny_train()
    adj = getattr(SparseAdjacency, kind)(r)
    ref = _dense_sym(r.toarray()) if kind == "lightgcn" else _dense_row(r.toarray())
    np.testing.assert_allclose(adj.to_dense().numpy(), ref, rtol=1e-6)
    np.testing.assert_allclose(adj.tensor_t().to_dense().numpy(), ref.T, rtol=1e-6)
    g = torch.Generator().manual_seed(0)
    vals = adj.dropped_values(0.5, g)
    dropped = adj.tensor(vals).to_dense()
    np.testing.assert_array_equal(adj.tensor_t(vals).to_dense().numpy(), dropped.T.numpy())


@pytest.mark.parametrize("kind", ["lightgcn", "ngcf"])
def test_custom_backward_gradcheck(kind: str) -> None:
    adj = getattr(SparseAdjacency, kind)(_tiny_train()).double()
    assert adj.val.dtype == torch.float64
    x = torch.randn(adj.n, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: adj(t), (x,))
    # With replaced (node-dropped) values Â is no longer symmetric: the backward must follow.
    vals = adj.dropped_values(0.5, torch.Generator().manual_seed(1))
    assert torch.autograd.gradcheck(lambda t: adj(t, vals), (x,))
    # And against autograd through the dense matrix, with a non-trivial upstream gradient.
    up = torch.randn(adj.n, 3, dtype=torch.float64)
    (adj(x) * up).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    (adj.to_dense() @ x2 * up).sum().backward()
    assert x.grad is not None and x2.grad is not None
    torch.testing.assert_close(x.grad, x2.grad)


def test_spmm_uses_given_transpose() -> None:
    # A deliberately wrong "transpose" must show up in the gradient: backward really uses a_t.
    a = torch.tensor([[0.0, 2.0], [0.0, 0.0]]).to_sparse_csr()
    x = torch.ones(2, 1, requires_grad=True)
    spmm(a, a.to_dense().T.contiguous().to_sparse_csr(), x).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.tensor([[0.0], [2.0]]))


def test_node_dropout_values() -> None:
    train = sp.random(60, 80, density=0.2, format="csr", random_state=0, dtype=np.float32)
    adj = SparseAdjacency.ngcf(train)
    v1 = adj.dropped_values(0.1, torch.Generator().manual_seed(3))
    v2 = adj.dropped_values(0.1, torch.Generator().manual_seed(3))
    torch.testing.assert_close(v1, v2, rtol=0, atol=0)  # deterministic given the generator
    kept = v1 != 0
    assert 0.85 < kept.float().mean().item() < 0.95  # about 1 - p of ~2,000 non-zeros
    torch.testing.assert_close(v1[kept], adj.val[kept] / 0.9)


def test_coo_baseline_matches_csr() -> None:
    adj = SparseAdjacency.ngcf(_tiny_train())
    x = torch.randn(adj.n, 4, requires_grad=True)
    up = torch.randn(adj.n, 4)
    (adj(x) * up).sum().backward()
    assert x.grad is not None
    g_csr = x.grad.clone()
    adj.backend = "coo_autograd"
    x.grad = None
    y = adj(x)
    (y * up).sum().backward()
    torch.testing.assert_close(x.grad, g_csr)


def test_zero_degree_no_nan_in_propagation() -> None:
    adj = SparseAdjacency.lightgcn(_tiny_train())
    x = torch.randn(adj.n, 2, requires_grad=True)
    y = adj(adj(x))
    y.sum().backward()
    assert torch.isfinite(y).all() and x.grad is not None and torch.isfinite(x.grad).all()
    assert (y[3] == 0).all() and (x.grad[3] == 0).all()


def test_bad_input() -> None:
    with pytest.raises(ConfigError):
        SparseAdjacency(sp.csr_matrix((3, 4), dtype=np.float32), symmetric=False)
    adj = SparseAdjacency.lightgcn(_tiny_train())
    with pytest.raises(ValueError, match="rows"):
        adj(torch.zeros(adj.n + 1, 2))


def test_sparse_dense_mm_matches_dense() -> None:
    adj = SparseAdjacency.ngcf(_tiny_train())
    x = torch.randn(3, adj.n).T  # non-contiguous input
    for a in (adj.tensor(), adj.tensor_t()):
        out = sparse_dense_mm(a, x)
        assert out.shape == (adj.n, 3) and torch.isfinite(out).all()
        torch.testing.assert_close(out, a.to_dense() @ x)
