"""Embedding tables whose rows have their own sizes (prefix truncation of a d_max row).

The masked form keeps a full ``(num, d_max)`` parameter plus an integer length vector; masks are
built on the fly for the rows in use and never stored (bet.md §8.1). Coordinates past a row's
size contribute nothing to any output and receive exactly zero gradient.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from embudget.budget.usage import params_used

SizesLike = np.ndarray | torch.Tensor | int | None


def as_sizes(sizes: SizesLike, num: int, d_max: int) -> torch.Tensor:
    """Validate and convert sizes to an int16 tensor of length ``num``.

    ``None`` means every row uses all ``d_max`` coordinates; an int means a uniform size.
    """
    if sizes is None:
        return torch.full((num,), d_max, dtype=torch.int16)
    if isinstance(sizes, int):
        t = torch.full((num,), sizes, dtype=torch.int64)
    else:
        t = torch.as_tensor(np.asarray(sizes) if not isinstance(sizes, torch.Tensor) else sizes)
        t = t.detach().to("cpu", torch.int64).reshape(-1)
    if t.numel() != num:
        raise ValueError(f"expected {num} sizes, got {t.numel()}")
    if t.numel() and (int(t.min()) < 1 or int(t.max()) > d_max):
        raise ValueError(
            f"sizes must lie in [1, {d_max}]; got min {int(t.min())}, max {int(t.max())}"
        )
    return t.to(torch.int16)


def check_width(width: int, needed: int, d_max: int) -> int:
    """``width`` if it keeps every non-zero column (``needed`` ≤ width ≤ ``d_max``)."""
    if not needed <= width <= d_max:
        raise ValueError(
            f"width must lie in [{needed}, {d_max}] (from the largest row size); got {width}"
        )
    return int(width)


class PrefixTable(nn.Module):
    """What the masked and the compact table share: ``num`` rows, row ``n`` the first
    ``sizes[n]`` of ``d_max`` coordinates (``sizes`` a buffer each form registers)."""

    num: int
    d_max: int
    sizes: torch.Tensor

    @property
    def is_full(self) -> bool:
        return bool((self.sizes == self.d_max).all())

    @property
    def width(self) -> int:
        """The largest row size: every column from here on is zero in every row."""
        return int(self.sizes.max()) if self.num else 0

    def params_used(self) -> int:
        """Σ sizes: the embedding parameters this table really uses."""
        return params_used(self.sizes.cpu().numpy(), ())


class SizedEmbedding(PrefixTable):
    """A ``(num, d_max)`` table where row ``n`` uses only its first ``sizes[n]`` entries."""

    def __init__(self, num: int, d_max: int, sizes: SizesLike = None) -> None:
        super().__init__()
        self.num = int(num)
        self.d_max = int(d_max)
        self.weight = nn.Parameter(torch.empty(self.num, self.d_max))
        self.register_buffer("sizes", as_sizes(sizes, self.num, self.d_max))
        self.register_buffer("_cols", torch.arange(self.d_max), persistent=False)
        self.sizes: torch.Tensor
        self._cols: torch.Tensor

    def set_sizes(self, sizes: SizesLike) -> None:
        """Change the sizes in place (no re-allocation of the weights)."""
        self.sizes.copy_(as_sizes(sizes, self.num, self.d_max).to(self.sizes.device))

    def mask(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Boolean prefix mask for the given rows (all rows if ``ids`` is None)."""
        s = self.sizes if ids is None else self.sizes[ids]
        return self._cols.unsqueeze(0) < s.unsqueeze(-1).to(torch.int64)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.weight[ids]
        if self.is_full:
            return rows
        return rows * self.mask(ids).to(rows.dtype)

    def full(self, width: int | None = None) -> torch.Tensor:
        """The whole masked table, ``(num, width)`` (``width`` defaults to ``d_max``).

        A ``width`` of at least :attr:`width` drops only columns that are zero in every row, so
        products and sums over the narrower table are exact and cost ``width / d_max`` as much.
        """
        w = self.d_max if width is None else check_width(width, self.width, self.d_max)
        if self.is_full:
            return self.weight[:, :w]
        return self.weight[:, :w] * self.mask()[:, :w].to(self.weight.dtype)
