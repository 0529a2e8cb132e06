"""Byte-exact memory accounting of embedding tables, and byte budgets (bet.md §2.4, §14.2).

Bytes of a compact table = Σ_tables Σ_n d_n · bytes_per_value + overhead, where the overhead is

- ``jagged`` layout: int64 offsets, 8 · (|U| + 1) + 8 · (|V| + 1) bytes (the tables of one
  entity type share their sizes, hence one offsets array per type);
- ``bucketed`` layout: a per-entity index (int32 bucket, int32 row: 8 bytes) plus a 16-byte
  header (dimension and row count, int64 each) per bucket;
- ``int8``: 8 bytes of row metadata (fp32 scale and fp32 bias) per stored row.

Dense backbone weights (NGCF transforms, NCF MLP) are listed separately, at fp32, and never
counted in the embedding budget.

Example::

    >>> memory_report((np.array([2, 3]), np.array([4])), d_max=8)["bytes"]["embedding"]
    76
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from embudget.errors import BudgetError, BudgetErrorType
from embudget.models.base import Backbone

log = logging.getLogger(__name__)

__all__ = [
    "DTYPE_BYTES",
    "LAYOUTS",
    "fixed_overhead",
    "memory_report",
    "n_buckets",
    "params_for_bytes",
    "table_bytes",
]

#: bytes per stored value for each storage precision
DTYPE_BYTES: dict[str, int] = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
#: per-row metadata (scale and bias, fp32 each) of the row-wise quantised precisions
ROW_META_BYTES: dict[str, int] = {"int8": 8}
LAYOUTS = ("jagged", "bucketed")
OFFSET_BYTES = 8  # int64 offsets (jagged)
INDEX_BYTES = 8  # int32 bucket + int32 row per entity (bucketed)
BUCKET_HEADER_BYTES = 16  # int64 dimension + int64 row count per bucket (bucketed)
_INVALID = BudgetErrorType.INVALID


def _check(dtype: str, layout: str) -> None:
    if dtype not in DTYPE_BYTES:
        raise BudgetError(
            f"unknown storage dtype {dtype!r}; use one of {', '.join(DTYPE_BYTES)}", _INVALID
        )
    if layout not in LAYOUTS:
        raise BudgetError(
            f"unknown storage layout {layout!r}; use one of {', '.join(LAYOUTS)}", _INVALID
        )


def n_buckets(sizes: np.ndarray) -> int:
    """Number of distinct sizes (= bucket tables) of one entity type."""
    return int(np.unique(np.asarray(sizes)).size)


def fixed_overhead(
    n_users: int,
    n_items: int,
    dtype: str = "fp32",
    layout: str = "jagged",
    tables: int = 1,
    buckets: tuple[int, int] | None = None,
) -> dict[str, int]:
    """Size-independent bytes: index (offsets or bucket index + headers) and row metadata.

    ``buckets`` gives the number of buckets per entity type (bucketed layout); when unknown, pass
    the largest possible number (d_max / size_step per type) to get a bound.
    """
    _check(dtype, layout)
    if layout == "jagged":
        index = OFFSET_BYTES * (n_users + 1) + OFFSET_BYTES * (n_items + 1)
    else:
        if buckets is None:
            raise ValueError("the bucketed layout needs the number of buckets per entity type")
        # every table of a type has the same buckets; the index is shared, headers are not
        index = INDEX_BYTES * (n_users + n_items) + BUCKET_HEADER_BYTES * tables * sum(buckets)
    meta = ROW_META_BYTES.get(dtype, 0) * tables * (n_users + n_items)
    return {"index": index, "row_meta": meta}


def table_bytes(
    user_sizes: np.ndarray,
    item_sizes: np.ndarray,
    dtype: str = "fp32",
    layout: str = "jagged",
    tables: int = 1,
) -> dict[str, int]:
    """Bytes of the compact ID tables: ``values``, ``index``, ``row_meta`` and ``embedding``."""
    us, vs = np.asarray(user_sizes, np.int64), np.asarray(item_sizes, np.int64)
    buckets = (n_buckets(us), n_buckets(vs)) if layout == "bucketed" else None
    over = fixed_overhead(us.size, vs.size, dtype, layout, tables, buckets)
    values = DTYPE_BYTES[dtype] * tables * int(us.sum() + vs.sum())
    return {"values": values, **over, "embedding": values + over["index"] + over["row_meta"]}


def params_for_bytes(
    byte_budget: int,
    n_users: int,
    n_items: int,
    d_max: int,
    dtype: str = "fp32",
    layout: str = "jagged",
    tables: int = 1,
    size_step: int = 1,
) -> int:
    """The parameter budget B (all tables together) whose tables fit ``byte_budget`` bytes.

    B = ⌊(bytes − overhead) / bytes_per_value⌋, with the size-independent overhead subtracted
    first; for the bucketed layout the overhead is bounded with d_max / size_step buckets per
    entity type. Any assignment with Σ (tables · d_n) ≤ B then uses at most ``byte_budget``.

    Raises:
        BudgetError: INFEASIBLE when the overhead alone exceeds the byte budget.
    """
    _check(dtype, layout)
    if isinstance(byte_budget, bool) or not isinstance(byte_budget, int | np.integer):
        raise BudgetError(f"a byte budget must be an integer, got {byte_budget!r}", _INVALID)
    bound = max(1, d_max // max(1, size_step))
    over = fixed_overhead(n_users, n_items, dtype, layout, tables, (bound, bound))
    fixed = over["index"] + over["row_meta"]
    free = int(byte_budget) - fixed
    if free < 0:
        raise BudgetError(
            f"a budget of {int(byte_budget):,} bytes does not even hold the {fixed:,} bytes of "
            f"index and row metadata of the {n_users + n_items:,} users and items ({layout}, "
            f"{dtype}); give at least {fixed + DTYPE_BYTES[dtype] * tables * (n_users + n_items):,}"
            " bytes",
            BudgetErrorType.INFEASIBLE,
        )
    return free // DTYPE_BYTES[dtype]


def _sizes_of(model: Backbone) -> tuple[np.ndarray, np.ndarray, int]:
    us = model.user_tables()[0].sizes.detach().cpu().numpy().astype(np.int64)
    vs = model.item_tables()[0].sizes.detach().cpu().numpy().astype(np.int64)
    return us, vs, len(model.user_tables())


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
    """Parameters and bytes of a model's (or a size assignment's) compact ID tables.

    Args:
        source: a backbone, or ``(user_sizes, item_sizes)``.
        dtype, layout: the storage the bytes are counted for.
        d_max: needed with sizes (a backbone knows its own).
        tables: tables sharing each entity's size (NCF: 2); a backbone knows its own.
        dense_params: dense backbone weights (a backbone knows its own; default 0 for sizes).
        budget_params, budget_bytes: targets, echoed with the slack when given.

    Returns:
        ``params_used``, ``params_full`` (tables · d_max · N), ``fraction_of_full``, and
        ``bytes`` with ``values``, ``index``, ``row_meta``, ``embedding`` (their sum),
        ``dense_backbone`` (fp32), ``total``, ``dense_table`` (the full fp32 d_max tables) and
        ``fraction_of_dense_table``.
    """
    if isinstance(source, Backbone):
        us, vs, t = _sizes_of(source)
        d = source.d_max if d_max is None else int(d_max)
        tables = t if tables is None else tables
        dense = source.dense_params() if dense_params is None else dense_params
    else:
        if d_max is None:
            raise ValueError("give d_max with a size assignment")
        us, vs = (
            np.asarray(s.cpu() if isinstance(s, torch.Tensor) else s, dtype=np.int64)
            for s in source
        )
        d, tables, dense = int(d_max), tables or 1, dense_params or 0
    n = int(us.size + vs.size)
    tb = table_bytes(us, vs, dtype, layout, tables)
    used = tables * int(us.sum() + vs.sum())
    full = tables * d * n
    dense_table = 4 * full
    out: dict[str, Any] = {
        "dtype": dtype,
        "layout": layout,
        "d_max": d,
        "n_users": int(us.size),
        "n_items": int(vs.size),
        "tables": tables,
        "params_used": used,
        "params_full": full,
        "fraction_of_full": used / full if full else 0.0,
        "dense_params": int(dense),
        "bytes": {
            **tb,
            "dense_backbone": 4 * int(dense),
            "total": tb["embedding"] + 4 * int(dense),
            "dense_table": dense_table,
            "fraction_of_dense_table": tb["embedding"] / dense_table if dense_table else 0.0,
            "index_fraction_of_dense_table": (
                (tb["index"] + tb["row_meta"]) / dense_table if dense_table else 0.0
            ),
        },
    }
    if budget_params is not None:
        out["params_budget"] = int(budget_params)
        out["params_slack"] = int(budget_params) - used
    if budget_bytes is not None:
        out["bytes_budget"] = int(budget_bytes)
        out["bytes_slack"] = int(budget_bytes) - tb["embedding"]
    return out
