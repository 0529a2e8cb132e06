"""LightGCN (bet.md §8.3): mean of E^(0..L), E^(l+1) = Â E^(l), Â = D^-1/2 A D^-1/2."""

from __future__ import annotations

from typing import ClassVar

import scipy.sparse as sp
import torch
from torch import nn

from embudget.models.base import Backbone, Scorer, bpr_loss, common_width, dot_scorer
from embudget.models.fused import lightgcn_loss
from embudget.models.graph import SparseAdjacency
from embudget.tables.sized import SizedEmbedding


class LightGCN(Backbone):
    """LightGCN over the whole masked table, propagated with the hand-written sparse backward.

    Args:
        n_users, n_items: table rows; ``train`` must be ``(n_users, n_items)``.
        train: training interactions (scipy CSR) that define the graph.
        d_max: full embedding size.
        n_layers: propagation layers (3).
        reg: L2 weight on the masked ego embeddings, reg · Σ‖e^(0)‖² / batch (no ½).
        generator: makes the N(0, 0.01²) initialisation deterministic.
    """

    name = "lightgcn"
    defaults: ClassVar[dict[str, float | int]] = {"reg": 1e-4, "n_layers": 3}

    def __init__(
        self,
        n_users: int,
        n_items: int,
        train: sp.spmatrix,
        d_max: int = 128,
        *,
        n_layers: int = 3,
        reg: float = 1e-4,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(n_users, n_items, d_max)
        self.n_layers = int(n_layers)
        self.reg = float(reg)
        self.user_emb = SizedEmbedding(n_users, d_max)
        self.item_emb = SizedEmbedding(n_items, d_max)
        for t in (self.user_emb, self.item_emb):
            nn.init.normal_(t.weight, 0.0, 0.01, generator=generator)
        self.graph = SparseAdjacency.lightgcn(train)

    def user_tables(self) -> list[SizedEmbedding]:
        return [self.user_emb]

    def item_tables(self) -> list[SizedEmbedding]:
        return [self.item_emb]

    def ego(self) -> torch.Tensor:
        """E^(0): the masked user table stacked over the masked item table, ``(N, w)``.

        ``w`` is the largest size of any row: the columns past it are zero in E^(0) and so in
        every layer, and dropping them makes propagation ``w / d_max`` as costly (a 90 %
        sparsity table has w ≈ 32 of 128). Outputs are ``w`` wide; scores are unchanged.
        """
        w = common_width(self.user_emb, self.item_emb)
        return torch.cat([self.user_emb.full(w), self.item_emb.full(w)], dim=0)

    def propagate(self, ego: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (mean over layers) user and item embeddings."""
        e = self.ego() if ego is None else ego
        acc = e
        for _ in range(self.n_layers):
            e = self.graph(e)
            acc = acc + e
        out = acc / (self.n_layers + 1)
        return out[: self.n_users], out[self.n_users :]

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        if self.graph.backend == "csr" and self.graph.symmetric:
            # the same value and gradients as loss_reference, bit for bit, in fewer passes
            return lightgcn_loss(
                self.ego(), self.graph.tensor(), self.n_layers, self.n_users,
                users, pos, neg, self.reg,
            )  # fmt: skip
        return self.loss_reference(users, pos, neg)

    def loss_reference(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> torch.Tensor:
        """The loss through plain autograd (and the benchmark's COO baseline)."""
        ego = self.ego()
        fu, fi = self.propagate(ego)
        eu, ep, en = fu[users], fi[pos], fi[neg]
        bpr = bpr_loss((eu * ep).sum(-1), (eu * en).sum(-1))
        ego_u, ego_i = ego[: self.n_users], ego[self.n_users :]
        l2 = ego_u[users].square().sum() + ego_i[pos].square().sum() + ego_i[neg].square().sum()
        return bpr + self.reg * l2 / users.shape[0]

    def scorer(self) -> Scorer:
        with torch.no_grad():
            fu, fi = self.propagate()  # once per evaluation pass
        return dot_scorer(fu, fi)
