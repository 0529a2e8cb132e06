"""The public budgeted embedding layer: ``nn.Embedding(num, d_max)`` with a size per row.

:class:`BudgetedEmbedding` is a :class:`~embudget.tables.compact.CompactEmbedding` (one flat
``values`` parameter of length Σ sizes plus int64 ``offsets``, bet.md §14.1) with the
constructor and conveniences of ``torch.nn.Embedding``: rows are initialised N(0, 1), sizes are
validated with a typed :class:`~embudget.errors.BudgetError`, a trained dense table is truncated
with :meth:`BudgetedEmbedding.from_dense`, and lookups may return narrower zero-padded rows
(``width``). The lookup is a fixed sequence of tensor operations (gather, mask), with no Python
loop over rows and no data-dependent Python branch, so ``torch.compile(..., fullgraph=True)``
traces it whole.

Example::

    emb = BudgetedEmbedding(1000, 64, sizes=row_sizes)   # row n keeps row_sizes[n] coordinates
    out = emb(ids)                                       # (*ids.shape, 64), zeros past each size
    emb.params_used()                                    # Σ row_sizes
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from embudget.errors import BudgetError, BudgetErrorType
from embudget.tables.compact import CompactEmbedding
from embudget.tables.sized import SizedEmbedding

__all__ = ["BudgetedEmbedding", "check_sizes"]

_INVALID = BudgetErrorType.INVALID

#: What :class:`BudgetedEmbedding` accepts as sizes: one int for every row, a 1-D integer
#: array, tensor or sequence of length ``num_embeddings``, or None for ``embedding_dim`` each.
Sizes = np.ndarray | torch.Tensor | Sequence[int] | int | None


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < 1:
        raise BudgetError(f"{name} must be a positive integer, got {value!r}", _INVALID)
    return int(value)


def check_sizes(sizes: Sizes, num: int, d_max: int) -> torch.Tensor:
    """Validate per-row sizes; returns them as an int16 CPU tensor of length ``num``.

    Raises:
        BudgetError: (INVALID) sizes that are not integers, have the wrong shape, or leave
            [1, d_max]; the message names the offending rows.
    """
    if sizes is None:
        return torch.full((num,), d_max, dtype=torch.int16)
    if isinstance(sizes, bool | str | bytes) or (
        not isinstance(sizes, int | np.integer | np.ndarray | torch.Tensor | Sequence)
    ):
        raise BudgetError(
            f"sizes must be an int or a 1-D integer array of {num} row sizes, "
            f"got {type(sizes).__name__}",
            _INVALID,
        )
    if isinstance(sizes, int | np.integer):
        t = torch.full((num,), int(sizes), dtype=torch.int64)
    else:
        try:
            a = sizes.detach().cpu() if isinstance(sizes, torch.Tensor) else torch.as_tensor(sizes)
        except (TypeError, ValueError, RuntimeError) as e:
            raise BudgetError(f"sizes must be integers: {e}", _INVALID) from None
        if a.dtype == torch.bool or a.is_floating_point() or a.is_complex():
            raise BudgetError(
                f"sizes must be integers, got {a.dtype}; round them first "
                "(e.g. np.rint(sizes).astype(np.int64))",
                _INVALID,
            )
        if a.dim() != 1 or a.numel() != num:
            raise BudgetError(
                f"sizes must be 1-D with one entry per row ({num}), got shape {tuple(a.shape)}",
                _INVALID,
            )
        t = a.to(torch.int64)
    bad = ((t < 1) | (t > d_max)).nonzero().flatten()
    if bad.numel():
        first = int(bad[0])
        raise BudgetError(
            f"every row size must lie in [1, embedding_dim={d_max}]; {bad.numel()} row(s) do "
            f"not (row {first} has size {int(t[first])}); clip them, e.g. "
            f"np.clip(sizes, 1, {d_max})",
            _INVALID,
        )
    return t.to(torch.int16)


class BudgetedEmbedding(CompactEmbedding):
    """``nn.Embedding(num_embeddings, embedding_dim)`` where row ``n`` stores only its first
    ``sizes[n]`` coordinates.

    Storage is compact: :attr:`values` (the only parameter, Σ sizes entries, so gradients and
    optimiser state scale with Σ sizes) and int64 :attr:`offsets` (row ``n`` is
    ``values[offsets[n]:offsets[n + 1]]``). :attr:`sizes` (an int16 buffer) and ``values`` are the
    state dict; loading a state saved with other sizes re-shapes the storage to those sizes.

    Args:
        num_embeddings: number of rows.
        embedding_dim: ``d_max``, the width of the zero-padded rows a lookup returns.
        sizes: per-row sizes in [1, embedding_dim] (see :data:`Sizes`); None keeps every row
            whole.
        width: default output width of :meth:`forward` and :meth:`full` (at least the largest row
            size, at most ``embedding_dim``); None means ``embedding_dim``.
        values: initial flat values (length Σ sizes); drawn from N(0, 1) like ``nn.Embedding``
            when omitted.
        device, dtype: of ``values``, as for ``nn.Embedding``.

    Raises:
        BudgetError: (INVALID) bad sizes or width.
    """

    output_width: int | None
    _widest: int

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        sizes: Sizes = None,
        *,
        width: int | None = None,
        values: torch.Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        num = _positive("num_embeddings", num_embeddings)
        d_max = _positive("embedding_dim", embedding_dim)
        s = check_sizes(sizes, num, d_max)
        super().__init__(s, d_max, num=num, values=values)
        self.output_width = None
        if width is not None:
            self.output_width = self._check_width(width)
        if values is None:
            self.reset_parameters()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    # --- construction ------------------------------------------------------------------
    @classmethod
    def from_dense(
        cls,
        weight: torch.Tensor | nn.Embedding,
        sizes: Sizes,
        *,
        width: int | None = None,
    ) -> BudgetedEmbedding:
        """Truncate a dense ``(num, d_max)`` table (or an ``nn.Embedding``): row ``n`` keeps its
        first ``sizes[n]`` coordinates. The result lives on the weight's device and dtype."""
        w = weight.weight if isinstance(weight, nn.Embedding) else weight
        if not isinstance(w, torch.Tensor) or w.dim() != 2:
            shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise BudgetError(f"weight must be a 2-D (num, d_max) tensor, got {shape}", _INVALID)
        num, d_max = (int(n) for n in w.shape)
        s = check_sizes(sizes, num, d_max)
        with torch.no_grad():
            keep = torch.arange(d_max, device=w.device) < s.to(w.device, torch.int64)[:, None]
            values = w.detach()[keep].cpu()
        out = cls(num, d_max, s, width=width, values=values)
        return out.to(device=w.device, dtype=w.dtype)

    @classmethod
    def from_sized(cls, table: SizedEmbedding) -> BudgetedEmbedding:
        """Copy the kept prefix of every row of a masked table."""
        out = cls.from_dense(table.weight, table.sizes)
        out.train(table.training)
        return out

    def reset_parameters(self) -> None:
        """Draw every stored value from N(0, 1) (``nn.Embedding``'s initialisation)."""
        with torch.no_grad():
            nn.init.normal_(self.values)

    # --- nn.Embedding's names ----------------------------------------------------------
    @property
    def num_embeddings(self) -> int:
        return self.num

    @property
    def embedding_dim(self) -> int:
        return self.d_max

    # --- sizes and widths --------------------------------------------------------------
    def _index_buffers(self) -> None:
        super()._index_buffers()
        # A Python int, so that width checks in forward never read a tensor.
        self._widest = int(self.sizes.max())

    def _check_width(self, width: object, widest: int | None = None) -> int:
        need = self._widest if widest is None else widest
        if isinstance(width, bool) or not isinstance(width, int | np.integer):
            raise BudgetError(f"width must be an int, got {width!r}", _INVALID)
        if not need <= int(width) <= self.d_max:
            raise BudgetError(
                f"width must lie in [{need}, {self.d_max}] (the largest row size up to "
                f"embedding_dim); got {int(width)}",
                _INVALID,
            )
        return int(width)

    def _resolve_width(self, width: int | None) -> int:
        if width is None:
            return self.d_max if self.output_width is None else self.output_width
        return self._check_width(width)

    def set_sizes(self, sizes: Sizes) -> None:
        """New sizes: re-packs ``values`` keeping each row's common prefix, zeros beyond.

        The ``values`` parameter becomes a new object unless the sizes are unchanged, so build
        (or rebuild) an optimiser after this call.
        """
        s = check_sizes(sizes, self.num, self.d_max)
        if self.output_width is not None and int(s.max()) > self.output_width:
            raise BudgetError(
                f"a row size of {int(s.max())} does not fit this layer's output width "
                f"{self.output_width}; set output_width = None (or wider) first",
                _INVALID,
            )
        super().set_sizes(s)

    # --- lookups -----------------------------------------------------------------------
    def forward(self, ids: torch.Tensor, width: int | None = None) -> torch.Tensor:
        """Zero-padded rows, ``(*ids.shape, width)`` (``width`` defaults to the layer's)."""
        w = self._resolve_width(width)
        if w == self.d_max:
            return super().forward(ids)
        cols = self._cols[:w]
        flat = ids.reshape(-1)
        past = cols >= self._size_idx[flat].unsqueeze(-1)  # coordinates past the size
        idx = (self._off_idx[flat].unsqueeze(-1) + cols).masked_fill_(past, 0)
        rows = self.values.index_select(0, idx.view(-1)).view(-1, w)
        return rows.masked_fill(past, 0.0).view(*ids.shape, w)

    def full(self, width: int | None = None) -> torch.Tensor:
        """The whole zero-padded table, ``(num, width)`` (``width`` defaults to the layer's)."""
        return super().full(self._resolve_width(width))

    def dense(self) -> nn.Embedding:
        """An ``nn.Embedding(num, d_max)`` holding the zero-padded rows (a copy)."""
        out = nn.Embedding(self.num, self.d_max, device=self.values.device, dtype=self.values.dtype)
        with torch.no_grad():
            out.weight.copy_(super().full())
        return out

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Sizes come from the state: check them (typed error) before the storage is re-shaped.
        s = state_dict.get(prefix + "sizes")
        if isinstance(s, torch.Tensor) and s.shape == self.sizes.shape:
            check_sizes(s, self.num, self.d_max)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        out = f"{self.num}, {self.d_max}, stored={self.values.numel()}, widest={self._widest}"
        return out if self.output_width is None else f"{out}, width={self.output_width}"
