"""Delimited text with quoted fields, through the standard library's ``csv`` reader.

A quoted field may hold the delimiter, doubled quotes or a line break; the fast column-wise
split of :mod:`embudget.data.tabular` cannot see those, so a file with a quote character goes
through here. The same limits hold: a field longer than
:data:`~embudget.data.raw.FIELD_MAX_CHARS` is refused (the reader stops at it), and every row
has the header's column count.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from embudget.data.raw import FIELD_MAX_CHARS, empty_error
from embudget.errors import DataFormatError


def split_quoted(
    text: str, delim: str, path: str
) -> tuple[list[str], list[list[str]], np.ndarray, int]:
    """(header, columns, 1-based line of each data row, header line) of a quoted table."""
    previous = csv.field_size_limit()
    csv.field_size_limit(FIELD_MAX_CHARS)
    try:
        return _split(text, delim, path)
    finally:
        csv.field_size_limit(previous)


def _split(text: str, delim: str, path: str) -> tuple[list[str], list[list[str]], np.ndarray, int]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim, strict=True)
    head: list[str] | None = None
    header_line = 1
    rows: list[list[str]] = []
    lines: list[int] = []
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            line = reader.line_num or start
            if "field larger than field limit" in str(e):
                raise DataFormatError(
                    f"field longer than {FIELD_MAX_CHARS} characters; fix the line or check "
                    "for an unbalanced quote",
                    path,
                    line,
                ) from None
            raise DataFormatError(f"malformed quoted field ({e})", path, line) from None
        first, start = start, reader.line_num + 1
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if head is None:
            head, header_line = [h.strip() for h in row], first
            continue
        if len(row) != len(head):
            raise DataFormatError(
                f"wrong column count: {len(row)} columns separated by {delim!r}, expected "
                f"{len(head)} (as in the header); fix this line or pass the right delimiter",
                path,
                first,
            )
        rows.append(row)
        lines.append(first)
    if head is None:
        raise empty_error(path, "header line")
    if not rows:
        raise empty_error(path)
    columns = [list(c) for c in zip(*rows, strict=True)]
    return head, columns, np.asarray(lines, dtype=np.int64), header_line
