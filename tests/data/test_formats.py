"""Readers: one fixture per format, broken variants, gzip transparency."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from embudget.data.formats import (
    read_csv,
    read_lastfm,
    read_lightgcn,
    read_movielens,
    read_recbole,
    read_text,
    sniff_delimiter,
)
from embudget.errors import DataFormatError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "formats"


def pairs(raw) -> list[tuple[object, object]]:  # type: ignore[no-untyped-def]
    return list(zip(raw.users.tolist(), raw.items.tolist(), strict=True))


def test_lightgcn_crlf_trailing_spaces_empty_and_itemless_lines() -> None:
    raw = read_lightgcn(FIX / "lightgcn" / "train.txt")
    # user 2 has a uid and no items; an empty line; a tab inside line 5
    assert pairs(raw) == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 3), (3, 1), (3, 4)]
    assert raw.users.dtype == np.int64 and raw.items.dtype == np.int64
    assert raw.ratings is None and raw.timestamps is None
    data = (FIX / "lightgcn" / "train.txt").read_bytes()
    assert raw.sha256 == hashlib.sha256(data).hexdigest()


def test_lastfm_third_column_ignored() -> None:
    raw = read_lastfm(FIX / "lastfm" / "data1.txt")
    assert pairs(raw) == [(1, 1), (1, 2), (2, 2), (2, 3), (4, 1)]
    assert raw.ratings is None


def test_recbole_typed_header_and_min_rating() -> None:
    raw = read_recbole(FIX / "tiny.inter")
    assert pairs(raw) == [(10, 100), (10, 101), (11, 100), (12, 102)]
    assert raw.ratings is not None and raw.ratings.tolist() == [5.0, 3.0, 4.0, 1.0]
    assert raw.timestamps is not None and raw.timestamps[0] == 881250949.0
    liked = read_recbole(FIX / "tiny.inter", min_rating=4)
    assert pairs(liked) == [(10, 100), (11, 100)]


def test_movielens_dat_and_csv() -> None:
    dat = read_movielens(FIX / "ratings.dat")
    assert pairs(dat) == [(1, 1193), (1, 661), (2, 1193)]
    assert dat.ratings is not None and dat.ratings.tolist() == [5.0, 3.0, 4.0]
    csv = read_movielens(FIX / "ratings.csv", min_rating=4.0)
    assert pairs(csv) == [(1, 1), (1, 3)]
    assert csv.ratings is not None and csv.ratings.tolist() == [4.0, 4.5]


def test_generic_tsv_custom_columns_string_ids() -> None:
    raw = read_csv(FIX / "custom.tsv", user_col="listener", item_col="song")
    assert raw.users.dtype.kind == "U"
    assert pairs(raw) == [("alice", "s1"), ("bob", "s2"), ("alice", "s2")]
    assert raw.ratings is None  # no column named "rating"


def test_generic_csv_default_column_pairs() -> None:
    raw = read_csv(FIX / "ratings.csv")  # userId/movieId found by default
    assert pairs(raw) == [(1, 1), (1, 3), (2, 1)]


def test_sniff_delimiter(tmp_path: Path) -> None:
    assert sniff_delimiter(FIX / "custom.tsv") == "\t"
    assert sniff_delimiter(FIX / "ratings.csv") == ","
    assert sniff_delimiter(FIX / "ratings.dat") == "::"
    odd = tmp_path / "data.txt"
    odd.write_text("user;item\n1;2\n")
    assert sniff_delimiter(odd) == ";"
    assert pairs(read_csv(odd)) == [(1, 2)]


@pytest.mark.parametrize(
    ("reader", "rel"),
    [
        (read_lightgcn, "lightgcn/train.txt"),
        (read_lastfm, "lastfm/data1.txt"),
        (read_recbole, "tiny.inter"),
        (read_movielens, "ratings.dat"),
        (read_movielens, "ratings.csv"),
    ],
)
def test_gzip_is_transparent(tmp_path: Path, reader, rel: str) -> None:  # type: ignore[no-untyped-def]
    src = FIX / rel
    gz = tmp_path / (src.name + ".gz")
    with src.open("rb") as f, gzip.open(gz, "wb") as g:
        shutil.copyfileobj(f, g)
    a, b = reader(src), reader(gz)
    assert pairs(a) == pairs(b)
    assert a.sha256 == b.sha256  # hash of the decompressed content
    assert read_text(gz)[0] == read_text(src)[0]


# --- broken inputs: typed error, message names the file and the 1-based line -------------


@pytest.mark.parametrize(
    ("reader", "name", "line", "words"),
    [
        (read_lightgcn, "lightgcn_token.txt", 2, "'x3' is not an integer"),
        (read_lightgcn, "lightgcn_negative.txt", 2, "negative id -2"),
        (read_lightgcn, "lightgcn_float.txt", 3, "'2.5' is not an integer"),
        (read_lastfm, "lastfm_columns.txt", 2, "wrong column count"),
        (read_lastfm, "lastfm_token.txt", 2, "'abc' is not an integer"),
        (read_recbole, "recbole_header.inter", 1, "typed header"),
        (read_recbole, "recbole_columns.inter", 1, "unknown header columns"),
        (read_recbole, "recbole_rating.inter", 3, "'five' is not a number"),
        (read_movielens, "ratings_columns.dat", 2, "wrong column count"),
        (read_csv, "csv_columns.csv", 3, "wrong column count"),
    ],
)
def test_broken_file_names_file_and_line(reader, name: str, line: int, words: str) -> None:  # type: ignore[no-untyped-def]
    path = FIX / "broken" / name
    with pytest.raises(DataFormatError) as exc:
        reader(path)
    msg = str(exc.value)
    assert exc.value.line == line
    assert f"{path}, line {line}:" in msg
    assert words in msg


@pytest.mark.parametrize("name", ["empty.txt", "lightgcn_noitems.txt"])
def test_empty_dataset(name: str) -> None:
    path = FIX / "broken" / name
    with pytest.raises(DataFormatError, match="empty dataset") as exc:
        read_lightgcn(path)
    assert str(path) in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="file not found") as exc:
        read_lightgcn(tmp_path / "nope.txt")
    assert exc.value.path == str(tmp_path / "nope.txt")


def test_unknown_custom_columns_listed() -> None:
    with pytest.raises(DataFormatError, match=r"unknown header columns \['listener'"):
        read_csv(FIX / "custom.tsv", user_col="user", item_col="song")


def test_min_rating_without_rating_column() -> None:
    with pytest.raises(DataFormatError, match="no rating column"):
        read_csv(FIX / "custom.tsv", user_col="listener", item_col="song", min_rating=4)


def test_bad_utf8_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.txt"
    p.write_bytes(b"0 1\n1 2\n\xff\xfe 3\n")
    with pytest.raises(DataFormatError, match="UTF-8") as exc:
        read_lightgcn(p)
    assert exc.value.line == 3


def test_lightgcn_overflow_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "big.txt"
    p.write_text("0 1\n1 99999999999999999999999\n")
    with pytest.raises(DataFormatError) as exc:
        read_lightgcn(p)
    assert exc.value.line == 2


def test_lightgcn_matches_slow_reference(tmp_path: Path) -> None:
    """Vectorised parse equals a line-by-line reference on a random file."""
    rng = np.random.default_rng(3)
    lines, ref = [], []
    for u in rng.permutation(40):
        items = rng.choice(1000, size=int(rng.integers(0, 6)), replace=False)
        sep = " " if u % 3 else "\t "
        lines.append(sep.join(str(x) for x in [u, *items]) + (" " if u % 2 else ""))
        ref += [(int(u), int(i)) for i in items]
    p = tmp_path / "r.txt"
    p.write_text("\r\n".join(lines) + "\r\n")
    assert pairs(read_lightgcn(p)) == ref
