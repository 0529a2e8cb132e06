"""Raw interactions of one file, and the file access every reader shares.

``.gz`` files are decompressed transparently (detected by the gzip magic bytes, whatever the
extension); the sha256 is that of the decompressed content. A leading UTF-8 byte-order mark is
dropped from the text (not from the hash).

Untrusted files are read with bounded memory:

- only regular files are opened; a directory, FIFO, device or socket is refused by what it is;
- decompression stops past :data:`GZIP_MAX_RATIO` times the compressed size (at least
  :data:`GZIP_MIN_LIMIT` bytes) or :data:`GZIP_MAX_BYTES` bytes, whichever is smaller;
- a field longer than :data:`FIELD_MAX_CHARS` characters (an id: :data:`ID_MAX_CHARS`) is
  refused, since numpy stores strings at the width of the longest one;
- an integer token is range-checked before conversion (:func:`check_int_token`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embudget.errors import DataFormatError, from_os_error

PathLike = str | Path

#: Most bytes of decompressed text per byte of a ``.gz`` file (text compresses 2-10x).
GZIP_MAX_RATIO = 200
#: The decompression limit of small files: the ratio alone would refuse a tiny file.
GZIP_MIN_LIMIT = 2**20
#: Most bytes of decompressed text of any ``.gz`` file.
GZIP_MAX_BYTES = 2**31
#: Longest field of a delimited file (ratings, timestamps, other columns).
FIELD_MAX_CHARS = 4096
#: Longest raw user or item id.
ID_MAX_CHARS = 256
#: Longest decimal int64 (``-9223372036854775808``), the bound checked before conversion.
INT_MAX_CHARS = 20


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
    """Decoded text of ``path`` (gunzipped if gzip-compressed) and the sha256 of that text.

    Raises:
        DataFormatError: not a regular file, a corrupt or oversized gzip file, or not UTF-8.
        FileAccessError: the operating system refused to read it (e.g. permission denied).
    """
    p = Path(path)
    raw = _read_regular_file(p)
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the extension
        raw = _gunzip(raw, str(p))
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataFormatError(
            f"not valid UTF-8 text ({e.reason}); save the file as UTF-8", str(p), line
        ) from None
    return text.removeprefix("\ufeff"), digest


#: what a file that is not a regular file is, by its mode
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _read_regular_file(p: Path) -> bytes:
    """The bytes of ``p``, checked to be a regular file before it is opened (opening a FIFO
    would wait for a writer; a device may never end)."""
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise DataFormatError(
            "file not found; check the path or the dataset directory", str(p)
        ) from None
    except OSError as e:
        raise from_os_error(e, p) from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise DataFormatError(f"expected a regular file, got {kind}", str(p))
    try:
        with open(p, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # replaced since the check
                raise DataFormatError("expected a regular file", str(p))
            return f.read()
    except OSError as e:
        raise from_os_error(e, p) from None


def gzip_limit(compressed_bytes: int) -> int:
    """Most decompressed bytes accepted from a ``.gz`` file of ``compressed_bytes``."""
    return min(GZIP_MAX_BYTES, max(GZIP_MIN_LIMIT, GZIP_MAX_RATIO * compressed_bytes))


def _gunzip(raw: bytes, path: str) -> bytes:
    limit = gzip_limit(len(raw))
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:
            out = gz.read(limit + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DataFormatError(
            f"corrupt gzip file ({e}); re-download or re-compress it", path
        ) from None
    if len(out) > limit:
        raise DataFormatError(
            f"gzip file expands past {limit:,} bytes ({len(raw):,} compressed; the limit is "
            f"{GZIP_MAX_RATIO}x the compressed size, at most {GZIP_MAX_BYTES:,}); refusing to "
            "read it: decompress it yourself if it is genuine",
            path,
        )
    return out


def show(token: str, width: int = 40) -> str:
    """``token`` for an error message: its repr, cut to ``width`` characters."""
    if len(token) <= width:
        return repr(token)
    return f"{token[:width]!r}... ({len(token):,} characters)"


def check_int_token(tok: str, path: str, line: int, what: str) -> int:
    """``tok`` as an int64, or the error naming the line: the length is checked before the
    conversion (a huge token would be slow to convert), the range after it."""
    if len(tok.strip()) > INT_MAX_CHARS:
        raise DataFormatError(f"{what} {show(tok)} does not fit in int64", path, line)
    try:
        v = int(tok)
    except ValueError:
        raise int_token_error(tok, path, line, what) from None
    if not -(2**63) <= v < 2**63:
        raise DataFormatError(f"{what} {show(tok)} does not fit in int64", path, line)
    return v


def field_too_long(path: str, line: int, column: str, length: int, limit: int) -> DataFormatError:
    """The error for a field over the length limit."""
    return DataFormatError(
        f"field in column {column} is {length:,} characters long (the limit is {limit:,}); "
        "check the delimiter and quoting of this line",
        path,
        line,
    )


def empty_error(path: str, what: str = "interactions") -> DataFormatError:
    """The error for a file without any data rows."""
    return DataFormatError(
        f"no {what} found (empty dataset); check that this is the right file and format", path
    )


def int_token_error(tok: str, path: str, line: int, what: str) -> DataFormatError:
    """The error for a non-integer id token in a format that needs integer ids."""
    return DataFormatError(
        f"{what} token {show(tok)} is not an integer; this format needs integer ids "
        "(use the csv/recbole reader for string ids)",
        path,
        line,
    )


def strip_gz(name: str) -> str:
    """``name`` without a trailing ``.gz``."""
    return name[:-3] if name.endswith(".gz") else name


# --- checksums ----------------------------------------------------------------------------


def _read_sums(sums: Path, prefix: str) -> dict[str, str]:
    """{file name: sha256} from a sha256sum file, for entries under ``prefix`` ("" = here)."""
    out: dict[str, str] = {}
    for line in read_text(sums)[0].splitlines():
        digest, _, rel = line.strip().partition("  ")
        rel = rel.lstrip("*").removeprefix("./")
        if prefix:
            if not rel.startswith(prefix + "/"):
                continue
            rel = rel[len(prefix) + 1 :]
        if rel and "/" not in rel:
            out[strip_gz(rel)] = digest.lower()
    return out


def verify_checksums(folder: Path, hashes: dict[str, str]) -> int:
    """Check content hashes against ``SHA256SUMS`` in ``folder`` or its parent; returns the
    number of files verified. Raises DataFormatError on a mismatch."""
    checked = 0
    for sums, prefix in ((folder / "SHA256SUMS", ""), (folder.parent / "SHA256SUMS", folder.name)):
        if not sums.is_file():
            continue
        for fname, want in _read_sums(sums, prefix).items():
            got = hashes.get(fname)
            if got is None:
                continue
            if got != want:
                raise DataFormatError(
                    f"sha256 mismatch against {sums}: expected {want}, got {got}; the file is "
                    "corrupted or modified, restore the original",
                    str(folder / fname),
                )
            checked += 1
    return checked
