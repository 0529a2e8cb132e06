"""One NGCF propagation layer as a single autograd function (bet.md §8.4).

    side = Â·E,   H = side·W_gc + (E ⊙ side)·W_bi + b,   E' = LeakyReLU_0.2(H) ⊙ keep / (1 - p)

Through autograd the layer costs ~20 passes over the (N × d) tables per step on top of its
GEMMs and sparse products: separate LeakyReLU and dropout tensors, a zero-filled gradient per
use of E, and float dropout draws. Here the activation and the dropout fold into one factor
F = keep / (1 - p) · (1 if H > 0 else 0.2), so E' = H ⊙ F and the backward starts from G ⊙ F;
the gradient of E is accumulated in one buffer, and the keep mask is drawn as int16 (about 4x
cheaper than float draws on this CPU). BENCHMARKS.md "NGCF step" has the measured effect.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from embudget.models.graph import sparse_dense_mm

#: Dropout draws are 15-bit: a value is kept when its draw is >= round(p · 2^15), so the rate
#: is p to within 2^-16 (0.1 -> 3277 / 32768 = 0.100006). The bits come from int64 draws cut
#: into four int16 words (the low 15 bits of each are uniform), 4.5x cheaper than float draws.
_DRAW_BITS = 15


def keep_mask(
    shape: tuple[int, ...], p: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Boolean keep mask with P(keep) = 1 - p (p quantised to 2^-15)."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(generator=generator)
    draws = words.view(torch.int16)[:n].bitwise_and_((1 << _DRAW_BITS) - 1)
    return (draws >= round(p * (1 << _DRAW_BITS))).view(shape)


class BiInteraction(torch.autograd.Function):
    """E' = act(Â·E·W_gc + (E ⊙ Â·E)·W_bi + b) ⊙ dropout, with a hand-written backward.

    ``keep`` is a boolean (N × d) mask (message dropout with rate ``p``) or None (no dropout);
    ``a_t`` is Âᵀ (sparse CSR), used only by the backward.
    """

    @staticmethod
    def forward(
        ctx: Any,
        e: torch.Tensor,
        a: torch.Tensor,
        a_t: torch.Tensor | None,
        w_gc: torch.Tensor,
        w_bi: torch.Tensor,
        bias: torch.Tensor,
        keep: torch.Tensor | None,
        p: float,
        slope: float,
    ) -> torch.Tensor:
        side = sparse_dense_mm(a, e)
        inter = e * side
        h = torch.addmm(bias, side, w_gc)
        h.addmm_(inter, w_bi)
        scale = 1.0 / (1.0 - p) if keep is not None else 1.0
        up, down = (torch.tensor(v, dtype=h.dtype, device=h.device) for v in (scale, scale * slope))
        f = torch.where(h > 0, up, down)
        if keep is not None:
            f.mul_(keep)
        out = h.mul_(f)
        ctx.a_t = a_t
        ctx.save_for_backward(e, side, inter, w_gc, w_bi, f)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        e, side, inter, w_gc, w_bi, f = ctx.saved_tensors
        gh = grad * f
        need_e, _, _, need_gc, need_bi, need_b = ctx.needs_input_grad[:6]
        g_gc = side.t().mm(gh) if need_gc else None
        g_bi = inter.t().mm(gh) if need_bi else None
        g_b = gh.sum(0, keepdim=True) if need_b else None
        g_e = None
        if need_e:
            t_bi = gh.mm(w_bi.t())
            g_side = gh.mm(w_gc.t()).addcmul_(e, t_bi)  # ∂/∂side: W_gc path + E ⊙ W_bi path
            g_e = t_bi.mul_(side)  # ∂/∂E through the E ⊙ side factor
            assert ctx.a_t is not None, "the backward needs Âᵀ"
            g_e.add_(sparse_dense_mm(ctx.a_t, g_side))  # ∂/∂E through side = Â·E
        return g_e, None, None, g_gc, g_bi, g_b, None, None, None


def bi_interaction(
    e: torch.Tensor,
    a: torch.Tensor,
    a_t: torch.Tensor | None,
    w_gc: torch.Tensor,
    w_bi: torch.Tensor,
    bias: torch.Tensor,
    keep: torch.Tensor | None,
    p: float,
    slope: float = 0.2,
) -> torch.Tensor:
    out: torch.Tensor = BiInteraction.apply(e, a, a_t, w_gc, w_bi, bias, keep, p, slope)
    return out
