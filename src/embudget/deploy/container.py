"""Bounded readers of the two export containers, for files embudget did not write.

Both readers parse the container's own header first (the safetensors 8-byte length and JSON
header; the zip directory and each ``.npy`` header of an npz) and check every entry's dtype,
shape and byte range against the real file size before any tensor byte is read. A tensor is
then read on request only, by its validated byte range, so reading costs at most the bytes the
file holds: a small file that claims a huge tensor is refused without allocating it.

Refused: object and structured dtypes, overlapping or out-of-file byte ranges, headers over
:data:`MAX_HEADER_BYTES`, compressed npz entries that claim more than :data:`MAX_INFLATE_RATIO`
times their compressed size, duplicate names, and anything that is not valid JSON or ``.npy``.
Every refusal is an :class:`~embudget.errors.ExportError`.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeGuard

import numpy as np

from embudget.errors import ExportError

__all__ = ["MAX_HEADER_BYTES", "MAX_INFLATE_RATIO", "Container", "Entry", "open_container"]

#: largest JSON header (safetensors) or metadata entry (npz) accepted
MAX_HEADER_BYTES = 16 * 2**20
#: largest ratio of uncompressed to compressed size of a deflated npz entry
MAX_INFLATE_RATIO = 64
META_KEY = "__metadata__"

# safetensors dtype names → numpy (little-endian); others (bf16, fp8, bool) are refused
_ST_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
}


@dataclass(frozen=True)
class Entry:
    """One stored tensor: dtype, shape, and where its bytes lie (``start`` is the absolute file
    offset for safetensors, the ``.npy`` header length for npz)."""

    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    start: int
    nbytes: int


def _bad(path: Path, what: str) -> ExportError:
    return ExportError(f"{path} is truncated or corrupted ({what}); export it again")


def _nbytes(dtype: np.dtype[Any], shape: tuple[int, ...]) -> int:
    return math.prod(shape) * dtype.itemsize


class Container:
    """An opened export: ``meta`` (the parsed JSON metadata, unchecked) and ``entries``."""

    def __init__(
        self, path: Path, size: int, meta: Any, entries: dict[str, Entry], zf: Any = None
    ) -> None:
        self.path = path
        self.size = size
        self.meta = meta
        self.entries = entries
        self._zip: zipfile.ZipFile | None = zf

    @property
    def is_npz(self) -> bool:
        """Whether the file is an ``npz`` archive (else safetensors)."""
        return self._zip is not None

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` (native byte order, writable), reading only its bytes."""
        e = self.entries[name]
        buf = bytearray(e.nbytes)
        try:
            if self._zip is not None:
                with self._zip.open(f"{name}.npy") as f:
                    _skip(f, e.start)
                    got = _fill(f, buf)
            else:
                with open(self.path, "rb") as f:
                    f.seek(e.start)
                    got = _fill(f, buf)
        except ExportError:
            raise
        except Exception as err:  # zipfile (CRC, truncation), zlib and OS errors alike
            raise _bad(self.path, f"tensor {name!r} cannot be read: {err}") from err
        if got != e.nbytes:
            raise _bad(self.path, f"tensor {name!r} is truncated")
        a = np.frombuffer(buf, dtype=e.dtype)
        a = a.astype(e.dtype.newbyteorder("="), copy=False)
        return a.reshape(e.shape)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fill(f: IO[bytes], buf: bytearray) -> int:
    view, got = memoryview(buf), 0
    while got < len(buf):
        chunk = f.read(min(len(buf) - got, 1 << 24))
        if not chunk:
            break
        view[got : got + len(chunk)] = chunk
        got += len(chunk)
    return got


def _skip(f: IO[bytes], n: int) -> None:
    if len(f.read(n)) != n:
        raise ExportError("truncated .npy header")


def open_container(path: str | Path) -> Container:
    """Parse and check the header of an export (npz or safetensors, told by its first bytes).

    Raises:
        ExportError: missing, not a regular file, or a malformed container.
    """
    path = Path(path)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise ExportError(f"{path} {what}; give the file written by `embudget export`")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
        if head[:4] == b"PK\x03\x04":
            return _open_npz(path, size)
        return _open_safetensors(path, size, head)
    except ExportError:
        raise
    except Exception as e:  # zipfile, JSON, numpy header, recursion and OS errors alike
        raise ExportError(
            f"{path} is truncated or corrupted and cannot be read ({type(e).__name__}: {e}); "
            "export it again"
        ) from e


def _open_safetensors(path: Path, size: int, head: bytes) -> Container:
    if len(head) < 8:
        raise _bad(path, f"{size} bytes, too short for a safetensors header")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise _bad(path, f"header length {n} exceeds the limit or the file size {size}")
    with open(path, "rb") as f:
        f.seek(8)
        raw = f.read(n)
    header = json.loads(raw.decode("utf-8"))
    if not isinstance(header, dict):
        raise _bad(path, "the safetensors header is not a JSON object")
    extra = header.pop(META_KEY, None) or {}
    if not isinstance(extra, dict) or "embudget" not in extra:
        raise ExportError(f"{path} is a safetensors file without embudget metadata")
    if not isinstance(extra["embudget"], str):
        raise _bad(path, "the embudget metadata is not a JSON string")
    meta = json.loads(extra["embudget"])
    data_start, data_size = 8 + n, size - 8 - n
    entries: dict[str, Entry] = {}
    for name, info in header.items():
        if not isinstance(info, dict):
            raise _bad(path, f"tensor {name!r} has no dtype/shape/offsets record")
        dt = _ST_DTYPES.get(info.get("dtype"))  # type: ignore[arg-type]
        shape, offs = info.get("shape"), info.get("data_offsets")
        if dt is None:
            raise _bad(path, f"tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
        if not _ints(shape) or not _ints(offs) or len(offs) != 2:
            raise _bad(path, f"tensor {name!r} has a malformed shape or data_offsets")
        begin, end = offs
        dtype = np.dtype(dt)
        if not 0 <= begin <= end <= data_size or end - begin != _nbytes(dtype, tuple(shape)):
            raise _bad(
                path,
                f"tensor {name!r} ({dtype}, shape {shape}) does not fit bytes {begin}..{end} "
                f"of the {data_size} data bytes",
            )
        entries[name] = Entry(dtype, tuple(shape), data_start + begin, end - begin)
    _no_overlap(path, entries)
    return Container(path, size, meta, entries)


def _ints(x: Any) -> TypeGuard[list[int]]:
    return isinstance(x, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in x
    )


def _no_overlap(path: Path, entries: dict[str, Entry]) -> None:
    spans = sorted((e.start, e.start + e.nbytes, k) for k, e in entries.items() if e.nbytes)
    for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise _bad(path, f"tensors {a!r} and {b!r} overlap")


def _open_npz(path: Path, size: int) -> Container:
    zf = zipfile.ZipFile(path)
    try:
        entries: dict[str, Entry] = {}
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise _bad(path, f"zip entry {info.filename!r} is not a .npy array")
            name = info.filename[: -len(".npy")]
            if name in entries:
                raise _bad(path, f"zip entry {info.filename!r} appears twice")
            if info.header_offset + info.compress_size > size:
                raise _bad(path, f"zip entry {info.filename!r} lies past the end of the file")
            if info.compress_type == zipfile.ZIP_STORED:
                ok = info.file_size == info.compress_size
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                ok = info.file_size <= MAX_INFLATE_RATIO * info.compress_size + 4096
            else:
                ok = False
            if not ok:
                raise _bad(
                    path,
                    f"zip entry {info.filename!r} claims {info.file_size} bytes from "
                    f"{info.compress_size} stored (method {info.compress_type})",
                )
            entries[name] = _npy_entry(path, zf, info)
        if META_KEY not in entries:
            raise ExportError(f"{path} is an npz file without embudget metadata")
        m = entries.pop(META_KEY)
        if m.dtype != np.uint8 or len(m.shape) != 1 or m.nbytes > MAX_HEADER_BYTES:
            raise _bad(path, "the metadata entry is not a bounded uint8 JSON blob")
        c = Container(path, size, None, {META_KEY: m}, zf)
        c.meta = json.loads(c.read(META_KEY).tobytes().decode("utf-8"))
        c.entries = entries
        return c
    except BaseException:
        zf.close()
        raise


def _npy_entry(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Entry:
    fmt = np.lib.format
    with zf.open(info) as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f, max_header_size=10000)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(f, max_header_size=10000)
        else:
            raise _bad(path, f"{info.filename!r} has .npy version {version}")
        start = f.tell()
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise _bad(path, f"{info.filename!r} holds {dtype} data (object or structured arrays)")
    if fortran and len(shape) > 1:
        raise _bad(path, f"{info.filename!r} is Fortran-ordered")
    nbytes = _nbytes(dtype, tuple(shape))
    if start + nbytes != info.file_size:
        raise _bad(
            path,
            f"{info.filename!r} ({dtype}, shape {shape}) needs {nbytes} bytes but holds "
            f"{info.file_size - start}",
        )
    return Entry(dtype, tuple(int(s) for s in shape), start, nbytes)
