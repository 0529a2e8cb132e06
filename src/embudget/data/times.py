"""Timestamp columns: numbers (e.g. Unix seconds) or ISO 8601 dates, as float64 seconds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embudget.data.raw import show
from embudget.errors import DataFormatError


def time_column(col: Sequence[str], path: str, lines: np.ndarray, name: str) -> np.ndarray:
    """float64 times of a text column: numbers as given, ISO dates as seconds since 1970.

    Raises:
        DataFormatError: naming the line of the first value that is neither.
    """
    try:
        return np.array(col, dtype=np.float64)
    except ValueError:
        pass
    try:
        stamps = np.array([c.strip() for c in col], dtype="datetime64[s]")
    except ValueError:
        stamps = None
    if stamps is not None and not np.isnat(stamps).any():
        return stamps.astype(np.int64).astype(np.float64)
    for r, tok in enumerate(col):
        try:
            float(tok)
            continue
        except ValueError:
            pass
        try:
            if not np.isnat(np.datetime64(tok.strip(), "s")):
                continue
        except ValueError:
            pass
        raise DataFormatError(
            f"{name} value {show(tok)} is neither a number nor an ISO date "
            "(e.g. 1700000000 or 2024-01-31T12:00:00)",
            path,
            int(lines[r]),
        )
    raise DataFormatError(f"{name} column mixes numbers and dates; use one kind", path)
