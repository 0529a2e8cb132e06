"""Parquet interaction files, read by pyarrow (the optional ``embudget[parquet]`` extra).

Columns are chosen as for CSV (``user_col``/``item_col``, else ``user_id/item_id``,
``user/item``, ``userId/movieId``); a ``rating`` column and the timestamp column are kept.
Integer ids stay int64, any other id column becomes text (at most
:data:`~embudget.data.raw.ID_MAX_CHARS` characters); timestamps are numbers or timestamp
columns (as seconds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from embudget.data.raw import ID_MAX_CHARS, PathLike, RawInteractions, empty_error
from embudget.data.tabular import DEFAULT_COLUMN_PAIRS, _filter_rating
from embudget.errors import DataFormatError

INSTALL_HINT = "pip install 'embudget[parquet]' (or pip install pyarrow)"


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataFormatError(
            f"reading parquet needs pyarrow, which is not installed; {INSTALL_HINT}"
        ) from None
    return pq


def _ids(col: Any, path: str, name: str) -> np.ndarray:
    import pyarrow as pa

    if col.null_count:
        raise DataFormatError(f"column {name!r} has {col.null_count} empty ids", path)
    if pa.types.is_integer(col.type):
        return np.asarray(col.to_numpy(), dtype=np.int64)
    values = [str(v) for v in col.to_pylist()]
    longest = max(map(len, values), default=0)
    if longest > ID_MAX_CHARS:
        raise DataFormatError(
            f"an id in column {name!r} has {longest} characters, more than {ID_MAX_CHARS}", path
        )
    ids = np.char.strip(np.array(values, dtype=np.str_))
    if (np.char.str_len(ids) == 0).any():
        raise DataFormatError(f"empty id in column {name!r}; every row needs ids", path)
    return ids


def _numbers(col: Any, path: str, name: str) -> np.ndarray:
    import pyarrow as pa

    if col.null_count:
        raise DataFormatError(f"column {name!r} has {col.null_count} empty values", path)
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        col = col.cast(pa.timestamp("s")).cast(pa.int64())
    elif not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise DataFormatError(f"column {name!r} is {col.type}, not numbers or timestamps", path)
    return np.asarray(col.to_numpy(), dtype=np.float64)


def read_parquet(
    path: PathLike,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    min_rating: float | None = None,
) -> RawInteractions:
    """Read a parquet file of interactions (needs pyarrow: ``embudget[parquet]``)."""
    from embudget.data.raw import _read_regular_file

    pq = _pyarrow()
    import hashlib

    import pyarrow as pa

    p = str(path)
    data = _read_regular_file(Path(path))
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as e:
        raise DataFormatError(f"not a readable parquet file ({e})", p) from None
    names = [str(n) for n in table.column_names]
    named = [c for c in (user_col, item_col, time_col) if c is not None]
    missing = [c for c in named if c not in names]
    if missing:
        raise DataFormatError(
            f"unknown columns {names}: no column named "
            f"{', '.join(map(repr, missing))}; pass user_col/item_col/time_col "
            "(--user-col/--item-col/--time-col) naming these columns",
            p,
        )
    pairs: tuple[tuple[str, str], ...]
    if user_col is not None or item_col is not None:
        pairs = ((user_col or "user_id", item_col or "item_id"),)
    else:
        pairs = DEFAULT_COLUMN_PAIRS
    found = next(((u, i) for u, i in pairs if u in names and i in names), None)
    if found is None:
        raise DataFormatError(
            f"no user/item column pair among {names}; pass user_col and item_col", p
        )
    if table.num_rows == 0:
        raise empty_error(p)
    users = _ids(table.column(found[0]).combine_chunks(), p, found[0])
    items = _ids(table.column(found[1]).combine_chunks(), p, found[1])
    ratings = (
        _numbers(table.column("rating").combine_chunks(), p, "rating")
        if ("rating" in names)
        else None
    )
    tname = time_col or "timestamp"
    ts = _numbers(table.column(tname).combine_chunks(), p, tname) if tname in names else None
    users, items, ratings, ts = _filter_rating(users, items, ratings, ts, min_rating, p)
    digest = hashlib.sha256(data).hexdigest()
    return RawInteractions(users, items, ratings, ts, path=p, sha256=digest)
