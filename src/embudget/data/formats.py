"""Readers for the interaction file formats embudget understands.

Every reader returns :class:`RawInteractions` (raw user ids, raw item ids, optional rating and
timestamp) for one file. ``.gz`` files are decompressed transparently. Parsing is vectorised
over the whole file; a slow per-line pass runs only to locate a bad line for the error message.

Formats:

- ``lightgcn``: LightGCN/NGCF text, ``uid item item ...`` per line (any whitespace, LF or CRLF).
- ``lastfm``: LightGCN-PyTorch Last.fm TSV ``user item weight`` (the weight is ignored).
- ``recbole``: RecBole atomic ``.inter`` with a typed header (``user_id:token ...``).
- ``movielens``: ``ratings.dat`` (``user::item::rating::timestamp``) or ``ratings.csv``.
- ``csv``: generic CSV/TSV with a header naming the user and item columns.

The LightGCN reader is defined here; the delimited-table readers live in
:mod:`embudget.data.tabular` and the common file access in :mod:`embudget.data.raw`. All of
them are importable from this module.
"""

from __future__ import annotations

import warnings

import numpy as np

from embudget.data.raw import (
    PathLike,
    RawInteractions,
    check_int_token,
    empty_error,
    read_text,
)
from embudget.data.tabular import (
    DEFAULT_COLUMN_PAIRS,
    RECBOLE_TYPES,
    read_csv,
    read_lastfm,
    read_movielens,
    read_recbole,
    sniff_delimiter,
)
from embudget.errors import DataFormatError

__all__ = [
    "DEFAULT_COLUMN_PAIRS",
    "RECBOLE_TYPES",
    "PathLike",
    "RawInteractions",
    "read_csv",
    "read_lastfm",
    "read_lightgcn",
    "read_movielens",
    "read_recbole",
    "read_text",
    "sniff_delimiter",
]

_INT64_MAX = np.iinfo(np.int64).max


# --- LightGCN text ------------------------------------------------------------------------


def read_lightgcn(path: PathLike) -> RawInteractions:
    """Read LightGCN/NGCF text: one line per user, ``uid item item ...``.

    Tokens are split on any whitespace; lines with a uid and no items and empty lines are
    accepted (they carry no interaction). Ids must be non-negative integers.
    """
    text, digest = read_text(path)
    p = str(path)
    lines = text.split("\n")
    counts = np.fromiter(map(len, map(str.split, lines)), dtype=np.int64, count=len(lines))
    total = int(counts.sum())
    vals = _fast_ints(text, total)
    if vals is None:
        _raise_first_bad_int(lines, p, "id")
        raise AssertionError("unreachable")  # pragma: no cover
    ends = np.cumsum(counts)
    if total and vals.min() < 0:
        first = int(np.argmax(vals < 0))
        line = int(np.searchsorted(ends, first, side="right")) + 1
        raise DataFormatError(f"negative id {int(vals[first])}; LightGCN ids must be >= 0", p, line)
    has = counts > 0
    starts = (ends - counts)[has]
    is_item = np.ones(total, dtype=bool)
    is_item[starts] = False
    users = np.repeat(vals[starts], counts[has] - 1)
    items = vals[is_item]
    if len(items) == 0:
        raise empty_error(p)
    return RawInteractions(users=users, items=items, path=p, sha256=digest)


def _fast_ints(text: str, expected: int) -> np.ndarray | None:
    """All whitespace-separated integers of ``text``, or None if any token is not one."""
    if expected == 0:
        return np.zeros(0, dtype=np.int64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns (not raises) on unparsable data
            vals = np.fromstring(text, dtype=np.int64, sep=" ")
        # fromstring stops silently at e.g. "3.5" -> "3" and saturates on overflow
        if len(vals) == expected and not (vals == _INT64_MAX).any():
            return vals
    except (ValueError, DeprecationWarning):
        pass  # e.g. a separator numpy does not know (U+2028): the slow path decides
    try:
        return np.array(text.split(), dtype=np.int64)
    except (ValueError, OverflowError):
        return None


def _raise_first_bad_int(lines: list[str], path: str, what: str) -> None:
    for lineno, line in enumerate(lines, 1):
        for tok in line.split():
            check_int_token(tok, path, lineno, what)
