"""Compact embedding tables: storage proportional to Σ sizes (bet.md §14.1).

:class:`CompactEmbedding` keeps the jagged layout: one flat ``values`` parameter of length
Σ d_n (row n is ``values[offsets[n]:offsets[n + 1]]``) plus int64 ``offsets``. It has the interface
of :class:`~embudget.tables.sized.SizedEmbedding` that the backbones use (``forward(ids)`` and
``full()`` return zero-padded ``d_max``-wide rows), so every backbone trains and scores with it
unchanged, and its gradients and Adam state scale with Σ sizes instead of ``num · d_max``.

Graph backbones still materialise ``(N, w)`` activations during propagation, ``w`` the largest
row size (LightGCN; NGCF uses ``d_max``); only the parameters (and their optimiser state)
shrink.

Example::

    model = build_model("mf", n_users, n_items, train, 128)
    model.set_sizes(user_sizes, item_sizes)
    to_compact(model)            # in place: copies each row's kept prefix
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from embudget.budget.usage import Usage
from embudget.tables.sized import PrefixTable, SizedEmbedding, SizesLike, as_sizes, check_width

log = logging.getLogger(__name__)

__all__ = [
    "CompactEmbedding",
    "compact_pays",
    "is_compact",
    "load_weights",
    "to_compact",
    "to_masked",
]


def _offsets(sizes: torch.Tensor) -> torch.Tensor:
    """Exclusive prefix sums, length ``len(sizes) + 1`` (int64)."""
    out = torch.zeros(sizes.numel() + 1, dtype=torch.int64, device=sizes.device)
    torch.cumsum(sizes.to(torch.int64), 0, out=out[1:])
    return out


def _prefix_mask(sizes: torch.Tensor, d_max: int) -> torch.Tensor:
    cols = torch.arange(d_max, device=sizes.device)
    return cols.unsqueeze(0) < sizes.to(torch.int64).unsqueeze(-1)


class CompactEmbedding(PrefixTable):
    """A jagged table: row ``n`` stores only its first ``sizes[n]`` coordinates.

    Args:
        sizes: per-row sizes in [1, d_max] (array, tensor, or an int for all rows; then give
            ``num``).
        d_max: width of the zero-padded rows that lookups return.
        num: number of rows (only needed when ``sizes`` is an int or None).
        values: initial flat values (length Σ sizes); zeros if omitted.
    """

    def __init__(
        self,
        sizes: SizesLike,
        d_max: int,
        num: int | None = None,
        values: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if num is None:
            if sizes is None or isinstance(sizes, int):
                raise ValueError("give num when sizes is an int or None")
            num = sizes.numel() if isinstance(sizes, torch.Tensor) else np.asarray(sizes).size
        self.num = int(num)
        self.d_max = int(d_max)
        if self.num < 1:
            raise ValueError("a compact table needs at least one row")
        s = as_sizes(sizes, self.num, self.d_max)
        self.register_buffer("sizes", s)
        self.sizes: torch.Tensor
        total = int(s.to(torch.int64).sum())
        if values is None:
            values = torch.zeros(total)
        elif values.dim() != 1 or values.numel() != total:
            raise ValueError(f"values must be 1-D of length Σ sizes = {total}, got {values.shape}")
        self.values = nn.Parameter(values.detach().clone())
        self._index_buffers()

    def _index_buffers(self) -> None:
        """(Re)build the derived, non-persistent offsets and lookup helpers from ``sizes``."""
        dev = self.sizes.device
        off = _offsets(self.sizes)
        # int32 index arithmetic halves the per-lookup traffic; int64 only for huge tables
        idx_dtype = torch.int32 if int(off[-1]) < 2**31 - self.d_max else torch.int64
        self.register_buffer("offsets", off, persistent=False)
        self.register_buffer("_off_idx", off[:-1].to(idx_dtype), persistent=False)
        self.register_buffer("_size_idx", self.sizes.to(idx_dtype), persistent=False)
        self.register_buffer(
            "_cols", torch.arange(self.d_max, dtype=idx_dtype, device=dev), persistent=False
        )
        self.offsets: torch.Tensor
        self._off_idx: torch.Tensor
        self._size_idx: torch.Tensor
        self._cols: torch.Tensor

    # --- construction ------------------------------------------------------------------
    @classmethod
    def from_sized(cls, table: SizedEmbedding) -> CompactEmbedding:
        """Copy the kept prefix of every row of a masked table."""
        with torch.no_grad():
            w = table.weight.detach()
            mask = _prefix_mask(table.sizes, table.d_max)
            out = cls(table.sizes.cpu(), table.d_max, values=w[mask].cpu())
        out = out.to(device=w.device, dtype=w.dtype)
        out.train(table.training)
        return out

    def to_sized(self) -> SizedEmbedding:
        """The masked form: a ``(num, d_max)`` table, zeros past each row's size."""
        t = SizedEmbedding(self.num, self.d_max, self.sizes.cpu())
        t = t.to(device=self.values.device, dtype=self.values.dtype)
        with torch.no_grad():
            t.weight.copy_(self.full())
        t.train(self.training)
        return t

    # --- the SizedEmbedding interface --------------------------------------------------
    @property
    def weight(self) -> nn.Parameter:
        """The storage parameter (flat values); named like SizedEmbedding's for accounting."""
        return self.values

    def set_sizes(self, sizes: SizesLike) -> None:
        """New sizes: re-allocates ``values``, keeping each row's common prefix, zeros beyond.

        The parameter object changes unless the sizes are unchanged, so an optimiser built on the
        old one must be rebuilt.
        """
        new = as_sizes(sizes, self.num, self.d_max).to(self.sizes.device)
        if torch.equal(new, self.sizes):
            return
        with torch.no_grad():
            padded = self.full().detach()
            values = padded[_prefix_mask(new, self.d_max)]
        self.sizes = new
        self._index_buffers()
        self.values = nn.Parameter(values)

    def mask(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Boolean prefix mask for the given rows (all rows if ``ids`` is None)."""
        s = self._size_idx if ids is None else self._size_idx[ids]
        return self._cols.unsqueeze(0) < s.unsqueeze(-1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Zero-padded ``(*ids.shape, d_max)`` rows."""
        flat = ids.reshape(-1)
        off = self._cols >= self._size_idx[flat].unsqueeze(-1)  # coordinates past the size
        idx = (self._off_idx[flat].unsqueeze(-1) + self._cols).masked_fill_(off, 0)
        rows = self.values.index_select(0, idx.view(-1)).view(-1, self.d_max)
        return rows.masked_fill(off, 0.0).view(*ids.shape, self.d_max)

    def narrow(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Jagged rows: (the rows' values concatenated, their int64 lengths)."""
        flat = ids.reshape(-1)
        lengths = self.sizes[flat].to(torch.int64)
        total = int(lengths.sum())
        out_start = torch.cumsum(lengths, 0) - lengths
        within = torch.arange(total, device=flat.device) - torch.repeat_interleave(
            out_start, lengths, output_size=total
        )
        starts = torch.repeat_interleave(self.offsets[flat], lengths, output_size=total)
        return self.values[starts + within], lengths

    def full(self, width: int | None = None) -> torch.Tensor:
        """The whole zero-padded table, ``(num, width)`` (``width`` defaults to ``d_max``; see
        :meth:`SizedEmbedding.full <embudget.tables.sized.SizedEmbedding.full>`)."""
        w = self.d_max if width is None else check_width(width, self.width, self.d_max)
        out = self.values.new_zeros(self.num, w)
        return out.masked_scatter(self.mask()[:, :w], self.values)

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
        # A state with other sizes re-shapes the storage first (values follow the sizes).
        s = state_dict.get(prefix + "sizes")
        if isinstance(s, torch.Tensor) and s.shape == self.sizes.shape:
            if not torch.equal(s.to(self.sizes.device, self.sizes.dtype), self.sizes):
                self.set_sizes(s)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"num={self.num}, d_max={self.d_max}, stored={self.values.numel()}"


# --------------------------------------------------------------------------------------------
# converting a model's tables
# --------------------------------------------------------------------------------------------
def _swap(model: nn.Module, kind: type[nn.Module], convert: Any) -> nn.Module:
    for name, child in list(model.named_children()):
        if isinstance(child, kind):
            setattr(model, name, convert(child))
        else:
            _swap(child, kind, convert)
    return model


def to_compact(model: nn.Module) -> nn.Module:
    """Replace every masked table of ``model`` by its compact form, in place; returns ``model``.

    Build any optimiser after this call: the embedding parameters are new objects.
    """
    return _swap(model, SizedEmbedding, CompactEmbedding.from_sized)


def to_masked(model: nn.Module) -> nn.Module:
    """Replace every compact table of ``model`` by the masked form, in place; returns ``model``."""
    return _swap(model, CompactEmbedding, CompactEmbedding.to_sized)


def is_compact(model: nn.Module) -> bool:
    """True when ``model`` holds at least one compact table."""
    return any(isinstance(m, CompactEmbedding) for m in model.modules())


def compact_pays(sizes: Iterable[np.ndarray | torch.Tensor], d_max: int) -> bool:
    """Whether jagged fp32 storage (values + int64 offsets) of ``(user_sizes, item_sizes)`` is
    smaller than the dense fp32 tables (one array alone counts as users without items)."""
    arrays = [np.asarray(s.cpu() if isinstance(s, torch.Tensor) else s, np.int64) for s in sizes]
    if not 1 <= len(arrays) <= 2:
        raise ValueError("give the user sizes and the item sizes")
    us, vs = arrays[0], arrays[1] if len(arrays) == 2 else np.zeros(0, np.int64)
    u = Usage.of_sizes(us, vs, d_max=d_max)
    return u.bytes < u.dense_table_bytes


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a state dict saved from either the masked or the compact form, strictly.

    The model's tables are switched to the form the state was saved in (decided per table by
    its ``.values`` / ``.weight`` key), then ``load_state_dict(strict=True)`` runs.
    """
    for name, child in list(model.named_modules()):
        if not isinstance(child, SizedEmbedding | CompactEmbedding):
            continue
        prefix = f"{name}." if name else ""
        want_compact = prefix + "values" in state
        if want_compact and isinstance(child, SizedEmbedding):
            _replace(model, name, CompactEmbedding.from_sized(child))
        elif not want_compact and isinstance(child, CompactEmbedding):
            _replace(model, name, child.to_sized())
    model.load_state_dict(dict(state), strict=True)
    return model


def _replace(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, attr = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
