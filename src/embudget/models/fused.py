"""Fused BPR losses for MF and LightGCN: the same numbers as autograd, in fewer passes.

The plain losses (``MF.loss_reference``, ``LightGCN.loss_reference``) build ~20 autograd nodes
whose backward allocates a fresh ``(batch, d)`` tensor per node: ``square`` differentiates as
``grad * (2 * x.pow(1))`` (three passes), every broadcast product allocates, and the gathers
scatter through ``index_put_``. On the 2-core CPU a 10,000-triple MF step on a Last.fm-sized
table took ~27 ms of CPU through autograd and takes ~11 ms here (BENCHMARKS.md, "Small runs").

The functions here compute forward and backward by hand with the *same floating-point
operations, operands and accumulation order* as autograd, so losses, gradients and therefore
whole training runs are bit-identical (``tests/models/test_fused.py`` compares gradients bit
for bit; ``tests/golden`` compares whole runs). What is allowed to change is only what cannot
change a bit:

- buffers are reused and updated in place (``x.mul_(m)`` equals ``x * m``);
- a masked gather ``weight[ids] * mask[ids]`` is ``(weight * mask)[ids]`` (elementwise);
- the backward runs in blocks of rows (elementwise results do not depend on the blocking, and
  the blocks are scattered in batch order);
- ``g · (2 · x)`` is computed as ``x · (2g)``: doubling is exact, so both are the one rounding
  of the same real product;
- ``x.square()`` is ``x * x`` (the CPU kernel for ``pow(x, 2)`` is that product);
- ``a + (-b)`` is ``a - b``; ``a + b`` is ``b + a`` (IEEE addition is commutative; only the
  association of three or more terms is kept as autograd does it);
- on the CPU a gather's backward scatters with ``index_add_``, which adds duplicate indices in
  batch order from zero exactly as the single-thread ``index_put_(accumulate=True)`` does
  (with several threads ``index_put_`` reorders them, so multi-threaded runs may differ in the
  last bits from the unfused loss; ``index_add_`` stays in batch order on any thread count).

Autograd's order, which the backward passes replicate: the engine runs ready nodes newest
first, so the L2 branch (built last) is differentiated before the BPR branch, and a tensor
used three times receives ``(g_l2 + g_neg) + g_pos``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from embudget.models.graph import sparse_dense_mm
from embudget.tables.compact import CompactEmbedding
from embudget.tables.sized import SizedEmbedding

#: softplus's defaults (beta, threshold), as F.softplus uses them.
_BETA, _THRESHOLD = 1, 20


def scatter_rows(
    out: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor, alpha: float = 1.0
) -> torch.Tensor:
    """Add ``alpha · rows`` at ``ids`` of ``out`` in batch order (a gather's backward);
    deterministic on CUDA too, where ``index_add_`` adds duplicates in any order."""
    if rows.device.type == "cpu":
        return out.index_add_(0, ids, rows, alpha=alpha)
    return out.index_put_((ids,), rows if alpha == 1.0 else rows * alpha, accumulate=True)


Rows = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Masks = tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]


def _forward(
    sources: Rows, ids: Rows, l2_sources: Rows | None = None
) -> tuple[Rows, Rows, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gather the (user, positive, negative) rows and evaluate the BPR and L2 terms.

    Returns ``(rows, l2_rows, x, bpr, l2)``: ``rows[k] = sources[k][ids[k]]``,
    ``x = ⟨eu, en⟩ − ⟨eu, ep⟩``, ``bpr = mean softplus(x)`` and
    ``l2 = (Σ r_u² + Σ r_p²) + Σ r_n²`` over the rows gathered from ``l2_sources`` (default:
    the same rows). Whole-batch passes: a blocked forward measured ~8 % slower.
    """
    rows = tuple(sources[k].index_select(0, ids[k]) for k in range(3))
    l2_rows = (
        rows
        if l2_sources is None
        else tuple(l2_sources[k].index_select(0, ids[k]) for k in range(3))
    )
    buf = torch.empty_like(rows[0])
    eu, ep, en = rows
    s_pos = torch.mul(eu, ep, out=buf).sum(-1)
    s_neg = torch.mul(eu, en, out=buf).sum(-1)
    x = s_neg - s_pos
    l2 = _sq_sum(l2_rows[0], buf) + _sq_sum(l2_rows[1], buf) + _sq_sum(l2_rows[2], buf)
    return (eu, ep, en), (l2_rows[0], l2_rows[1], l2_rows[2]), x, F.softplus(x).mean(), l2


def _sq_sum(x: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """``x.square().sum()`` (the CPU kernel of ``pow(x, 2)`` is ``x * x``)."""
    return torch.mul(x, x, out=buf).sum()


def _total(bpr: torch.Tensor, l2: torch.Tensor, reg: float, batch: int) -> torch.Tensor:
    return bpr + reg * l2 / batch


def _scalar_grads(
    g: torch.Tensor, x: torch.Tensor, reg: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(2·g_l2, g_x, −g_x), the last two as ``(batch, 1)`` columns.

    ``loss = bpr + reg · l2 / B``: Div then Mul backward give g_l2 = (g / B) · reg, and the
    squares' backward multiplies by 2x; mean's backward is g expanded over the batch, / B,
    then softplus's backward gives g_x; the difference ŷ_neg − ŷ_pos passes g_x and −g_x.
    """
    batch = x.shape[0]
    g_l2 = g / batch * reg
    g_mean = g.expand(batch) / batch
    gx = torch.ops.aten.softplus_backward(g_mean, x, _BETA, _THRESHOLD)
    return g_l2 * 2.0, gx.unsqueeze(1), (-gx).unsqueeze(1)


#: Rows per block in the backward: a (1024, 128) float32 block is 512 KiB, so the products
#: and sums that make one block's gradients stay in the core's cache instead of streaming
#: (batch, d) temporaries through memory (the elementwise results do not depend on blocking,
#: and each block is scattered after the previous one, so the batch order is kept).
BLOCK_ROWS = 1024


def _blocks(rows: torch.Tensor) -> tuple[list[slice], torch.Tensor]:
    """Row blocks of ``rows`` (one block off the CPU) and an uninitialised block buffer."""
    n = rows.shape[0]
    step = max(1, BLOCK_ROWS if rows.device.type == "cpu" else n)
    blocks = [slice(s, min(s + step, n)) for s in range(0, n, step)]
    return blocks, rows.new_empty((min(step, n), rows.shape[1]))


def _scatter_scaled(
    out: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor, c: torch.Tensor
) -> None:
    """Add ``c · rows`` at ``ids`` of ``out`` (an L2 term's gradient through a gather)."""
    blocks, tmp = _blocks(rows)
    for sl in blocks:
        scatter_rows(out, ids[sl], torch.mul(rows[sl], c, out=tmp[: sl.stop - sl.start]))


def _bpr_scatter(
    rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ids: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    outs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    gx: torch.Tensor,
    gnx: torch.Tensor,
    c2: torch.Tensor | None = None,
    masks: Masks = (None, None, None),
) -> None:
    """Add the gathered rows' gradients at their ids: (eu, ep, en) into ``outs``, block by block.

    Without an L2 term on the same rows (``c2`` None): d_eu = gx·en + (−gx)·ep,
    d_en = gx·eu, d_ep = −gx·eu. With one (MF), autograd adds the squares' gradient c2·row
    first: d_eu = (c2·eu + gx·en) + (−gx)·ep, d_en = c2·en + gx·eu, d_ep = c2·ep + (−gx)·eu.
    ``masks[k]`` (masked tables: the table's 0/1 prefix mask) multiplies rows k's gradient
    by their mask rows, as the masking product's backward.
    """
    eu, ep, en = rows
    blocks, tmp_a = _blocks(eu)
    tmp_b = torch.empty_like(tmp_a)
    for sl in blocks:
        a, b = tmp_a[: sl.stop - sl.start], tmp_b[: sl.stop - sl.start]
        u, p, q, gxs, gns = eu[sl], ep[sl], en[sl], gx[sl], gnx[sl]
        d_eu = _l2_plus(u, q, gxs, c2, a, b).add_(torch.mul(p, gns, out=b))
        _emit(outs[0], ids[0][sl], d_eu, masks[0], b)
        _emit(outs[2], ids[2][sl], _l2_plus(q, u, gxs, c2, a, b), masks[2], b)  # d_en
        _emit(outs[1], ids[1][sl], _l2_plus(p, u, gns, c2, a, b), masks[1], b)  # d_ep


def _l2_plus(
    row: torch.Tensor,
    other: torch.Tensor,
    g: torch.Tensor,
    c2: torch.Tensor | None,
    a: torch.Tensor,
    b: torch.Tensor,
) -> torch.Tensor:
    """c2·row + g·other into ``a`` (just g·other without an L2 term); ``b`` is scratch."""
    if c2 is None:
        return torch.mul(other, g, out=a)
    return torch.mul(row, c2, out=a).add_(torch.mul(other, g, out=b))


def _emit(
    out: torch.Tensor,
    ids: torch.Tensor,
    grad: torch.Tensor,
    mask: torch.Tensor | None,
    scratch: torch.Tensor,
) -> None:
    """Scatter a block's row gradients (times their mask rows, gathered into ``scratch``)."""
    if mask is not None:
        grad.mul_(torch.index_select(mask, 0, ids, out=scratch))
    scatter_rows(out, ids, grad)


Table = SizedEmbedding | CompactEmbedding


def fusable(table: object) -> bool:
    """Whether :func:`mf_loss` knows the table's storage (masked or compact)."""
    return type(table) in (SizedEmbedding, CompactEmbedding)


def _dense(table: Table) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``(num, d_max)`` table the rows are gathered from, and its 0/1 prefix mask.

    A masked table's rows are ``weight[ids] * mask[ids]`` (``SizedEmbedding.forward``); that is
    ``(weight * mask)[ids]`` element for element, and the product over the table is cheaper
    than building a ``(batch, d)`` mask from the sizes. A full table has no mask; a compact
    one is zero-padded (``full``) and its lookup has no masking product either.
    """
    if isinstance(table, CompactEmbedding):
        return table.full(), None
    if table.is_full:
        return table.weight, None
    mask = table.mask().to(table.weight.dtype)
    return table.weight * mask, mask


def _param_grad(table: Table, g_dense: torch.Tensor) -> torch.Tensor:
    """The storage's gradient from the padded table's.

    A compact table's rows are gathered coordinate by coordinate (``values[offset + c]``,
    coordinates past the size masked to zero, so they add exact zeros): per stored value that
    is the same sum in batch order as the padded table's, which is then read at the mask.
    """
    return g_dense if isinstance(table, SizedEmbedding) else g_dense[table.mask()]


class _MFLoss(torch.autograd.Function):
    """MF's ``loss`` as one node: inputs are the two tables' storage parameters."""

    @staticmethod
    def forward(
        ctx: Any,
        pu: torch.Tensor,
        pi: torch.Tensor,
        users: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        tables: tuple[Table, Table],
        reg: float,
    ) -> torch.Tensor:
        tu, ti = tables
        (wu, mu), (wi, mi) = _dense(tu), _dense(ti)
        (eu, ep, en), _, x, bpr, l2 = _forward((wu, wi, wi), (users, pos, neg))
        masks = (mu, mi, mi)
        ctx.rows, ctx.x, ctx.masks, ctx.tables = (eu, ep, en), x, masks, tables
        ctx.ids, ctx.shape, ctx.reg = (users, pos, neg), (wu.shape[0], wi.shape[0]), reg
        return _total(bpr, l2, reg, users.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (eu, ep, en), (users, pos, neg), (nu, ni) = ctx.rows, ctx.ids, ctx.shape
        tu, ti = ctx.tables
        c2, gx, gnx = _scalar_grads(g, ctx.x, ctx.reg)
        d = eu.shape[1]
        g_u, g_neg, g_pos = (eu.new_zeros((n, d)) for n in (nu, ni, ni))
        _bpr_scatter((eu, ep, en), (users, pos, neg), (g_u, g_pos, g_neg), gx, gnx, c2, ctx.masks)
        # the item table's two gathers: (Σ_neg) + (Σ_pos), each summed from zero
        g_items = g_neg.add_(g_pos)
        del ctx.rows, ctx.tables
        return (
            _param_grad(tu, g_u) if ctx.needs_input_grad[0] else None,
            _param_grad(ti, g_items) if ctx.needs_input_grad[1] else None,
            None, None, None, None, None,
        )  # fmt: skip


def mf_loss(
    user_emb: Table,
    item_emb: Table,
    users: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    reg: float,
) -> torch.Tensor:
    """``MF.loss_reference``'s value and gradients (bit for bit), fused; the tables are masked
    or compact (:func:`fusable`)."""
    out: torch.Tensor = _MFLoss.apply(
        user_emb.weight, item_emb.weight, users, pos, neg, (user_emb, item_emb), float(reg)
    )
    return out


class _LightGCNLoss(torch.autograd.Function):
    """LightGCN's ``loss`` from E^(0) as one node: propagation, gathers, BPR and L2."""

    @staticmethod
    def forward(
        ctx: Any,
        ego: torch.Tensor,
        adj: torch.Tensor,
        n_layers: int,
        n_users: int,
        ids: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        reg: float,
    ) -> torch.Tensor:
        users, pos, neg = ids
        # acc = E0 + E1 + ... (left to right, as propagate), then / (L + 1)
        e, acc = ego, ego
        for layer in range(n_layers):
            e = sparse_dense_mm(adj, e)
            acc = ego + e if layer == 0 else acc.add_(e)
        out = acc / (n_layers + 1) if n_layers == 0 else acc.div_(n_layers + 1)
        fu, fi, eg_u, eg_i = out[:n_users], out[n_users:], ego[:n_users], ego[n_users:]
        (eu, ep, en), (ru, rp, rn), x, bpr, l2 = _forward((fu, fi, fi), ids, (eg_u, eg_i, eg_i))
        ctx.rows, ctx.ego_rows, ctx.x = (eu, ep, en), (ru, rp, rn), x
        ctx.adj, ctx.n_layers, ctx.n_users, ctx.ids, ctx.reg = adj, n_layers, n_users, ids, reg
        ctx.shape = tuple(ego.shape)
        return _total(bpr, l2, reg, users.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (eu, ep, en), (ru, rp, rn) = ctx.rows, ctx.ego_rows
        (users, pos, neg), nu, n_layers, adj = ctx.ids, ctx.n_users, ctx.n_layers, ctx.adj
        c2, gx, gnx = _scalar_grads(g, ctx.x, ctx.reg)
        # L2 branch first (autograd differentiates it first): slices of E^(0)'s gradient; the
        # item rows get (Σ_neg) + (Σ_pos), each summed from zero.
        d_ego = eu.new_zeros(ctx.shape)
        g_pos = eu.new_zeros((ctx.shape[0] - nu, ctx.shape[1]))
        _scatter_scaled(d_ego[:nu], users, ru, c2)
        _scatter_scaled(d_ego[nu:], neg, rn, c2)
        _scatter_scaled(g_pos, pos, rp, c2)
        d_ego[nu:].add_(g_pos)
        # BPR branch: slices of the layer mean's gradient, then its division.
        g_mean = eu.new_zeros(ctx.shape)
        g_pos.zero_()
        _bpr_scatter((eu, ep, en), (users, pos, neg), (g_mean[:nu], g_pos, g_mean[nu:]), gx, gnx)
        g_mean[nu:].add_(g_pos)
        g_mean.div_(n_layers + 1)
        del ctx.rows, ctx.ego_rows
        # Propagation: E_L receives g_mean; E_l receives Â·g_(l+1) + g_mean; E^(0) receives
        # (L2 + g_mean) + Â·g_1, in that order.
        d_ego.add_(g_mean)
        if n_layers:
            gk = g_mean
            for _ in range(n_layers - 1):
                gk = sparse_dense_mm(adj, gk).add_(g_mean)
            d_ego.add_(sparse_dense_mm(adj, gk))
        return d_ego, None, None, None, None, None


def lightgcn_loss(
    ego: torch.Tensor,
    adj: torch.Tensor,
    n_layers: int,
    n_users: int,
    users: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    reg: float,
) -> torch.Tensor:
    """``LightGCN.loss_reference``'s value and gradients (bit for bit) from E^(0), fused;
    ``adj`` is the symmetric Â (sparse CSR), so the backward multiplies by Â itself."""
    out: torch.Tensor = _LightGCNLoss.apply(
        ego, adj, int(n_layers), int(n_users), (users, pos, neg), float(reg)
    )
    return out
