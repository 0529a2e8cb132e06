"""The fused MF and LightGCN losses equal plain autograd bit for bit (values and gradients)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from embudget.data import BPRSampler, load_dataset
from embudget.data.dataset import Dataset
from embudget.models import build_model
from embudget.training.adam import FusedAdam


@pytest.fixture(scope="module")
def mini() -> Dataset:
    return load_dataset("gowalla-mini")


@pytest.mark.parametrize("name", ["mf", "lightgcn"])
@pytest.mark.parametrize(
    ("d_max", "batch", "sized"),
    [(32, 256, False), (32, 256, True), (16, 3000, True), (24, 5000, False)],
)
def test_fused_loss_matches_autograd_bitwise(
    mini: Dataset, name: str, d_max: int, batch: int, sized: bool
) -> None:
    # batches of 3,000 and 5,000 triples over 800 users repeat users and items many times,
    # so the gathers' backward must add duplicates in autograd's order
    gen = torch.Generator().manual_seed(1)
    fused = build_model(name, mini.n_users, mini.n_items, mini.train, d_max, generator=gen)
    if sized:
        rng = np.random.default_rng(0)
        fused.set_sizes(
            rng.integers(1, d_max + 1, mini.n_users), rng.integers(1, d_max // 2, mini.n_items)
        )
    plain = copy.deepcopy(fused)
    sampler = BPRSampler(mini.train, batch_users=batch, rng=np.random.default_rng(3))
    opts = [FusedAdam(m.parameters(), lr=0.05) for m in (fused, plain)]
    for _ in range(4):  # several steps: the weights move, the masks stay
        users, pos, neg = sampler.sample()
        a = fused.loss(users, pos, neg)
        b = plain.loss_reference(users, pos, neg)  # type: ignore[operator]
        for opt, loss in zip(opts, (a, b), strict=True):
            opt.zero_grad()
            loss.backward()
        assert torch.equal(a, b)
        for pa, pb in zip(fused.parameters(), plain.parameters(), strict=True):
            assert pa.grad is not None and pb.grad is not None
            assert torch.equal(pa.grad, pb.grad)
        for opt in opts:
            opt.step()
    for pa, pb in zip(fused.parameters(), plain.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_fused_loss_masked_columns_get_no_gradient(mini: Dataset) -> None:
    m = build_model("mf", mini.n_users, mini.n_items, mini.train, 16)
    m.set_sizes(4, 8)
    users, pos, neg = BPRSampler(mini.train, 500, rng=np.random.default_rng(0)).sample()
    m.loss(users, pos, neg).backward()
    assert m.user_emb.weight.grad is not None and m.item_emb.weight.grad is not None
    assert not m.user_emb.weight.grad[:, 4:].any()
    assert not m.item_emb.weight.grad[:, 8:].any()
    assert m.user_emb.weight.grad[:, :4].any()


@pytest.mark.parametrize("name", ["mf", "lightgcn"])
def test_fused_loss_matches_autograd_on_compact_tables(mini: Dataset, name: str) -> None:
    from embudget.tables.compact import to_compact

    gen = torch.Generator().manual_seed(2)
    fused = build_model(name, mini.n_users, mini.n_items, mini.train, 16, generator=gen)
    rng = np.random.default_rng(1)
    fused.set_sizes(rng.integers(1, 5, mini.n_users), rng.integers(1, 9, mini.n_items))
    to_compact(fused)
    plain = copy.deepcopy(fused)
    sampler = BPRSampler(mini.train, batch_users=2000, rng=np.random.default_rng(4))
    opts = [FusedAdam(m.parameters(), lr=0.05) for m in (fused, plain)]
    for _ in range(3):
        users, pos, neg = sampler.sample()
        reference = plain.loss_reference(users, pos, neg)  # type: ignore[operator]
        losses = fused.loss(users, pos, neg), reference
        for opt, loss in zip(opts, losses, strict=True):
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert torch.equal(*losses)
    for pa, pb in zip(fused.parameters(), plain.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_backward_blocks_cover_the_batch_once() -> None:
    from embudget.models.fused import BLOCK_ROWS, _blocks

    for device, n in (("cpu", 2 * BLOCK_ROWS + 5), ("cpu", 3), ("meta", 3 * BLOCK_ROWS)):
        blocks, buf = _blocks(torch.empty(n, 4, device=device))
        assert [i for sl in blocks for i in range(sl.start, sl.stop)] == list(range(n))
        assert buf.shape[0] == max(sl.stop - sl.start for sl in blocks)
        assert len(blocks) == (1 if device == "meta" else -(-n // BLOCK_ROWS))
