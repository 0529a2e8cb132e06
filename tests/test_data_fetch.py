"""`embudget data fetch`: downloads from a local HTTP server (no real network), checksums,
atomic installation, hand-downloaded copies, and loading a fetched dataset by name."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import re
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from embudget.cli import main
from embudget.data import fetch as fetch_mod
from embudget.data import load_dataset
from embudget.data.fetch import (
    REMOTE_DATASETS,
    ChecksumError,
    Download,
    DownloadError,
    FetchError,
    RemoteDataset,
    fetch_dataset,
    git_blob_id,
)
from embudget.data.load import FORMATS, SHIPPED_DIR, detect_format
from embudget.data.locate import FETCH_DIR

MINI = SHIPPED_DIR / "gowalla-mini"


def _ratings_dat() -> bytes:
    """A small MovieLens ratings.dat: 30 users, each rating 8 of 40 movies."""
    lines = [
        f"{u}::{1 + (u * 7 + k * 3) % 40}::{1 + (u + k) % 5}::{978300000 + u * 100 + k}"
        for u in range(1, 31)
        for k in range(8)
    ]
    return ("\n".join(lines) + "\n").encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Server:
    """A static file server on 127.0.0.1 that records the paths requested."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
        )
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    root = tmp_path / "srv"
    root.mkdir()
    s = _Server(root)
    yield s
    s.close()


def _closed_port_url(name: str) -> str:
    """A URL nobody listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def _zip_entry(
    server: _Server, monkeypatch: pytest.MonkeyPatch, name: str = "tiny-ml", **changes: Any
) -> tuple[RemoteDataset, bytes]:
    """Register ``name``: a zip like ml-1m.zip served by ``server`` (``changes`` alter the
    Download); returns the entry and the archive bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("tiny/ratings.dat", _ratings_dat())
        z.writestr("tiny/README", "a tiny MovieLens-like fixture\n")
        z.writestr("../evil.txt", "must never be extracted\n")
    data = buf.getvalue()
    (server.root / "tiny.zip").write_bytes(data)
    fields: dict[str, Any] = {
        "filename": "tiny.zip",
        "urls": (server.url("tiny.zip"),),
        "sha256": _sha256(data),
        "size": len(data),
        "members": (("tiny/ratings.dat", "ratings.dat"), ("tiny/README", "README")),
    }
    fields.update(changes)
    spec = RemoteDataset(name, "movielens", (Download(**fields),), "a fixture", "test only")
    monkeypatch.setitem(REMOTE_DATASETS, name, spec)
    return spec, data


def _lightgcn_entry(
    server: _Server, monkeypatch: pytest.MonkeyPatch, name: str = "tiny-lgcn"
) -> RemoteDataset:
    """Register ``name``: gowalla-mini's train.txt and test.txt as two plain downloads, the
    first checked by its git blob id only (as amazon-book's train.txt is)."""
    downloads = []
    for fname in ("train.txt", "test.txt"):
        data = gzip.decompress((MINI / f"{fname}.gz").read_bytes())
        (server.root / fname).write_bytes(data)
        blob = hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()
        sha = None if fname == "train.txt" else _sha256(data)
        downloads.append(Download(fname, (server.url(fname),), sha, blob, len(data)))
    spec = RemoteDataset(name, "lightgcn", tuple(downloads), "gowalla-mini", "test only")
    monkeypatch.setitem(REMOTE_DATASETS, name, spec)
    return spec


def _leftovers(cache: Path) -> list[str]:
    """Entries of the cache folder other than dataset folders and lock files."""
    return sorted(
        p.name for p in cache.iterdir() if not p.name.endswith(".lock") and p.name != "downloads"
    )


# --- fetching -----------------------------------------------------------------------------


def test_fetch_verifies_unpacks_and_records_checksums(
    tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, data = _zip_entry(server, monkeypatch)
    cache = tmp_path / "cache"
    res = fetch_dataset("tiny-ml", cache)
    assert res.downloaded and res.bytes_downloaded == len(data)
    assert res.path == cache / "tiny-ml"
    assert sorted(p.name for p in res.path.iterdir()) == [
        "README",
        "SHA256SUMS",
        "SOURCE.json",
        "ratings.dat",
    ]  # only the named members: ../evil.txt stays in the archive
    assert not (tmp_path / "evil.txt").exists() and not (cache / "evil.txt").exists()
    assert (res.path / "ratings.dat").read_bytes() == _ratings_dat()
    sums = (res.path / "SHA256SUMS").read_text().splitlines()
    assert f"{_sha256(_ratings_dat())}  ratings.dat" in sums
    assert res.files["ratings.dat"] == _sha256(_ratings_dat())
    source = json.loads((res.path / "SOURCE.json").read_text())
    assert source["downloads"][0]["sha256"] == spec.downloads[0].sha256
    assert _leftovers(cache) == ["tiny-ml"]  # no temporary folder, no archive
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "srv"]  # nothing elsewhere


def test_second_fetch_is_a_no_op(
    tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    _zip_entry(server, monkeypatch)
    first = fetch_dataset("tiny-ml", tmp_path / "cache")
    assert server.requests == ["/tiny.zip"]
    mtime = (first.path / "ratings.dat").stat().st_mtime_ns
    again = fetch_dataset("tiny-ml", tmp_path / "cache")
    assert not again.downloaded and again.bytes_downloaded == 0
    assert again.files == first.files
    assert server.requests == ["/tiny.zip"]  # no second request
    assert (first.path / "ratings.dat").stat().st_mtime_ns == mtime


def test_fetched_dataset_loads_by_name(
    tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    _zip_entry(server, monkeypatch)
    _lightgcn_entry(server, monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert main(["data", "fetch", "tiny-ml"]) == 0  # into ./cache/data, the default
    out = capsys.readouterr().out
    assert "fetched tiny-ml into cache/data/tiny-ml" in out and "--dataset tiny-ml" in out
    assert (tmp_path / FETCH_DIR / "tiny-ml" / "ratings.dat").is_file()
    ds = load_dataset("tiny-ml")
    assert ds.n_users == 30 and ds.n_interactions == 240
    assert ds.meta["format"] == "movielens" and ds.meta["checksums_verified"] == 1

    assert main(["data", "fetch", "tiny-lgcn"]) == 0
    capsys.readouterr()
    fetched = load_dataset("tiny-lgcn", protocol="standard")
    shipped = load_dataset("gowalla-mini", protocol="standard")
    assert fetched.fingerprint() == shipped.fingerprint()
    assert fetched.meta["checksums_verified"] == 2
    assert main(["data", "stats", "tiny-lgcn", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["interactions"] == 16_749


def test_corrupted_download_raises_and_keeps_nothing(
    tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, data = _zip_entry(server, monkeypatch)
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    (server.root / "tiny.zip").write_bytes(bytes(corrupt))
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError) as exc:
        fetch_dataset("tiny-ml", cache)
    assert exc.value.expected == _sha256(data) and exc.value.actual == _sha256(bytes(corrupt))
    msg = str(exc.value)
    assert "sha256" in msg and "nothing was kept" in msg
    assert str(cache / "downloads" / "tiny-ml" / "tiny.zip") in msg  # what to do
    assert _leftovers(cache) == []
    with pytest.raises(FetchError):  # and a load by name does not find a half-written copy
        fetch_mod.check_fetched(cache / "tiny-ml", REMOTE_DATASETS["tiny-ml"])


def test_oversized_download_is_cut_off(
    tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, data = _zip_entry(server, monkeypatch)
    _zip_entry(server, monkeypatch, size=len(data) - 10)
    with pytest.raises(ChecksumError, match="more than the recorded"):
        fetch_dataset("tiny-ml", tmp_path / "cache")
    assert _leftovers(tmp_path / "cache") == []


def test_git_blob_checked_where_no_sha256_is_recorded(
    tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "hello"
    f.write_bytes(b"hello\n")
    assert git_blob_id(f) == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object`
    spec = _lightgcn_entry(server, monkeypatch)
    train = spec.downloads[0]
    assert train.sha256 is None
    wrong = Download(train.filename, train.urls, None, "0" * 40, train.size)
    monkeypatch.setitem(
        REMOTE_DATASETS, "tiny-lgcn", RemoteDataset("tiny-lgcn", "lightgcn", (wrong,), "", "")
    )
    with pytest.raises(ChecksumError, match="git blob id"):
        fetch_dataset("tiny-lgcn", tmp_path / "cache")
    monkeypatch.setitem(REMOTE_DATASETS, "tiny-lgcn", spec)
    res = fetch_dataset("tiny-lgcn", tmp_path / "cache")
    assert res.files["train.txt"] == _sha256(gzip.decompress((MINI / "train.txt.gz").read_bytes()))


def test_network_failure_names_what_to_do(
    tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _closed_port_url("tiny.zip")
    _zip_entry(server, monkeypatch, urls=(url,))
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as exc:
        fetch_dataset("tiny-ml", cache, timeout=5)
    manual = cache / "downloads" / "tiny-ml" / "tiny.zip"
    assert exc.value.manual_path == manual and exc.value.urls == (url,)
    msg = str(exc.value)
    assert url in msg and f"by hand from {url} to {manual}" in msg
    assert _leftovers(cache) == []
    # an HTTP error, and a later mirror that works
    _zip_entry(server, monkeypatch, urls=(server.url("missing.zip"),))
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_dataset("tiny-ml", cache)
    _zip_entry(server, monkeypatch, urls=(url, server.url("missing.zip"), server.url("tiny.zip")))
    assert fetch_dataset("tiny-ml", cache).downloaded


def test_partial_failure_installs_nothing(
    tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _lightgcn_entry(server, monkeypatch)
    (server.root / "test.txt").unlink()  # the first file downloads, the second does not
    with pytest.raises(DownloadError):
        fetch_dataset(spec.name, tmp_path / "cache")
    assert _leftovers(tmp_path / "cache") == []


def test_hand_downloaded_file_is_checked_and_used(
    tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, data = _zip_entry(server, monkeypatch, urls=(_closed_port_url("tiny.zip"),))
    cache = tmp_path / "cache"
    manual = cache / "downloads" / "tiny-ml" / "tiny.zip"
    manual.parent.mkdir(parents=True)
    manual.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    with pytest.raises(ChecksumError, match=f"replace or delete {re.escape(str(manual))}"):
        fetch_dataset("tiny-ml", cache)
    manual.write_bytes(data)
    res = fetch_dataset("tiny-ml", cache)
    assert res.downloaded and res.bytes_downloaded == 0
    assert (res.path / "ratings.dat").read_bytes() == _ratings_dat()
    assert manual.read_bytes() == data  # the user's file is left as it was


def test_tar_archives_unpack(
    tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        payload = _ratings_dat()
        info = tarfile.TarInfo("tiny/ratings.dat")
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    data = buf.getvalue()
    (server.root / "tiny.tar.gz").write_bytes(data)
    _zip_entry(
        server,
        monkeypatch,
        filename="tiny.tar.gz",
        urls=(server.url("tiny.tar.gz"),),
        sha256=_sha256(data),
        size=len(data),
        members=(("tiny/ratings.dat", "ratings.dat"),),
    )
    res = fetch_dataset("tiny-ml", tmp_path / "cache")
    assert (res.path / "ratings.dat").read_bytes() == _ratings_dat()


def test_damaged_or_foreign_folder(
    tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    _zip_entry(server, monkeypatch)
    cache = tmp_path / "cache"
    (cache / "tiny-ml").mkdir(parents=True)
    (cache / "tiny-ml" / "mine.txt").write_text("a folder of the user's")
    with pytest.raises(FetchError, match="not a dataset folder written by embudget"):
        fetch_dataset("tiny-ml", cache)
    assert server.requests == []
    res = fetch_dataset("tiny-ml", cache, force=True)  # replaced only when asked
    assert not (res.path / "mine.txt").exists()
    with open(res.path / "ratings.dat", "ab") as f:
        f.write(b"1::2::3::4\n")
    with pytest.raises(ChecksumError, match="--force"):
        fetch_dataset("tiny-ml", cache)
    assert main(["data", "fetch", "tiny-ml", "--cache-dir", str(cache), "--force"]) == 0
    assert (res.path / "ratings.dat").read_bytes() == _ratings_dat()
    assert _leftovers(cache) == ["tiny-ml"]


def test_unknown_name_and_list(capsys: Any) -> None:
    with pytest.raises(FetchError, match="ml-1m, yelp2018, amazon-book, lastfm"):
        fetch_dataset("no-such-dataset", "unused")
    assert main(["data", "fetch", "no-such-dataset"]) == 2
    assert "fetchable: ml-1m" in capsys.readouterr().err
    assert main(["data", "fetch", "--list"]) == 0
    out = capsys.readouterr().out
    assert "files.grouplens.org/datasets/movielens/ml-1m.zip" in out and "licence:" in out


def test_unknown_dataset_error_suggests_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(Exception, match="embudget data fetch NAME` downloads ml-1m"):
        load_dataset("no-such-dataset")


# --- the registry -------------------------------------------------------------------------

#: the files each format reads from a folder (embudget.data.locate.input_files)
_NEEDS = {
    "lightgcn": {"train.txt", "test.txt"},
    "lastfm": {"data1.txt", "test1.txt"},
    "movielens": {"ratings.dat"},
}


@pytest.mark.parametrize("name", sorted(REMOTE_DATASETS))
def test_registry_entry_is_complete(name: str, tmp_path: Path) -> None:
    spec = REMOTE_DATASETS[name]
    assert spec.name == name and spec.fmt in FORMATS and spec.licence and spec.origin
    assert _NEEDS[spec.fmt] <= set(spec.files())
    for d in spec.downloads:
        assert d.urls and all(u.startswith("https://") for u in d.urls)
        assert d.sha256 is None or re.fullmatch("[0-9a-f]{64}", d.sha256)
        assert d.git_blob is None or re.fullmatch("[0-9a-f]{40}", d.git_blob)
        assert d.sha256 is not None or d.git_blob is not None
        # GitHub sources are pinned to a commit, so the recorded checksums stay valid
        for u in d.urls:
            if "githubusercontent" in u:
                assert re.search("/[0-9a-f]{40}/", u)
    for f in spec.files():
        (tmp_path / f).touch()
    assert detect_format(tmp_path) == spec.fmt
    assert len(set(spec.files())) == len(spec.files())


def test_download_needs_a_digest() -> None:
    with pytest.raises(ValueError, match="sha256 or a git blob id"):
        Download("x.zip", ("https://example.org/x.zip",))
