"""The fused NGCF layer equals the same layer written with autograd, gradients included."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from embudget.models.graph import SparseAdjacency
from embudget.models.ngcf_layer import bi_interaction, keep_mask

N_USERS, N_ITEMS, D = 37, 29, 16


def _graph() -> SparseAdjacency:
    rng = np.random.default_rng(3)
    r = sp.random(N_USERS, N_ITEMS, density=0.15, random_state=rng, format="csr")
    return SparseAdjacency.ngcf(r).double()


def _reference(e, a_dense, w_gc, w_bi, b, keep, p):  # type: ignore[no-untyped-def]
    side = a_dense @ e
    h = side @ w_gc + (e * side) @ w_bi + b
    out = F.leaky_relu(h, 0.2)
    if keep is not None:
        out = out * keep.double() / (1.0 - p)
    return out


@pytest.mark.parametrize("dropout", [False, True])
def test_forward_and_gradients_match_autograd(dropout: bool) -> None:
    torch.manual_seed(0)
    graph = _graph()
    n = graph.n
    leaves = [
        torch.randn(n, D, dtype=torch.float64, requires_grad=True),
        torch.randn(D, D, dtype=torch.float64, requires_grad=True),
        torch.randn(D, D, dtype=torch.float64, requires_grad=True),
        torch.randn(1, D, dtype=torch.float64, requires_grad=True),
    ]
    p = 0.3
    keep = keep_mask((n, D), p, torch.Generator().manual_seed(1), torch.device("cpu"))
    keep_or_none = keep if dropout else None
    upstream = torch.randn(n, D, dtype=torch.float64)

    e, w_gc, w_bi, b = leaves
    fused = bi_interaction(e, graph.tensor(), graph.tensor_t(), w_gc, w_bi, b, keep_or_none, p)
    grads = torch.autograd.grad((fused * upstream).sum(), leaves)
    ref = _reference(e, graph.to_dense(), w_gc, w_bi, b, keep_or_none, p)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), leaves)

    torch.testing.assert_close(fused, ref, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_keep_mask_rate_and_determinism() -> None:
    shape = (400, 500)
    a = keep_mask(shape, 0.1, torch.Generator().manual_seed(5), torch.device("cpu"))
    b = keep_mask(shape, 0.1, torch.Generator().manual_seed(5), torch.device("cpu"))
    assert a.dtype == torch.bool and torch.equal(a, b)
    # 200,000 draws: the kept fraction is 0.9 within 5 standard errors (0.0034).
    assert abs(a.double().mean().item() - 0.9) < 5 * (0.9 * 0.1 / a.numel()) ** 0.5
    assert keep_mask(shape, 0.0, None, torch.device("cpu")).all()
