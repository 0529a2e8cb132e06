"""Raw interactions of one file, and the file access every reader shares.

``.gz`` files are decompressed transparently (detected by the gzip magic bytes, whatever the
extension); the sha256 is that of the decompressed content.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embudget.errors import DataFormatError

PathLike = str | Path


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


def empty_error(path: str, what: str = "interactions") -> DataFormatError:
    """The error for a file without any data rows."""
    return DataFormatError(
        f"no {what} found (empty dataset); check that this is the right file and format", path
    )


def int_token_error(tok: str, path: str, line: int, what: str) -> DataFormatError:
    """The error for a non-integer id token in a format that needs integer ids."""
    return DataFormatError(
        f"{what} token {tok!r} is not an integer; this format needs integer ids "
        "(use the csv/recbole reader for string ids)",
        path,
        line,
    )


def strip_gz(name: str) -> str:
    """``name`` without a trailing ``.gz``."""
    return name[:-3] if name.endswith(".gz") else name
