"""Normalised user-item adjacency for graph backbones, with a hand-written sparse backward.

The bipartite graph over N = |U| + |V| nodes (users first, then items) is built from the
training CSR. LightGCN uses the symmetric Â = D^-1/2 A D^-1/2 (no self loops); NGCF uses the
row-normalised Â = D^-1 (A + I) (bet.md §8.3-8.4). Â is held as torch sparse CSR components
registered as (non-persistent) buffers, so it follows ``module.to(device)`` and ``.double()``.

The product Â·X goes through :class:`SpMM`, whose backward is Âᵀ·grad with a precomputed
transpose (Â itself when symmetric). Kernel choice on the 2-core CPU, Gowalla P (N = 70,839,
~1.03 M non-zeros, d = 128): ``torch.sparse.mm(csr, X)``, ``csr @ X`` and ``torch.mm`` all
dispatch to the same MKL kernel (~40 ms); int32 indices avoid a per-call index conversion;
``torch.addmm(out, csr, X, beta=0, out=out)`` into an uninitialised output skips a zero-fill
and a copy (~25 ms, see :func:`sparse_dense_mm`); scipy's single-threaded CSR product took
~60-95 ms and splitting it over two Python threads did not help; a COO tensor took ~110-150 ms.
Autograd through ``torch.sparse.mm`` on COO is kept only as the benchmark baseline
(``backend="coo_autograd"``).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from embudget.errors import ConfigError

Backend = Literal["csr", "coo_autograd"]
BACKENDS: tuple[str, ...] = ("csr", "coo_autograd")


# --- scipy construction ------------------------------------------------------------------
def bipartite_adjacency(train: sp.spmatrix) -> sp.csr_matrix:
    """Binary symmetric (N × N) adjacency [[0, R], [Rᵀ, 0]] of a users × items matrix R."""
    r = sp.csr_matrix(train, dtype=np.float32)
    r.sum_duplicates()
    r.data[:] = 1.0
    r.eliminate_zeros()
    a = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    a.sort_indices()
    return a


def _inv_power(deg: np.ndarray, power: float) -> np.ndarray:
    """deg**power where deg > 0, 0 elsewhere (zero-degree nodes stay zero, never NaN)."""
    out = np.zeros(deg.shape, dtype=np.float64)
    nz = deg > 0
    out[nz] = deg[nz] ** power
    return out


def sym_norm_adjacency(train: sp.spmatrix) -> sp.csr_matrix:
    """LightGCN's Â = D^-1/2 A D^-1/2 over the bipartite graph, float32 CSR, no self loops."""
    a = bipartite_adjacency(train)
    d = _inv_power(np.asarray(a.sum(axis=1), dtype=np.float64).ravel(), -0.5)
    rows = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
    a.data = (d[rows] * d[a.indices]).astype(np.float32)
    return a


def row_norm_adjacency(train: sp.spmatrix) -> sp.csr_matrix:
    """NGCF's Â = D^-1 (A + I) over the bipartite graph, float32 CSR (rows sum to 1)."""
    a = bipartite_adjacency(train)
    a = (a + sp.eye(a.shape[0], dtype=np.float32, format="csr")).tocsr()
    a.sort_indices()
    d = _inv_power(np.asarray(a.sum(axis=1), dtype=np.float64).ravel(), -1.0)
    rows = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
    a.data = d[rows].astype(np.float32)
    return a


# --- autograd function -------------------------------------------------------------------
def _csr_tensor(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, n: int) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, val, (n, n), check_invariants=False)


def sparse_dense_mm(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Â·X for sparse CSR Â and dense X (no autograd).

    On CPU, ``torch.sparse.mm`` zero-fills a result and then copies it into the output (about
    a third of its time at Gowalla size); ``addmm`` with ``beta=0`` into an uninitialised
    output skips both. ``beta=0`` ignores the input, NaN included (``torch.addmm`` docs).
    """
    x = x.contiguous()
    if x.device.type != "cpu":
        return torch.sparse.mm(a, x)
    out = torch.empty((a.shape[0], x.shape[1]), dtype=x.dtype, device=x.device)
    return torch.addmm(out, a, x, beta=0, out=out)


class SpMM(torch.autograd.Function):
    """Y = Â·X for a constant sparse Â; backward is Âᵀ·grad with Âᵀ given up front."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, a_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.a_t = a_t
        return sparse_dense_mm(a, x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, torch.Tensor | None]:
        if not ctx.needs_input_grad[2]:
            return None, None, None
        return None, None, sparse_dense_mm(ctx.a_t, grad)


def spmm(a: torch.Tensor, a_t: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """Â·X with the hand-written backward; ``a_t=None`` means Â is symmetric."""
    return SpMM.apply(a, a if a_t is None else a_t, x)


# --- module ------------------------------------------------------------------------------
class SparseAdjacency(nn.Module):
    """A constant (N × N) sparse matrix Â that multiplies dense (N × d) tables.

    Args:
        matrix: the normalised adjacency (scipy, square).
        symmetric: whether Â = Âᵀ; if so the backward reuses Â (unless its values are
            replaced) and only the transpose permutation is stored.

    Node dropout (NGCF) zeroes non-zeros of Â with probability ``p`` and rescales the rest by
    1/(1-p); the sparsity pattern is kept so the transpose stays a gather of the values.
    """

    crow: torch.Tensor
    col: torch.Tensor
    val: torch.Tensor
    t_crow: torch.Tensor
    t_col: torch.Tensor
    t_perm: torch.Tensor

    def __init__(self, matrix: sp.spmatrix, *, symmetric: bool) -> None:
        super().__init__()
        m = sp.csr_matrix(matrix, dtype=np.float32)
        if m.shape[0] != m.shape[1]:
            raise ConfigError(f"adjacency must be square, got shape {m.shape}")
        m.sort_indices()
        self.n = int(m.shape[0])
        self.nnz = int(m.nnz)
        self.symmetric = bool(symmetric)
        self.backend: Backend = "csr"
        # int32 indices when they fit: MKL's sparse kernels take 32-bit indices, and int64 ones
        # are converted (copied) on every product.
        idx = np.int32 if max(self.nnz, self.n) < 2**31 else np.int64
        self.register_buffer("crow", torch.from_numpy(m.indptr.astype(idx)), False)
        self.register_buffer("col", torch.from_numpy(m.indices.astype(idx)), False)
        self.register_buffer("val", torch.from_numpy(m.data.copy()), False)
        # For each non-zero of Âᵀ (in CSR order), its position in Â: the transpose of any
        # values on Â's pattern (e.g. after node dropout) is then one gather.
        pos = sp.csr_matrix(
            (np.arange(1, self.nnz + 1, dtype=np.int64), m.indices, m.indptr), shape=m.shape
        )
        pt = pos.T.tocsr()
        pt.sort_indices()
        self.register_buffer("t_perm", torch.from_numpy(pt.data.astype(np.int64) - 1), False)
        if not self.symmetric:
            self.register_buffer("t_crow", torch.from_numpy(pt.indptr.astype(idx)), False)
            self.register_buffer("t_col", torch.from_numpy(pt.indices.astype(idx)), False)
        self._coo: torch.Tensor | None = None

    @classmethod
    def lightgcn(cls, train: sp.spmatrix) -> SparseAdjacency:
        """D^-1/2 A D^-1/2 (symmetric)."""
        return cls(sym_norm_adjacency(train), symmetric=True)

    @classmethod
    def ngcf(cls, train: sp.spmatrix) -> SparseAdjacency:
        """D^-1 (A + I) (not symmetric)."""
        return cls(row_norm_adjacency(train), symmetric=False)

    def _apply(self, fn: Any, recurse: bool = True) -> SparseAdjacency:
        self._coo = None  # cached baseline tensor belongs to the old device/dtype
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"n={self.n}, nnz={self.nnz}, symmetric={self.symmetric}, backend={self.backend}"

    # --- tensors -----------------------------------------------------------------------
    def tensor(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """Â as a torch sparse CSR tensor (optionally with replaced non-zero values)."""
        return _csr_tensor(self.crow, self.col, self.val if values is None else values, self.n)

    def tensor_t(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """Âᵀ as sparse CSR; ``values`` are Â's non-zeros (in Â's order)."""
        if self.symmetric:
            # Same pattern as Â; the values are only unchanged when Â's own are used.
            return self.tensor(None if values is None else values[self.t_perm])
        v = self.val if values is None else values
        return _csr_tensor(self.t_crow, self.t_col, v[self.t_perm], self.n)

    def to_dense(self) -> torch.Tensor:
        return self.tensor().to_dense()

    def coo(self) -> torch.Tensor:
        """Â as a coalesced COO tensor (the plain-autograd benchmark baseline)."""
        if self._coo is None:
            self._coo = self.tensor().to_sparse_coo().coalesce()
        return self._coo

    def dropped_values(self, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Â's non-zeros with node dropout: each kept with prob 1-p and scaled by 1/(1-p)."""
        keep = torch.rand(self.nnz, generator=generator, device=self.val.device) >= p
        return self.val * keep.to(self.val.dtype) / (1.0 - p)

    # --- product -----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """Â·X (N × d); ``values`` replaces Â's non-zeros (e.g. after node dropout)."""
        if x.shape[0] != self.n:
            raise ValueError(f"expected a table with {self.n} rows, got shape {tuple(x.shape)}")
        if self.backend == "coo_autograd":
            a = self.coo() if values is None else self.tensor(values).to_sparse_coo()
            return torch.sparse.mm(a, x)
        a = self.tensor(values)
        if not (torch.is_grad_enabled() and x.requires_grad):
            return sparse_dense_mm(a, x)  # no backward: skip building Âᵀ
        a_t = None if self.symmetric and values is None else self.tensor_t(values)
        return spmm(a, a_t, x)
