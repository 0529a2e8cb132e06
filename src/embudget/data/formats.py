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
"""

from __future__ import annotations

import gzip
import hashlib
import warnings
import zlib
from dataclasses import dataclass
from itertools import compress, repeat
from pathlib import Path

import numpy as np

from embudget.errors import DataFormatError

PathLike = str | Path

# Header column pairs tried, in order, when the caller names no user/item columns.
DEFAULT_COLUMN_PAIRS: tuple[tuple[str, str], ...] = (
    ("user_id", "item_id"),
    ("user", "item"),
    ("userId", "movieId"),
)
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
_INT64_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True)
class RawInteractions:
    """Interactions of one file, with raw ids (int64 if every id is an integer, else unicode).

    Attributes:
        users, items: raw ids, one entry per interaction (file order).
        ratings, timestamps: float64 per interaction, or None when the file has none.
        path: the file read.
        sha256: sha256 of the (decompressed) file content.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    path: str = ""
    sha256: str = ""

    def __len__(self) -> int:
        return len(self.users)


# --- file access --------------------------------------------------------------------------


def read_text(path: PathLike) -> tuple[str, str]:
    """Decoded text of ``path`` (gunzipped if gzip-compressed) and the sha256 of that text."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(
            "file not found; check the path or the dataset directory", str(p)
        ) from None
    except IsADirectoryError:
        raise DataFormatError("expected a file, got a directory", str(p)) from None
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the extension
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataFormatError(
                f"corrupt gzip file ({e}); re-download or re-compress it", str(p)
            ) from None
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataFormatError(
            f"not valid UTF-8 text ({e.reason}); save the file as UTF-8", str(p), line
        ) from None
    return text, digest


def _empty_error(path: str, what: str = "interactions") -> DataFormatError:
    return DataFormatError(
        f"no {what} found (empty dataset); check that this is the right file and format", path
    )


def _int_token_error(tok: str, path: str, line: int, what: str) -> DataFormatError:
    return DataFormatError(
        f"{what} token {tok!r} is not an integer; this format needs integer ids "
        "(use the csv/recbole reader for string ids)",
        path,
        line,
    )


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
        raise _empty_error(p)
    return RawInteractions(users=users, items=items, path=p, sha256=digest)


def _fast_ints(text: str, expected: int) -> np.ndarray | None:
    """All whitespace-separated integers of ``text``, or None if any token is not one."""
    if expected == 0:
        return np.zeros(0, dtype=np.int64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns (not raises) on unparsable data
            vals = np.fromstring(text, dtype=np.int64, sep=" ")
    except (ValueError, DeprecationWarning):
        return None
    # fromstring stops silently at e.g. "3.5" -> "3" and saturates on overflow
    if len(vals) != expected or (vals == _INT64_MAX).any():
        try:
            return np.array(text.split(), dtype=np.int64)
        except (ValueError, OverflowError):
            return None
    return vals


def _raise_first_bad_int(lines: list[str], path: str, what: str) -> None:
    for lineno, line in enumerate(lines, 1):
        for tok in line.split():
            try:
                v = int(tok)
            except ValueError:
                raise _int_token_error(tok, path, lineno, what) from None
            if not -(2**63) <= v < 2**63:
                raise DataFormatError(f"id {tok} does not fit in int64", path, lineno)


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
    if "\r" in text:
        text = text.replace("\r", "")
    lines = text.split("\n")
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
            raise _empty_error(p, "header line")
        first = rows.pop(0)
        head = [h.strip() for h in (first.split() if delim is None else first.split(delim))]
        line_no = line_no[1:]
    if not rows:
        raise _empty_error(p)
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
    flat = " ".join(rows).split() if delim is None else delim.join(rows).split(delim)
    columns = [flat[j::want] for j in range(want)]
    return _Table(p, head, columns, line_no, digest, header_line)


def _int_column(t: _Table, j: int, what: str) -> np.ndarray:
    col = t.col(j)
    try:
        return np.array(col, dtype=np.int64)
    except (ValueError, OverflowError):
        for r, tok in enumerate(col):
            try:
                int(tok)
            except (ValueError, OverflowError):
                raise _int_token_error(tok, t.path, int(t.lines[r]), what) from None
        raise  # pragma: no cover


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
                    f"{what} value {tok!r} is not a number; fix the value or drop the column",
                    t.path,
                    int(t.lines[r]),
                ) from None
        raise  # pragma: no cover


def _id_column(t: _Table, j: int) -> np.ndarray:
    """int64 ids if every token is an integer, else stripped unicode ids."""
    col = t.col(j)
    try:
        return np.array(col, dtype=np.int64)
    except (ValueError, OverflowError):
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
    return RawInteractions(users=users, items=items, path=t.path, sha256=t.sha256)


# --- RecBole atomic .inter ----------------------------------------------------------------


def read_recbole(
    path: PathLike,
    min_rating: float | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
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
    return _from_named_columns(t, names, min_rating, user_col, item_col)


def _from_named_columns(
    t: _Table,
    names: list[str],
    min_rating: float | None,
    user_col: str | None,
    item_col: str | None,
    rating_col: str = "rating",
    timestamp_col: str = "timestamp",
) -> RawInteractions:
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
        _float_column(t, names.index(timestamp_col), "timestamp")
        if timestamp_col in names
        else None
    )
    users, items, ratings, ts = _filter_rating(users, items, ratings, ts, min_rating, t.path)
    return RawInteractions(users, items, ratings, ts, path=t.path, sha256=t.sha256)


# --- MovieLens ----------------------------------------------------------------------------


def read_movielens(path: PathLike, min_rating: float | None = None) -> RawInteractions:
    """Read MovieLens ``ratings.dat`` (``user::item::rating::timestamp``) or ``ratings.csv``."""
    if _strip_gz(Path(path).name).endswith(".csv"):
        return read_csv(path, delimiter=",", min_rating=min_rating)
    t = _read_table(path, "::", header=False, ncols=(3, 4))
    users = _int_column(t, 0, "user")
    items = _int_column(t, 1, "item")
    ratings: np.ndarray | None = _float_column(t, 2, "rating")
    ts = _float_column(t, 3, "timestamp") if len(t.columns) > 3 else None
    users, items, ratings, ts = _filter_rating(users, items, ratings, ts, min_rating, t.path)
    return RawInteractions(users, items, ratings, ts, path=t.path, sha256=t.sha256)


# --- generic CSV / TSV --------------------------------------------------------------------


def _strip_gz(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


def sniff_delimiter(path: PathLike) -> str | None:
    """Delimiter of a table: from the extension if its first line agrees, else from content.

    Returns ``None`` for whitespace-separated files.
    """
    name = _strip_gz(Path(path).name).lower()
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
) -> RawInteractions:
    """Read a delimited file whose first line names the columns.

    Without ``user_col``/``item_col`` the pairs ``user_id/item_id``, ``user/item`` and
    ``userId/movieId`` are tried. The delimiter is sniffed when not given. RecBole-style typed
    headers (``user_id:token``) are accepted too.
    """
    delim = delimiter if delimiter is not None else sniff_delimiter(path)
    t = _read_table(path, delim, header=True)
    assert t.header is not None
    names = [h.strip().strip('"').partition(":")[0] for h in t.header]
    return _from_named_columns(t, names, min_rating, user_col, item_col, rating_col, timestamp_col)
