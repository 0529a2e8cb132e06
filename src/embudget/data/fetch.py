"""Downloading public datasets into a cache folder, checked against recorded checksums.

``fetch_dataset("ml-1m", "cache/data")`` downloads the canonical public files of ML-1M
(:data:`embudget.data.remote.REMOTE_DATASETS` lists each dataset's sources, checksums and
licence notes), checks
every download against its recorded sha256 (or, where only that is published, its git blob
id), unpacks the named archive members and installs ``cache/data/ml-1m/`` with a
``SHA256SUMS`` that :func:`embudget.data.load.load_dataset` checks on every load. A name is
then found by :func:`embudget.data.locate.resolve_dataset`, which looks in ``./cache/data``
(the command line's default) after the data search path.

Nothing is half-written: files are downloaded into a temporary folder inside the cache
folder, verified, unpacked, and the folder is renamed into place only when complete; on any
failure it is removed. A dataset already in place is only re-checked (no network). Without
network access, a file downloaded by hand to ``<cache>/downloads/<name>/<file>`` is checked
and used instead (the error of a failed download names that path). Nothing is written
outside the cache folder given.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from embudget import __version__
from embudget.data.remote import REMOTE_DATASETS, Download, RemoteDataset
from embudget.errors import EmbudgetError, from_os_error
from embudget.io import file_lock, write_json, write_text

__all__ = [
    "REMOTE_DATASETS",
    "ChecksumError",
    "Download",
    "DownloadError",
    "FetchError",
    "FetchResult",
    "RemoteDataset",
    "check_fetched",
    "fetch_dataset",
    "git_blob_id",
    "remote_dataset",
]

log = logging.getLogger(__name__)

#: Bytes read per chunk while downloading and hashing.
CHUNK = 1 << 20
#: Most bytes of one download whose size is not recorded.
MAX_DOWNLOAD_BYTES = 2**31
#: The list of content hashes written into every fetched dataset folder.
SUMS_FILE = "SHA256SUMS"
#: Where each fetched folder records its sources and licence note.
SOURCE_FILE = "SOURCE.json"
#: Where files downloaded by hand are looked for: ``<cache>/downloads/<name>/<file>``.
MANUAL_DIR = "downloads"


class FetchError(EmbudgetError):
    """A dataset cannot be fetched: an unknown name, a folder in the way, or a bad archive."""


class DownloadError(FetchError):
    """A download failed (no network, a refused connection, an HTTP error, a timeout).

    Attributes:
        urls: the addresses tried.
        manual_path: where a copy downloaded by hand is looked for.
    """

    def __init__(self, message: str, urls: tuple[str, ...], manual_path: Path) -> None:
        super().__init__(message)
        self.urls = urls
        self.manual_path = manual_path


class ChecksumError(FetchError):
    """A downloaded (or hand-placed, or cached) file is not the recorded one.

    Attributes:
        path: what was checked (a URL or a file).
        expected, actual: the recorded and the computed digest.
    """

    def __init__(self, message: str, path: str, expected: str, actual: str) -> None:
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_dataset` did.

    Attributes:
        name: the dataset.
        path: its folder.
        downloaded: False when it was already in place (then only its files were checked).
        files: sha256 of each file in the folder, as in its SHA256SUMS.
        bytes_downloaded: bytes read from the network (0 when nothing was downloaded).
    """

    name: str
    path: Path
    downloaded: bool
    files: dict[str, str]
    bytes_downloaded: int


def remote_dataset(name: str) -> RemoteDataset:
    """The registry entry of ``name``; FetchError (with the known names) if there is none."""
    spec = REMOTE_DATASETS.get(name)
    if spec is None:
        raise FetchError(
            f"no download is known for dataset {name!r}; fetchable: "
            f"{', '.join(REMOTE_DATASETS)} (gowalla and gowalla-mini are shipped with embudget)"
        )
    return spec


def fetch_dataset(
    name: str, cache_dir: str | Path, *, force: bool = False, timeout: float = 60.0
) -> FetchResult:
    """Download ``name`` into ``cache_dir/name`` (see the module docstring); a no-op that
    re-checks the files when it is already there, unless ``force``.

    Raises:
        FetchError: an unknown name, or ``cache_dir/name`` exists but was not fetched.
        DownloadError: no URL could be downloaded (the message names where to put a copy
            downloaded by hand).
        ChecksumError: a download, a hand-placed file or an installed file is not the
            recorded one.
        FileAccessError: the cache folder cannot be written.
    """
    spec = remote_dataset(name)
    root = Path(cache_dir)
    dest = root / spec.name
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise from_os_error(e, root) from None
    with file_lock(root / f".{spec.name}.lock"):
        if dest.exists() and not force:
            return FetchResult(spec.name, dest, False, check_fetched(dest, spec), 0)
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", suffix=".tmp", dir=root))
        except OSError as e:
            raise from_os_error(e, root) from None
        try:
            files: dict[str, str] = {}
            n_bytes = 0
            for dl in spec.downloads:
                path, n = _obtain(dl, staging, root / MANUAL_DIR / spec.name, timeout)
                n_bytes += n
                files.update(_unpack(dl, path, staging))
            write_text(staging / SUMS_FILE, "".join(f"{h}  {f}\n" for f, h in files.items()))
            write_json(staging / SOURCE_FILE, _provenance(spec))
            _install(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("fetched %s into %s (%d bytes downloaded)", spec.name, dest, n_bytes)
    return FetchResult(spec.name, dest, True, files, n_bytes)


def check_fetched(folder: Path, spec: RemoteDataset) -> dict[str, str]:
    """The {file: sha256} of a fetched folder, every file checked against its SHA256SUMS.

    Raises:
        FetchError: the folder was not written by :func:`fetch_dataset` (no SHA256SUMS, or a
            file of the dataset missing).
        ChecksumError: a file differs from its recorded sha256.
    """
    sums = folder / SUMS_FILE
    if not folder.is_dir() or not sums.is_file():
        raise FetchError(
            f"{folder} exists but is not a dataset folder written by embudget data fetch (no "
            f"{SUMS_FILE}); move it away, or fetch again with --force (force=True) to replace it"
        )
    want: dict[str, str] = {}
    for line in sums.read_text().splitlines():
        digest, _, fname = line.strip().partition("  ")
        if fname:
            want[fname] = digest.lower()
    missing = [f for f in spec.files() if f not in want or not (folder / f).is_file()]
    if missing:
        raise FetchError(
            f"{folder} lacks {', '.join(missing)}; fetch again with --force (force=True)"
        )
    for fname, digest in want.items():
        got = _sha256_file(folder / fname)
        if got != digest:
            raise ChecksumError(
                f"{folder / fname}: sha256 {got} differs from {digest} in {sums}: the file was "
                "corrupted or modified; fetch again with --force (force=True)",
                str(folder / fname),
                digest,
                got,
            )
    return want


# --- steps --------------------------------------------------------------------------------


def _obtain(dl: Download, staging: Path, manual_dir: Path, timeout: float) -> tuple[Path, int]:
    """The verified file of ``dl`` in ``staging`` and the bytes downloaded for it: a copy of
    the file downloaded by hand when there is one, else from the first URL that works."""
    tmp = staging / f".download-{dl.filename}"
    manual = manual_dir / dl.filename
    if manual.is_file():
        try:
            shutil.copyfile(manual, tmp)
        except OSError as e:
            raise from_os_error(e, manual) from None
        _verify(tmp, dl, _sha256_file(tmp), str(manual), f"replace or delete {manual}")
        return tmp, 0
    failures: list[str] = []
    bad: ChecksumError | None = None
    for url in dl.urls:
        try:
            n = _download(url, tmp, dl, timeout, manual)
        except DownloadError as e:
            failures.append(str(e))
            continue
        except ChecksumError as e:  # a corrupt copy: another URL may serve the right one
            bad = bad or e
            continue
        return tmp, n
    if bad is not None:
        raise bad
    raise DownloadError(
        f"could not download {dl.filename} ({'; '.join(failures)}). Without network access, "
        f"download it by hand from {dl.urls[0]} to {manual} and run the same command again "
        "(the file is checked against its recorded checksum and then used)",
        dl.urls,
        manual,
    )


def _download(url: str, target: Path, dl: Download, timeout: float, manual: Path) -> int:
    """Stream ``url`` into ``target`` while hashing it; verify; return the bytes read."""
    limit = dl.size if dl.size is not None else MAX_DOWNLOAD_BYTES
    req = urllib.request.Request(url, headers={"User-Agent": f"embudget/{__version__}"})
    h = hashlib.sha256()
    n = 0
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(target, "wb") as f:
            while chunk := resp.read(CHUNK):
                n += len(chunk)
                if n > limit:
                    raise ChecksumError(
                        f"{url} sent more than the recorded {limit:,} bytes of {dl.filename}; "
                        f"not the recorded file (nothing was kept). Download it by hand to "
                        f"{manual} if the address has moved",
                        url,
                        f"{limit} bytes",
                        f"> {limit} bytes",
                    )
                h.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}", (url,), manual) from None
    except urllib.error.URLError as e:
        raise DownloadError(f"{url}: {e.reason}", (url,), manual) from None
    except (http.client.HTTPException, TimeoutError, ConnectionError) as e:
        raise DownloadError(f"{url}: {type(e).__name__} {e}", (url,), manual) from None
    except OSError as e:  # the local side: a full disk, a read-only folder
        raise from_os_error(e, target) from None
    retry = f"retry; if it persists, download {url} by hand to {manual} and compare its checksum"
    _verify(target, dl, h.hexdigest(), url, retry)
    return n


def _verify(path: Path, dl: Download, sha256: str, source: str, what_to_do: str) -> None:
    """Check ``path`` (read from ``source``) against ``dl``'s recorded size and digests."""
    hint = (
        f"not the recorded {dl.filename}, so nothing was kept (a corrupted download, or the "
        f"file changed at its source); {what_to_do}"
    )
    size = path.stat().st_size
    if dl.size is not None and size != dl.size:
        raise ChecksumError(
            f"{source}: {size:,} bytes, expected {dl.size:,}; {hint}",
            source,
            str(dl.size),
            str(size),
        )
    if dl.sha256 is not None and sha256 != dl.sha256:
        raise ChecksumError(
            f"{source}: sha256 {sha256}, expected {dl.sha256}; {hint}", source, dl.sha256, sha256
        )
    if dl.git_blob is not None:
        blob = git_blob_id(path)
        if blob != dl.git_blob:
            raise ChecksumError(
                f"{source}: git blob id {blob}, expected {dl.git_blob}; {hint}",
                source,
                dl.git_blob,
                blob,
            )


def _unpack(dl: Download, path: Path, staging: Path) -> dict[str, str]:
    """Move a plain download to its name, or copy the named members out of an archive
    (nothing else is extracted, so no member can land outside ``staging``); return the
    sha256 of each file put in place."""
    if not dl.members:
        os.replace(path, staging / dl.filename)
        return {dl.filename: _sha256_file(staging / dl.filename)}
    out: dict[str, str] = {}
    try:
        with _open_archive(path) as opener:
            for member, target in dl.members:
                with opener(member) as src, open(staging / target, "wb") as dst:
                    out[target] = _copy_hashing(src, dst)
    except (KeyError, zipfile.BadZipFile, tarfile.TarError) as e:
        raise FetchError(
            f"{dl.filename} does not hold the expected members ({e}); the recorded archive "
            "layout is wrong, which is a bug in embudget's dataset list"
        ) from None
    path.unlink()
    return out


@contextlib.contextmanager
def _open_archive(path: Path) -> Iterator[Callable[[str], IO[bytes]]]:
    """Yield a function that opens an archive member by name (zip, or tar of any
    compression)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:

            def zip_member(name: str) -> IO[bytes]:
                return z.open(name)

            yield zip_member
        return
    with tarfile.open(path) as t:

        def member(name: str) -> IO[bytes]:
            f = t.extractfile(t.getmember(name))
            if f is None:
                raise KeyError(f"{name} is not a regular file")
            return f

        yield member


def _install(staging: Path, dest: Path) -> None:
    """Rename the finished ``staging`` folder to ``dest`` (replacing an old copy)."""
    old: Path | None = None
    try:
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
            os.replace(dest, old / dest.name)
        os.replace(staging, dest)
    except OSError as e:
        raise from_os_error(e, dest) from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _provenance(spec: RemoteDataset) -> dict[str, object]:
    return {
        "name": spec.name,
        "format": spec.fmt,
        "origin": spec.origin,
        "licence": spec.licence,
        "downloads": [
            {"file": d.filename, "urls": list(d.urls), "sha256": d.sha256, "git_blob": d.git_blob}
            for d in spec.downloads
        ],
    }


# --- hashing ------------------------------------------------------------------------------


def _copy_hashing(src: IO[bytes], dst: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := src.read(CHUNK):
        h.update(chunk)
        dst.write(chunk)
    return h.hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def git_blob_id(path: Path) -> str:
    """The git blob id of a file: sha1 of ``blob <size>\\0`` followed by its bytes."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
