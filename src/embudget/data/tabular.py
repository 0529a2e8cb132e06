"""Readers of delimited tables: Last.fm TSV, RecBole ``.inter``, MovieLens and generic CSV.

Every reader splits the file column-wise in one vectorised pass; a slow per-row pass runs only
to locate a bad value for the error message.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import compress, repeat
from pathlib import Path

import numpy as np

from embudget.data.quoted import split_quoted
from embudget.data.raw import (
    FIELD_MAX_CHARS,
    ID_MAX_CHARS,
    PathLike,
    RawInteractions,
    check_int_token,
    empty_error,
    field_too_long,
    read_text,
    show,
    strip_gz,
)
from embudget.data.times import time_column
from embudget.errors import DataFormatError

# Header column pairs tried, in order, when the caller names no user/item columns.
DEFAULT_COLUMN_PAIRS: tuple[tuple[str, str], ...] = (
    ("user_id", "item_id"),
    ("user", "item"),
    ("userId", "movieId"),
)
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


# --- delimited tables ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """Fields of a delimited file, column-wise, with the 1-based line of every data row."""

    path: str
    header: list[str] | None
    columns: list[list[str]]
    lines: np.ndarray
    sha256: str
    header_line: int = 1

    def col(self, j: int) -> list[str]:
        return self.columns[j]


def _delim_name(delim: str | None) -> str:
    return "whitespace" if delim is None else repr(delim)


def _read_table(
    path: PathLike, delim: str | None, header: bool, ncols: int | tuple[int, ...] | None = None
) -> _Table:
    """Split a delimited file into columns. ``delim=None`` splits on any whitespace.

    The column count comes from the header (``header=True``) or the first data row, and every
    row must match it; ``ncols`` restricts the allowed counts.
    """
    text, digest = read_text(path)
    p = str(path)
    if header and delim is not None and len(delim) == 1 and '"' in text:
        fields, cols, rows_at, head_at = split_quoted(text, delim, p)
        return _Table(p, fields, cols, rows_at, digest, head_at)
    if "\r" in text:
        text = text.replace("\r", "")
    lines = text.split("\n")
    del text  # peak memory: the lines, then the fields, never all three at once
    n = len(lines)
    blank = (np.fromiter(map(len, lines), dtype=np.int64, count=n) == 0) | np.fromiter(
        map(str.isspace, lines), dtype=bool, count=n
    )
    line_no = np.flatnonzero(~blank) + 1
    rows = list(compress(lines, ~blank))
    head: list[str] | None = None
    header_line = int(line_no[0]) if len(line_no) else 1
    if header:
        if not rows:
            raise empty_error(p, "header line")
        first = rows.pop(0)
        head = [h.strip() for h in (first.split() if delim is None else first.split(delim))]
        line_no = line_no[1:]
    if not rows:
        raise empty_error(p)
    if delim is None:
        counts = np.fromiter(map(len, map(str.split, rows)), dtype=np.int64, count=len(rows))
    else:
        counts = (
            np.fromiter(map(str.count, rows, repeat(delim)), dtype=np.int64, count=len(rows)) + 1
        )
    want = len(head) if head is not None else int(counts[0])
    allowed = (ncols,) if isinstance(ncols, int) else ncols
    if allowed is not None and want not in allowed:
        raise DataFormatError(
            f"found {want} columns separated by {_delim_name(delim)}, expected "
            f"{' or '.join(map(str, allowed))}; check the file format and delimiter",
            p,
            header_line,
        )
    bad = np.flatnonzero(counts != want)
    if len(bad):
        i = int(bad[0])
        raise DataFormatError(
            f"wrong column count: {int(counts[i])} columns separated by {_delim_name(delim)}, "
            f"expected {want} (as in the {'header' if head is not None else 'first line'}); "
            "fix this line or pass the right delimiter",
            p,
            int(line_no[i]),
        )
    longest = max(map(len, rows))
    joined = " ".join(rows) if delim is None else delim.join(rows)
    del lines, rows
    flat = joined.split() if delim is None else joined.split(delim)
    del joined
    columns = [flat[j::want] for j in range(want)]
    del flat
    t = _Table(p, head, columns, line_no, digest, header_line)
    if head is not None and max(map(len, head)) > FIELD_MAX_CHARS:
        j = max(range(want), key=lambda c: len(head[c]))
        raise field_too_long(p, header_line, str(j + 1), len(head[j]), FIELD_MAX_CHARS)
    if longest > FIELD_MAX_CHARS:  # only then can a field be too long
        for j in range(want):
            _check_lengths(t, j, FIELD_MAX_CHARS)
    return t


def _column_name(t: _Table, j: int) -> str:
    return f"{j + 1} ({show(t.header[j], 20)})" if t.header is not None else str(j + 1)


def _check_lengths(t: _Table, j: int, limit: int) -> None:
    col = t.col(j)
    lens = np.fromiter(map(len, col), dtype=np.int64, count=len(col))
    r = int(np.argmax(lens)) if len(lens) else 0
    if len(lens) and lens[r] > limit:
        raise field_too_long(t.path, int(t.lines[r]), _column_name(t, j), int(lens[r]), limit)


def _int_column(t: _Table, j: int, what: str) -> np.ndarray:
    col = t.col(j)
    try:
        return np.array(col, dtype=np.int64)
    except (ValueError, OverflowError):
        for r, tok in enumerate(col):
            check_int_token(tok, t.path, int(t.lines[r]), what)
        raise DataFormatError(f"{what} column is not all integers", t.path) from None


def _float_column(t: _Table, j: int, what: str) -> np.ndarray:
    col = t.col(j)
    try:
        return np.array(col, dtype=np.float64)
    except ValueError:
        for r, tok in enumerate(col):
            try:
                float(tok)
            except ValueError:
                raise DataFormatError(
                    f"{what} value {show(tok)} is not a number; fix the value or drop the column",
                    t.path,
                    int(t.lines[r]),
                ) from None
        raise DataFormatError(f"{what} column is not all numbers", t.path) from None


def _id_column(t: _Table, j: int) -> np.ndarray:
    """int64 ids if every token is an integer, else stripped unicode ids."""
    col = t.col(j)
    try:
        return np.array(col, dtype=np.int64)
    except (ValueError, OverflowError):
        # string ids: numpy stores each at the width of the longest, so bound that first
        _check_lengths(t, j, ID_MAX_CHARS)
        ids = np.char.strip(np.array(col, dtype=np.str_))
        empty = np.flatnonzero(np.char.str_len(ids) == 0)
        if len(empty):
            raise DataFormatError(
                "empty id field; every row needs a user and an item id",
                t.path,
                int(t.lines[int(empty[0])]),
            ) from None
        return ids


def _filter_rating(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray | None,
    timestamps: np.ndarray | None,
    min_rating: float | None,
    path: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    if min_rating is None:
        return users, items, ratings, timestamps
    if ratings is None:
        raise DataFormatError(
            f"min_rating={min_rating} was given but the file has no rating column; "
            "drop min_rating or name the rating column",
            path,
        )
    keep = ratings >= min_rating
    if not keep.any():
        raise DataFormatError(
            f"no interaction has rating >= {min_rating} (empty dataset); lower min_rating", path
        )
    ts = None if timestamps is None else timestamps[keep]
    return users[keep], items[keep], ratings[keep], ts


# --- Last.fm (LightGCN-PyTorch) -----------------------------------------------------------


def read_lastfm(path: PathLike) -> RawInteractions:
    """Read LightGCN-PyTorch Last.fm TSV ``user item weight`` (1-based ids; weight ignored)."""
    t = _read_table(path, "\t", header=False, ncols=(2, 3))
    users = _int_column(t, 0, "user")
    items = _int_column(t, 1, "item")
    for what, ids in (("user", users), ("item", items)):
        bad = np.flatnonzero(ids < 0)
        if bad.size:  # the format's ids are 1-based counts, as in LightGCN's text format
            raise DataFormatError(
                f"negative {what} id {int(ids[bad[0]])}; Last.fm ids must be >= 0",
                t.path,
                int(t.lines[bad[0]]),
            )
    return RawInteractions(users=users, items=items, path=t.path, sha256=t.sha256)


# --- RecBole atomic .inter ----------------------------------------------------------------


def read_recbole(
    path: PathLike,
    min_rating: float | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
) -> RawInteractions:
    """Read a RecBole atomic ``.inter`` file (tab-separated, typed header ``name:type``).

    ``user_col``/``item_col`` default to ``user_id``/``item_id``; ``rating`` and ``timestamp``
    columns are kept when present. ``min_rating`` keeps only ratings >= it.
    """
    t = _read_table(path, "\t", header=True)
    assert t.header is not None
    names: list[str] = []
    for field_ in t.header:
        name, sep, typ = field_.partition(":")
        if not sep or typ not in RECBOLE_TYPES:
            raise DataFormatError(
                f"header field {field_!r} is not 'name:type' with type in {RECBOLE_TYPES}; "
                "RecBole atomic files need a typed header like 'user_id:token'",
                t.path,
                t.header_line,
            )
        names.append(name)
    return _from_named_columns(
        t, names, min_rating, user_col, item_col, "rating", time_col or "timestamp", time_col
    )


def _from_named_columns(
    t: _Table,
    names: list[str],
    min_rating: float | None,
    user_col: str | None,
    item_col: str | None,
    rating_col: str = "rating",
    timestamp_col: str = "timestamp",
    required_time: str | None = None,
) -> RawInteractions:
    named = [c for c in (user_col, item_col, required_time) if c is not None]
    missing = [c for c in named if c not in names]
    if missing:
        raise DataFormatError(
            f"unknown header columns {names}: no column named "
            f"{', '.join(map(repr, missing))}; pass user_col/item_col/time_col "
            "(--user-col/--item-col/--time-col) naming these columns",
            t.path,
            t.header_line,
        )
    if user_col is not None or item_col is not None:
        pairs: tuple[tuple[str, str], ...] = (
            (user_col or DEFAULT_COLUMN_PAIRS[0][0], item_col or DEFAULT_COLUMN_PAIRS[0][1]),
        )
    else:
        pairs = DEFAULT_COLUMN_PAIRS
    found = next(((u, i) for u, i in pairs if u in names and i in names), None)
    if found is None:
        tried = ", ".join(f"{u}/{i}" for u, i in pairs)
        raise DataFormatError(
            f"unknown header columns {names}: no user/item column pair found (tried {tried}); "
            "pass user_col and item_col naming the right columns",
            t.path,
            t.header_line,
        )
    users = _id_column(t, names.index(found[0]))
    items = _id_column(t, names.index(found[1]))
    ratings = _float_column(t, names.index(rating_col), "rating") if rating_col in names else None
    ts = (
        time_column(t.col(names.index(timestamp_col)), t.path, t.lines, timestamp_col)
        if timestamp_col in names
        else None
    )
    users, items, ratings, ts = _filter_rating(users, items, ratings, ts, min_rating, t.path)
    return RawInteractions(users, items, ratings, ts, path=t.path, sha256=t.sha256)


# --- MovieLens ----------------------------------------------------------------------------


def read_movielens(path: PathLike, min_rating: float | None = None) -> RawInteractions:
    """Read MovieLens ``ratings.dat`` (``user::item::rating::timestamp``) or ``ratings.csv``."""
    if strip_gz(Path(path).name).endswith(".csv"):
        return read_csv(path, delimiter=",", min_rating=min_rating)
    t = _read_table(path, "::", header=False, ncols=(3, 4))
    users = _int_column(t, 0, "user")
    items = _int_column(t, 1, "item")
    ratings: np.ndarray | None = _float_column(t, 2, "rating")
    ts = _float_column(t, 3, "timestamp") if len(t.columns) > 3 else None
    users, items, ratings, ts = _filter_rating(users, items, ratings, ts, min_rating, t.path)
    return RawInteractions(users, items, ratings, ts, path=t.path, sha256=t.sha256)


# --- generic CSV / TSV --------------------------------------------------------------------


def sniff_delimiter(path: PathLike) -> str | None:
    """Delimiter of a table: from the extension if its first line agrees, else from content.

    Returns ``None`` for whitespace-separated files.
    """
    name = strip_gz(Path(path).name).lower()
    hint = {".csv": ",", ".tsv": "\t", ".inter": "\t", ".dat": "::"}.get(Path(name).suffix)
    text, _ = read_text(path)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if hint is not None and hint in first:
        return hint
    for cand in ("\t", "::", ",", ";", "|"):
        if cand in first:
            return cand
    return None


def read_csv(
    path: PathLike,
    user_col: str | None = None,
    item_col: str | None = None,
    delimiter: str | None = None,
    min_rating: float | None = None,
    rating_col: str = "rating",
    timestamp_col: str = "timestamp",
    require_time: bool = False,
) -> RawInteractions:
    """Read a delimited file whose first line names the columns.

    Without ``user_col``/``item_col`` the pairs ``user_id/item_id``, ``user/item`` and
    ``userId/movieId`` are tried. The delimiter is sniffed when not given. RecBole-style typed
    headers (``user_id:token``) are accepted too. A file with a quote character is read by
    the standard ``csv`` reader (:mod:`embudget.data.quoted`). Timestamps
    (``timestamp_col``, numbers or ISO dates) are kept; ``require_time`` makes that column
    required.
    """
    delim = delimiter if delimiter is not None else sniff_delimiter(path)
    t = _read_table(path, delim, header=True)
    assert t.header is not None
    names = [h.strip().strip('"').partition(":")[0] for h in t.header]
    need = timestamp_col if require_time else None
    return _from_named_columns(
        t, names, min_rating, user_col, item_col, rating_col, timestamp_col, need
    )
