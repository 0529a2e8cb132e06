"""NGCF's BPR loss with a hand-written backward, computed once per distinct row (bet.md §8.4).

The final embedding of a node is concat[E^(0), E^(1)/‖E^(1)‖, ..., E^(L)/‖E^(L)‖], (L + 1)·d
wide. Through autograd the loss gathers that 512-wide row for every user, positive and negative
of the batch (30,000 rows for a 10,000-triple batch), normalises each gathered row, concatenates
them, and differentiates every one of those steps with fresh (30,000 × 512) tensors. On small
data, where a batch names each node dozens of times, that batch-side work was ~95 % of an NGCF
step (gowalla-mini: 321 ms, LightGCN's step 20 ms; BENCHMARKS.md, "NGCF's loss once per
distinct batch row").

Here the rows are normalised once per *distinct* node of the batch, the BPR and L2 terms read
those rows through the batch's indices, and the backward accumulates each distinct row's
gradient in one (m × (L + 1)·d) buffer before the normalisation's backward. The value and the
gradients are those of :func:`ngcf_loss_reference` (plain autograd) up to floating-point
rounding (sums are taken in another order), checked in ``tests/models/test_ngcf_loss.py``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from embudget.models.base import bpr_loss
from embudget.models.fused import scatter_rows

#: F.normalize's default eps: a row is divided by max(‖x‖, eps).
_EPS = 1e-12


class _NGCFLoss(torch.autograd.Function):
    """loss = mean softplus(ŷ_neg − ŷ_pos) + reg · Σ‖f‖² / b over the batch's final rows."""

    @staticmethod
    def forward(
        ctx: Any,
        reg: float,
        batch: int,
        rows: torch.Tensor,
        where: torch.Tensor,
        *layers: torch.Tensor,
    ) -> torch.Tensor:
        # rows: the distinct nodes of the batch (m,); where: each triple member's position in
        # rows (3b,), users then positives then negatives.
        parts = [layers[0].index_select(0, rows)]
        norms = []
        for t in layers[1:]:
            x = t.index_select(0, rows)
            n = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min_(_EPS)
            norms.append(n)  # max(‖x‖, eps): equal to eps exactly where the clamp holds
            parts.append(x.div_(n))
        f = torch.cat(parts, dim=1)
        iu, ip, ineg = where.split(batch)
        fu = f.index_select(0, iu)
        # ŷ_neg − ŷ_pos = ⟨f_u, f_neg − f_pos⟩: one product pass instead of two
        gap = f.index_select(0, ineg).sub_(f.index_select(0, ip))
        diff = (fu * gap).sum(1)
        counts = torch.bincount(where, minlength=rows.numel()).to(f.dtype)
        l2 = torch.dot(counts, (f * f).sum(1))
        ctx.reg, ctx.batch, ctx.n_nodes = reg, batch, layers[0].shape[0]
        ctx.save_for_backward(rows, where, f, fu, gap, diff, counts, *norms)
        return F.softplus(diff).mean() + reg * l2 / batch

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        rows, where, f, fu, gap, diff, counts, *norms = ctx.saved_tensors
        b, reg = ctx.batch, ctx.reg
        iu, ip, ineg = where.split(b)
        g_diff = torch.sigmoid(diff).mul_(g / b).unsqueeze(1)  # ∂L/∂ŷ_neg = −∂L/∂ŷ_pos
        # ∂L/∂f: the L2 term, then each triple's BPR term added at its distinct rows
        grad_f = f * (counts * (2.0 * reg / b) * g).unsqueeze(1)
        scatter_rows(grad_f, iu, gap * g_diff)
        g_v = fu * g_diff
        scatter_rows(grad_f, ineg, g_v)
        scatter_rows(grad_f, ip, g_v, alpha=-1.0)
        # back through the normalisation of layers 1..L, then onto each layer's rows
        d = f.shape[1] // (len(norms) + 1)
        grads: list[torch.Tensor | None] = []
        for k in range(len(norms) + 1):
            if not ctx.needs_input_grad[4 + k]:
                grads.append(None)
                continue
            gk = grad_f[:, k * d : (k + 1) * d]
            if k > 0:
                z, n = f[:, k * d : (k + 1) * d], norms[k - 1]
                # d(x / max(‖x‖, eps)) = (g − z ⟨g, z⟩) / ‖x‖, or g / eps where the clamp holds
                along = torch.where(n > _EPS, (gk * z).sum(1, keepdim=True), 0.0)
                gk = (gk - z * along) / n
            out = gk.new_zeros((ctx.n_nodes, d))
            grads.append(out.index_copy_(0, rows, gk))
        return (None, None, None, None, *grads)


def ngcf_loss(
    layers: list[torch.Tensor],
    users: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    n_users: int,
    reg: float,
) -> torch.Tensor:
    """NGCF's BPR + L2 loss from its layers [E^(0), ..., E^(L)] (each (N × d), users first)."""
    rows, where = torch.unique(_batch_rows(users, pos, neg, n_users), return_inverse=True)
    out: torch.Tensor = _NGCFLoss.apply(float(reg), users.shape[0], rows, where, *layers)
    return out


def _batch_rows(
    users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, n_users: int
) -> torch.Tensor:
    """The batch's rows of the stacked node table (items after users): users, pos, neg."""
    return torch.cat([users, pos + n_users, neg + n_users])


def final_rows(layers: list[torch.Tensor], idx: torch.Tensor | None = None) -> torch.Tensor:
    """concat[E^(0), normalised E^(1..L)] for rows ``idx`` (all rows if None)."""
    rows = layers if idx is None else [t[idx] for t in layers]
    return torch.cat([rows[0], *(F.normalize(t, p=2.0, dim=1) for t in rows[1:])], dim=1)


def ngcf_loss_reference(
    layers: list[torch.Tensor],
    users: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    n_users: int,
    reg: float,
) -> torch.Tensor:
    """:func:`ngcf_loss` through plain autograd, on every gathered batch row."""
    # Normalisation is row-wise, so only the batch rows need it (not the whole table).
    b = users.shape[0]
    eu, ep, en = final_rows(layers, _batch_rows(users, pos, neg, n_users)).split(b)
    bpr = bpr_loss((eu * ep).sum(-1), (eu * en).sum(-1))
    l2 = eu.square().sum() + ep.square().sum() + en.square().sum()
    return bpr + reg * l2 / b
