"""A memory report of a live backbone or of a size assignment: :meth:`Usage.to_dict`.

The arithmetic is torch-free (:class:`~embudget.budget.usage.Usage` over
:mod:`embudget.budget.storage`); this module only reads the sizes out of a model.

Example::

    >>> memory_report((np.array([2, 3]), np.array([4])), d_max=8)["bytes"]["embedding"]
    76
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from embudget.budget.usage import Usage
from embudget.models.base import Backbone

__all__ = ["memory_report"]


def _numpy(sizes: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(sizes, torch.Tensor):
        return sizes.detach().cpu().numpy().astype(np.int64)
    return np.asarray(sizes, dtype=np.int64)


def memory_report(
    source: Backbone | Sequence[np.ndarray | torch.Tensor],
    *,
    dtype: str = "fp32",
    layout: str = "jagged",
    d_max: int | None = None,
    tables: int | None = None,
    dense_params: int | None = None,
    budget_params: int | None = None,
    budget_bytes: int | None = None,
) -> dict[str, Any]:
    """``Usage.of_sizes(...).to_dict()`` of a backbone's tables or of ``(user_sizes,
    item_sizes)``, with the given parameter and byte budgets.

    A backbone knows its own d_max, table count and dense weights; sizes need ``d_max``.
    """
    if isinstance(source, Backbone):
        us, vs = _numpy(source.user_tables()[0].sizes), _numpy(source.item_tables()[0].sizes)
        d_max = source.d_max if d_max is None else d_max
        tables = len(source.user_tables()) if tables is None else tables
        dense_params = source.dense_params() if dense_params is None else dense_params
    else:
        if d_max is None:
            raise ValueError("give d_max with a size assignment")
        us, vs = (_numpy(s) for s in source)
    usage = Usage.of_sizes(
        us,
        vs,
        d_max=d_max,
        tables=tables,
        dtype=dtype,
        layout=layout,
        dense_params=dense_params or 0,
    )
    usage = dataclasses.replace(usage, params_budget=budget_params, bytes_budget=budget_bytes)
    return usage.to_dict()
