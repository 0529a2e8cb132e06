"""BPR matrix factorisation (bet.md §8.2): ŷ_uv = ⟨e_u, e_v⟩ over masked embeddings."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from embudget.models.base import Backbone, Scorer, bpr_loss, common_width, dot_scorer
from embudget.models.fused import fusable, mf_loss
from embudget.tables.sized import SizedEmbedding


class MF(Backbone):
    """Dot-product MF with one user and one item table.

    Args:
        n_users, n_items: table rows.
        d_max: full embedding size.
        reg: L2 weight; the term is reg · (‖e_u‖² + ‖e_pos‖² + ‖e_neg‖²) / batch.
        generator: makes the N(0, 0.01²) initialisation deterministic.
    """

    name = "mf"
    defaults: ClassVar[dict[str, float | int]] = {"reg": 1e-4}

    def __init__(
        self,
        n_users: int,
        n_items: int,
        d_max: int = 128,
        *,
        reg: float = 1e-4,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(n_users, n_items, d_max)
        self.reg = float(reg)
        self.user_emb = SizedEmbedding(n_users, d_max)
        self.item_emb = SizedEmbedding(n_items, d_max)
        for t in (self.user_emb, self.item_emb):
            nn.init.normal_(t.weight, 0.0, 0.01, generator=generator)

    def user_tables(self) -> list[SizedEmbedding]:
        return [self.user_emb]

    def item_tables(self) -> list[SizedEmbedding]:
        return [self.item_emb]

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        if fusable(self.user_emb) and fusable(self.item_emb):
            # the same value and gradients as loss_reference, bit for bit, in fewer passes
            return mf_loss(self.user_emb, self.item_emb, users, pos, neg, self.reg)
        return self.loss_reference(users, pos, neg)

    def loss_reference(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> torch.Tensor:
        """The loss through plain autograd (any table storage, e.g. compact)."""
        eu, ep, en = self.user_emb(users), self.item_emb(pos), self.item_emb(neg)
        bpr = bpr_loss((eu * ep).sum(-1), (eu * en).sum(-1))
        l2 = eu.square().sum() + ep.square().sum() + en.square().sum()
        return bpr + self.reg * l2 / users.shape[0]

    def scorer(self) -> Scorer:
        with torch.no_grad():
            w = common_width(self.user_emb, self.item_emb)  # columns past it are all zero
            return dot_scorer(self.user_emb.full(w), self.item_emb.full(w))
