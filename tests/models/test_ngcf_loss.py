"""NGCF's distinct-row loss equals the plain autograd loss up to rounding."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from embudget.data import BPRSampler, load_dataset
from embudget.data.dataset import Dataset
from embudget.models import NGCF, build_model
from embudget.models.ngcf_loss import ngcf_loss, ngcf_loss_reference


@pytest.fixture(scope="module")
def mini() -> Dataset:
    return load_dataset("gowalla-mini")


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("d_max", "batch", "sized"), [(16, 300, False), (24, 5000, True)])
def test_ngcf_loss_matches_autograd(mini: Dataset, d_max: int, batch: int, sized: bool) -> None:
    # 5,000 triples over 800 users and 993 items name most rows many times
    gen = torch.Generator().manual_seed(1)
    fast = build_model("ngcf", mini.n_users, mini.n_items, mini.train, d_max, generator=gen)
    assert isinstance(fast, NGCF)
    if sized:
        rng = np.random.default_rng(0)
        fast.set_sizes(rng.integers(1, d_max + 1, mini.n_users), rng.integers(1, 4, mini.n_items))
    plain = copy.deepcopy(fast)
    fast.train(), plain.train()
    sampler = BPRSampler(mini.train, batch_users=batch, rng=np.random.default_rng(3))
    opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in (fast, plain)]
    for step in range(3):  # the weights move between steps
        users, pos, neg = sampler.sample()
        fast.reseed(step), plain.reseed(step)  # the same dropout draws for both
        a = fast.loss(users, pos, neg)
        b = plain.loss_reference(users, pos, neg)
        for opt, loss in zip(opts, (a, b), strict=True):
            opt.zero_grad()
            loss.backward()
        _close(a, b)
        for pa, pb in zip(fast.parameters(), plain.parameters(), strict=True):
            assert pa.grad is not None and pb.grad is not None
            _close(pa.grad, pb.grad)
        for opt in opts:
            opt.step()


def test_ngcf_loss_on_zero_and_repeated_rows() -> None:
    # a node whose propagated row is (almost) zero is divided by eps, as F.normalize does
    gen = torch.Generator().manual_seed(0)
    layers = [torch.randn(7, 4, generator=gen, dtype=torch.float64) for _ in range(3)]
    layers[1][2] = 0.0
    layers[2][5] = 1e-14  # below eps too
    users = torch.tensor([0, 0, 1, 2, 0])
    pos = torch.tensor([0, 1, 1, 2, 3])  # items are rows 3..6
    neg = torch.tensor([2, 2, 3, 0, 0])
    reg = 0.3

    a_in = [t.clone().requires_grad_(True) for t in layers]
    b_in = [t.clone().requires_grad_(True) for t in layers]
    a = ngcf_loss(a_in, users, pos, neg, n_users=3, reg=reg)
    b = ngcf_loss_reference(b_in, users, pos, neg, n_users=3, reg=reg)
    (2.5 * a).backward()
    (2.5 * b).backward()  # an upstream gradient other than 1
    torch.testing.assert_close(a, b)
    for ta, tb in zip(a_in, b_in, strict=True):
        assert ta.grad is not None and tb.grad is not None
        torch.testing.assert_close(ta.grad, tb.grad)
    assert a_in[1].grad is not None and a_in[1].grad[2].abs().sum() > 0  # g / eps, not zero


def test_ngcf_loss_passes_gradcheck() -> None:
    gen = torch.Generator().manual_seed(2)
    layers = tuple(
        torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(4)
    )
    users, pos, neg = torch.tensor([0, 1, 1]), torch.tensor([0, 2, 1]), torch.tensor([1, 1, 2])

    def fn(*ls: torch.Tensor) -> torch.Tensor:
        return ngcf_loss(list(ls), users, pos, neg, n_users=3, reg=0.1)

    assert torch.autograd.gradcheck(fn, layers)
