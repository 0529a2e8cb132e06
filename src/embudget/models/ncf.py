"""NCF / NeuMF (bet.md §8.5): GMF and MLP branches, each with its own user and item table.

ŷ = w_outᵀ [ReLU(W1 [e_u^mlp ; e_v^mlp] + b1) ; e_u^gmf ⊙ e_v^gmf] + b_out, trained with BPR.
Full ranking never materialises more than a bounded ``(users, items, d_max)`` chunk: with
W1 = [W1u | W1v], a_u = W1u e_u + b1 and c_v = W1v e_v are precomputed and only
ReLU(a_u + c_v) is formed, chunk by chunk; the GMF term is one matrix product.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from embudget.models.base import Backbone, Scorer, bpr_loss
from embudget.tables.sized import SizedEmbedding

#: memory bound of one (users, items, d_max) float32 chunk in :meth:`NCF.scorer`. Small enough
#: to stay in cache: on Gowalla (one thread) 4 MiB chunks score ~4x faster than 256 MiB ones
#: (benchmarks/bench_ncf_score.py, BENCHMARKS.md); the exact chunk shape matters little.
SCORE_CHUNK_BYTES = 4 * 2**20
#: at most this many users per chunk, so a chunk spans many items (32 x 256 at 4 MiB)
_CHUNK_USERS = 32


def _default_linear_init(layer: nn.Linear, generator: torch.Generator | None) -> None:
    """PyTorch's default nn.Linear initialisation, drawn from ``generator``."""
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    bound = 1.0 / math.sqrt(layer.in_features)
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


class NCF(Backbone):
    """NeuMF with GMF and MLP tables; in ``shared`` budget mode one size per entity for both.

    Args:
        n_users, n_items: table rows.
        d_max: full embedding size (W1 maps 2·d_max → d_max, w_out 2·d_max → 1).
        reg: L2 weight over all six masked embeddings of a triple, / batch.
        generator: makes initialisation deterministic (Xavier-uniform tables, default linears).
    """

    name = "ncf"
    defaults: ClassVar[dict[str, float | int]] = {"reg": 1e-2}

    def __init__(
        self,
        n_users: int,
        n_items: int,
        d_max: int = 128,
        *,
        reg: float = 1e-2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(n_users, n_items, d_max)
        self.reg = float(reg)
        d = self.d_max
        self.user_gmf = SizedEmbedding(n_users, d)
        self.user_mlp = SizedEmbedding(n_users, d)
        self.item_gmf = SizedEmbedding(n_items, d)
        self.item_mlp = SizedEmbedding(n_items, d)
        self.mlp = nn.Linear(2 * d, d)
        self.out = nn.Linear(2 * d, 1)
        with torch.no_grad():
            for t in (self.user_gmf, self.user_mlp, self.item_gmf, self.item_mlp):
                nn.init.xavier_uniform_(t.weight, generator=generator)
            _default_linear_init(self.mlp, generator)
            _default_linear_init(self.out, generator)
        self.score_chunk_bytes = SCORE_CHUNK_BYTES

    def user_tables(self) -> list[SizedEmbedding]:
        return [self.user_gmf, self.user_mlp]

    def item_tables(self) -> list[SizedEmbedding]:
        return [self.item_gmf, self.item_mlp]

    def _pair_scores(
        self, ug: torch.Tensor, um: torch.Tensor, vg: torch.Tensor, vm: torch.Tensor
    ) -> torch.Tensor:
        z = torch.relu(self.mlp(torch.cat([um, vm], dim=-1)))
        return self.out(torch.cat([z, ug * vg], dim=-1)).squeeze(-1)

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        ug, um = self.user_gmf(users), self.user_mlp(users)
        pg, pm = self.item_gmf(pos), self.item_mlp(pos)
        ng, nm = self.item_gmf(neg), self.item_mlp(neg)
        bpr = bpr_loss(self._pair_scores(ug, um, pg, pm), self._pair_scores(ug, um, ng, nm))
        l2 = sum(t.square().sum() for t in (ug, um, pg, pm, ng, nm))
        return bpr + self.reg * l2 / users.shape[0]

    def scorer(self) -> Scorer:
        d = self.d_max
        with torch.no_grad():
            w1 = self.mlp.weight.detach()
            w1u, w1v = w1[:, :d], w1[:, d:]
            w_z = self.out.weight.detach()[0, :d]
            w_g = self.out.weight.detach()[0, d:]
            b_out = self.out.bias.detach()
            c_v = self.item_mlp.full() @ w1v.T  # (n_items, d)
            vg_t = self.item_gmf.full().T.contiguous()  # (d, n_items)
        per_elem = c_v.element_size() * d
        max_rows = max(1, self.score_chunk_bytes // per_elem)  # (user, item) pairs per chunk

        def score(user_idx: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                idx = user_idx.to(c_v.device)
                a_u = self.user_mlp(idx) @ w1u.T + self.mlp.bias  # (B, d)
                out = (self.user_gmf(idx) * w_g) @ vg_t + b_out  # GMF part, (B, n_items)
                n_items = c_v.shape[0]
                ub = max(1, min(len(idx), _CHUNK_USERS, max_rows))
                ib = max(1, min(n_items, max_rows // ub))
                for u0 in range(0, len(idx), ub):
                    a = a_u[u0 : u0 + ub, None, :]
                    for i0 in range(0, n_items, ib):
                        z = torch.relu_(a + c_v[None, i0 : i0 + ib, :])
                        out[u0 : u0 + ub, i0 : i0 + ib] += z @ w_z
                return out

        return score
