"""Property-based fuzz of every reader: random bytes, truncations, bit flips, inserted bytes and
damaged gzip streams of the fixture files end in a result or a typed error, never another
exception."""

from __future__ import annotations

import gzip
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embudget.data import (
    RawInteractions,
    load_dataset,
    read_csv,
    read_lastfm,
    read_lightgcn,
    read_movielens,
    read_recbole,
)
from embudget.errors import ConfigError, DataFormatError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats"
MINI_TRAIN = Path(__file__).resolve().parents[2] / "src/embudget/datasets/gowalla-mini/train.txt.gz"
TYPED = (DataFormatError, ConfigError)

Reader = Callable[[Path], RawInteractions]


def _custom(p: Path) -> RawInteractions:
    return read_csv(p, user_col="listener", item_col="song")


def _mini_head() -> bytes:
    """The first 40 lines of gowalla-mini's training file: real LightGCN text."""
    return b"\n".join(gzip.decompress(MINI_TRAIN.read_bytes()).split(b"\n")[:40]) + b"\n"


#: (reader, file name it is given, seed content)
READERS: dict[str, tuple[Reader, str, Callable[[], bytes]]] = {
    "lightgcn": (
        read_lightgcn,
        "train.txt",
        lambda: (FIXTURES / "lightgcn/train.txt").read_bytes(),
    ),
    "lightgcn-mini": (read_lightgcn, "train.txt", _mini_head),
    "lastfm": (read_lastfm, "data1.txt", lambda: (FIXTURES / "lastfm/data1.txt").read_bytes()),
    "recbole": (read_recbole, "tiny.inter", lambda: (FIXTURES / "tiny.inter").read_bytes()),
    "movielens-dat": (
        read_movielens,
        "ratings.dat",
        lambda: (FIXTURES / "ratings.dat").read_bytes(),
    ),
    "movielens-csv": (
        read_movielens,
        "ratings.csv",
        lambda: (FIXTURES / "ratings.csv").read_bytes(),
    ),
    "csv": (read_csv, "ratings.csv", lambda: (FIXTURES / "ratings.csv").read_bytes()),
    "csv-custom": (_custom, "custom.tsv", lambda: (FIXTURES / "custom.tsv").read_bytes()),
}
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def _read(reader: Reader, name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(data)
        try:
            r = reader(p)
        except TYPED:
            return
        assert len(r.users) == len(r.items) == len(r) > 0
        for extra in (r.ratings, r.timestamps):
            assert extra is None or len(extra) == len(r)
        assert r.users.dtype.kind in "iU" and r.items.dtype.kind in "iU"


@st.composite
def damaged(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` truncated, with bits flipped, with bytes inserted, or replaced outright."""
    kind = draw(st.sampled_from(["random", "truncate", "flip", "insert", "splice-lines"]))
    if kind == "random":
        return draw(st.binary(max_size=400))
    if kind == "truncate":
        return seed[: draw(st.integers(0, len(seed)))]
    if kind == "flip":
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "insert":
        i = draw(st.integers(0, len(seed)))
        junk = draw(
            st.one_of(
                st.binary(min_size=1, max_size=20),
                st.sampled_from(
                    [b"\xef\xbb\xbf", b"\x00", b"\t", b"::", b",", b"\r", b"\n\n", b"-1", b" ",
                     b"9223372036854775808", b"1e400", b"nan", b"\xff\xfe", b"\xe2\x80\xa8"]
                ),
            )
        )  # fmt: skip
        return seed[:i] + junk + seed[i:]
    lines = seed.split(b"\n")
    order = draw(st.permutations(range(len(lines))))
    keep = draw(st.integers(0, len(lines)))
    return b"\n".join(lines[j] for j in order[:keep])


@pytest.mark.parametrize("fmt", list(READERS))
def test_reader_fuzz(fmt: str) -> None:
    reader, name, seed_fn = READERS[fmt]
    seed = seed_fn()

    @FUZZ
    @given(data=damaged(seed))
    def check(data: bytes) -> None:
        _read(reader, name, data)

    check()


@pytest.mark.parametrize("fmt", ["lightgcn", "csv", "recbole"])
def test_reader_fuzz_gzip(fmt: str) -> None:
    """A damaged gzip stream: corrupt or truncated compressed bytes are a typed error."""
    reader, name, seed_fn = READERS[fmt]
    seed = gzip.compress(seed_fn(), mtime=0)

    @FUZZ
    @given(data=damaged(seed))
    def check(data: bytes) -> None:
        _read(reader, name + ".gz", data)

    check()


@pytest.mark.parametrize("fmt", ["lightgcn-mini", "csv", "recbole", "lastfm"])
def test_load_dataset_fuzz(fmt: str) -> None:
    """Reading, indexing and splitting a damaged file: a dataset or a typed error."""
    reader, name, seed_fn = READERS[fmt]

    @settings(max_examples=20, deadline=None, derandomize=True)
    @given(data=damaged(seed_fn()), protocol=st.sampled_from(["paper", "standard"]))
    def check(data: bytes, protocol: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / name
            p.write_bytes(data)
            try:
                ds = load_dataset(p, protocol=protocol)
            except TYPED:
                return
            assert ds.n_users > 0 and ds.n_items > 0

    check()


def test_fuzz_covers_every_reader() -> None:
    readers = {r for r, _, _ in READERS.values()}
    assert {read_lightgcn, read_lastfm, read_recbole, read_movielens, read_csv} <= readers


def test_unicode_line_separator_in_lightgcn_text(tmp_path: Path) -> None:
    """U+2028 separates tokens for Python but not for numpy's fast parser: the slow parser
    decides (found by the fuzz above)."""
    p = tmp_path / "train.txt"
    p.write_bytes("\u20280 0 1\n1 2\n".encode())
    assert read_lightgcn(p).items.tolist() == [0, 1, 2]
