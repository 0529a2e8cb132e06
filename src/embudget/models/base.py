"""The contract every backbone follows.

A backbone owns one or more :class:`~embudget.tables.sized.SizedEmbedding` tables per entity type
(user, item), reads them only through ``table(ids)`` / ``table.full()`` so that the storage can
be swapped (masked or compact), and exposes:

- ``loss(users, pos, neg)``: mean BPR loss plus the backbone's L2 term (already / batch);
- ``scorer()``: under ``torch.no_grad()`` and ``eval()``, precompute whatever the full ranking
  needs (propagated tables, NCF projections) once, and return a function mapping a batch of
  user indices to a ``(batch, n_items)`` score matrix;
- ``set_sizes(user_sizes, item_sizes)``: change per-row sizes without rebuilding anything.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from embudget.tables.sized import SizedEmbedding, SizesLike

Scorer = Callable[[torch.Tensor], torch.Tensor]


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """mean softplus(ŷ_neg − ŷ_pos) = −mean log σ(ŷ_pos − ŷ_neg)."""
    return F.softplus(neg_scores - pos_scores).mean()


def common_width(*tables: SizedEmbedding) -> int:
    """The largest row size over ``tables``: past it every row of every table is zero, so
    propagation and scoring can run on that many columns instead of ``d_max``, exactly."""
    return max(t.width for t in tables)


def dot_scorer(users: torch.Tensor, items: torch.Tensor) -> Scorer:
    """Scores ⟨e_u, e_v⟩ of a batch of users against every item, from precomputed tables."""
    items_t = items.detach().T.contiguous()
    users = users.detach()

    def score(user_idx: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return users[user_idx.to(users.device)] @ items_t

    return score


class Backbone(nn.Module, ABC):
    """Base class of MF, NCF, NGCF and LightGCN."""

    #: registry name, e.g. "lightgcn"
    name: str = ""

    def __init__(self, n_users: int, n_items: int, d_max: int) -> None:
        super().__init__()
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        self.d_max = int(d_max)

    # --- tables ------------------------------------------------------------------------
    @abstractmethod
    def user_tables(self) -> list[SizedEmbedding]:
        """Every user ID-embedding table (1, or 2 for NCF)."""

    @abstractmethod
    def item_tables(self) -> list[SizedEmbedding]:
        """Every item ID-embedding table (1, or 2 for NCF)."""

    def set_sizes(self, user_sizes: SizesLike = None, item_sizes: SizesLike = None) -> None:
        """Per-row sizes for users and items (``None`` = full ``d_max``)."""
        for t in self.user_tables():
            t.set_sizes(user_sizes)
        for t in self.item_tables():
            t.set_sizes(item_sizes)

    def embedding_tables(self) -> Iterator[SizedEmbedding]:
        yield from self.user_tables()
        yield from self.item_tables()

    def embedding_params_used(self) -> int:
        """tables · Σ d_n: what the budget counts (each table's count is
        :func:`embudget.budget.usage.params_used` of its sizes)."""
        return sum(t.params_used() for t in self.embedding_tables())

    def dense_params(self) -> int:
        """Parameters outside the ID-embedding tables (NGCF transforms, NCF MLP, ...)."""
        emb = {id(t.weight) for t in self.embedding_tables()}
        return sum(p.numel() for p in self.parameters() if id(p) not in emb)

    # --- randomness used while training (dropout) --------------------------------------
    def reseed(self, seed: int) -> None:
        """Seed the model's own training-time random stream (no-op without dropout)."""

    def random_state(self) -> dict[str, torch.Tensor]:
        """State of the training-time random stream, for exact resume."""
        return {}

    def load_random_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`random_state` returned."""

    # --- training and scoring ----------------------------------------------------------
    @abstractmethod
    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """Mean BPR loss + L2 term for a batch of (user, positive, negative) index triples."""

    @abstractmethod
    def scorer(self) -> Scorer:
        """Return ``f(user_idx) -> (len(user_idx), n_items)`` scores; call under no_grad."""
