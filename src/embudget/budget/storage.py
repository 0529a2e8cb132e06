"""Byte arithmetic of compact embedding tables and byte budgets (bet.md §2.4, §14.2); numpy only.

Bytes of a compact table = Σ_tables Σ_n d_n · bytes_per_value + overhead, where the overhead is

- ``jagged`` layout: int64 offsets, 8 · (|U| + 1) + 8 · (|V| + 1) bytes (the tables of one
  entity type share their sizes, hence one offsets array per type);
- ``bucketed`` layout: a per-entity index (int32 bucket, int32 row: 8 bytes) plus a 16-byte
  header (dimension and row count, int64 each) per bucket;
- ``int8``: 8 bytes of row metadata (fp32 scale and fp32 bias) per stored row.

Dense backbone weights (NGCF transforms, NCF MLP) are listed separately, at fp32, and never
counted in the embedding budget.

Example::

    >>> table_bytes(np.array([2, 3]), np.array([4]))["embedding"]
    76
"""

from __future__ import annotations

import numpy as np

from embudget.errors import BudgetError, BudgetErrorType

__all__ = [
    "DTYPE_BYTES",
    "LAYOUTS",
    "check_storage",
    "fixed_overhead",
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
#: bytes per value of the dense (uncompressed, fp32) tables and backbone weights
DENSE_VALUE_BYTES = DTYPE_BYTES["fp32"]
_INVALID = BudgetErrorType.INVALID


def check_storage(dtype: str, layout: str) -> None:
    """Raise ``BudgetError(INVALID)`` for an unknown storage dtype or layout."""
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
    check_storage(dtype, layout)
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
    check_storage(dtype, layout)
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
