"""load_dataset: name resolution, format detection, regression counts on the shipped data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from embudget.data import load_dataset
from embudget.data.load import SHIPPED_DIR, data_search_path, detect_format, resolve_dataset
from embudget.errors import ConfigError, DataFormatError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "formats"


def _sums(folder: Path) -> dict[str, str]:
    out = {}
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split()
        out[rel.removeprefix("./")] = digest
    return out


# --- shipped datasets --------------------------------------------------------------------


def test_gowalla_shipped_protocol_p_regression() -> None:
    ds = load_dataset("gowalla")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (29_858, 40_981, 1_027_370)
    assert ds.train.nnz == 513_126  # protocol.md §3.6
    assert ds.protocol == "paper" and ds.split_seed == 42 and ds.name == "gowalla"
    assert np.array_equal(ds.user_ids, np.arange(29_858))  # identity mapping
    assert np.array_equal(ds.item_ids, np.arange(40_981))
    assert ds.meta["checksums_verified"] == 2
    assert ds.meta["users_empty_valid"] == 0 and ds.meta["users_empty_test"] == 0
    assert set(ds.source_hashes) == {"train.txt", "test.txt"}
    # content hashes are those of the uncompressed LightGCN files
    assert ds.source_hashes == _sums(SHIPPED_DIR / "gowalla")


def test_gowalla_protocol_s_every_user_has_validation() -> None:
    ds = load_dataset("gowalla", protocol="standard")
    assert ds.test.nnz == 217_242  # the given test file, unchanged
    assert ds.train.nnz + ds.valid.nnz == 810_128
    assert ds.meta["users_empty_valid"] == 0 and ds.meta["cold_start_users"] == 0


def test_shipped_gowalla_files_exist_and_verify() -> None:
    names = {p.name for p in (SHIPPED_DIR / "gowalla").iterdir()}
    assert {"train.txt.gz", "test.txt.gz", "SHA256SUMS", "README.md"} <= names


def test_gowalla_mini_regression_both_protocols() -> None:
    p = load_dataset("gowalla-mini")
    assert (p.n_users, p.n_items, p.n_interactions) == (800, 993, 16_749)
    assert (p.train.nnz, p.valid.nnz, p.test.nnz) == (8_354, 4_247, 4_148)  # 50/25/25 per user
    assert p.meta["users_empty_valid"] == 0 and p.meta["users_empty_test"] == 0
    assert p.meta["checksums_verified"] == 2
    assert p.source_hashes == _sums(SHIPPED_DIR / "gowalla-mini")
    s = load_dataset("gowalla-mini", protocol="S")
    assert s.test.nnz == 3_742  # the given test file, unchanged
    assert (s.train.nnz, s.valid.nnz) == (11_681, 1_326)  # 10 % of the given train is valid
    assert s.meta["users_empty_test"] == 25 and s.meta["cold_start_users"] == 0
    given_train = np.asarray((s.train + s.valid).sum(axis=0)).ravel()
    assert (given_train == 0).sum() == 14  # test-only items stay in the catalogue


def _lastfm_dir(root: Path) -> Path:
    """A Last.fm-format folder: 1-based ids with gaps, a test-only user and test-only items."""
    d = root / "lastfm-like"
    d.mkdir()
    train = {1: [1, 2, 3, 4], 2: [1], 4: [2, 3], 6: [1, 2, 3, 4, 5, 6]}
    (d / "data1.txt").write_text(
        "".join(f"{u}\t{i}\t{10 * i}\n" for u, items in train.items() for i in items)
    )
    (d / "test1.txt").write_text("1\t7\t3\n6\t9\t1\n9\t1\t2\n")
    return d


def test_lastfm_format_entities_and_cold_start(tmp_path: Path) -> None:
    d = _lastfm_dir(tmp_path)
    p = load_dataset(d)
    assert p.meta["format"] == "lastfm"
    assert p.user_ids.tolist() == [1, 2, 4, 6, 9]  # ids that never occur are dropped
    assert p.item_ids.tolist() == [1, 2, 3, 4, 5, 6, 7, 9]
    assert p.n_interactions == 16
    assert p.meta["users_empty_test"] == 3  # users 2, 4, 9 with n <= 2 (protocol.md §3.5)
    s = load_dataset(d, protocol="S")
    assert s.protocol == "standard"
    assert s.meta["cold_start_users"] == 1  # user 9 only in test1.txt (protocol.md §4.4)
    assert s.test.nnz == 3 and s.train.nnz + s.valid.nnz == 13
    given_train = np.asarray((s.train + s.valid).sum(axis=0)).ravel()
    assert (given_train == 0).sum() == 2  # test-only items 7 and 9 stay in the catalogue


def test_rated_single_file_liked_variant_and_derived_split(tmp_path: Path) -> None:
    f = tmp_path / "ratings.inter"
    rows = "".join(f"{u}\t{i}\t{1 + (u + i) % 5}\n" for u in range(20) for i in range(10))
    f.write_text("user_id:token\titem_id:token\trating:float\n" + rows)
    ds = load_dataset(f)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (20, 10, 200)
    liked = load_dataset(f, min_rating=4)
    assert liked.n_interactions == 80  # ratings 4 and 5: 4 of every user's 10
    assert "min_rating4" in liked.name  # the liked variant is named as such
    s = load_dataset(f, protocol="standard")
    assert s.meta["derived_split"] is True and s.test.nnz == 40  # round(0.2 n) per user
    assert load_dataset(f, protocol="standard", min_rating=4).test.nnz == 20


# --- fixtures: formats, ids, splits ------------------------------------------------------


def test_lightgcn_fixture_dir_both_protocols() -> None:
    p = load_dataset(FIX / "lightgcn", protocol="paper", split_seed=0)
    assert p.user_ids.tolist() == [0, 1, 2, 3] and p.item_ids.tolist() == [0, 1, 2, 3, 4]
    assert p.n_interactions == 12
    assert p.meta["format"] == "lightgcn" and p.name == str(FIX / "lightgcn")
    s = load_dataset(FIX / "lightgcn", protocol="standard", split_seed=0)
    assert s.test.nnz == 5 and s.meta["cold_start_users"] == 1  # user 2 has no train item


def test_lastfm_fixture_drops_unused_ids() -> None:
    ds = load_dataset(FIX / "lastfm", protocol="standard")
    assert ds.user_ids.tolist() == [1, 2, 4, 5]  # id 3 never occurs
    assert ds.item_ids.tolist() == [1, 2, 3]
    assert ds.meta["cold_start_users"] == 1  # user 5 only in test1.txt


@pytest.mark.parametrize(
    ("rel", "fmt", "n"),
    [
        ("tiny.inter", "recbole", 4),
        ("ratings.dat", "movielens", 3),
        ("ratings.csv", "movielens", 3),
    ],
)
def test_single_file_paths(rel: str, fmt: str, n: int) -> None:
    assert detect_format(FIX / rel) == fmt
    ds = load_dataset(FIX / rel)
    assert ds.n_interactions == n and ds.meta["format"] == fmt


def test_string_ids_sorted_and_columns() -> None:
    ds = load_dataset(FIX / "custom.tsv", user_col="listener", item_col="song")
    assert ds.user_ids.tolist() == ["alice", "bob"] and ds.item_ids.tolist() == ["s1", "s2"]
    assert ds.n_interactions == 3


def test_duplicates_and_train_test_overlap_dropped(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("0 1 2 2\n1 0 1\n")  # (0, 2) twice
    (tmp_path / "test.txt").write_text("0 1 3\n1 2\n")  # (0, 1) also in train
    s = load_dataset(tmp_path, protocol="standard")
    assert s.meta["duplicates_dropped"] == 1 and s.meta["test_overlap_dropped"] == 1
    assert s.n_interactions == 6
    p = load_dataset(tmp_path, protocol="paper")
    assert p.meta["duplicates_dropped"] == 2 and p.n_interactions == 6


def test_same_seed_same_fingerprint_other_seed_differs(tmp_path: Path) -> None:
    keys = np.random.default_rng(0).choice(30 * 40, size=400, replace=False)
    rows = "".join(f"{k // 40}\t{k % 40}\n" for k in keys)
    f = tmp_path / "r.inter"
    f.write_text("user_id:token\titem_id:token\n" + rows)
    a, b, c = (load_dataset(f, split_seed=s) for s in (1, 1, 2))
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert a.stats() == c.stats()
    assert np.array_equal(a.user_freq, c.user_freq)


# --- resolution and errors ---------------------------------------------------------------


def test_name_found_through_embudget_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(FIX / "lightgcn", tmp_path / "mini")
    monkeypatch.setenv("EMBUDGET_DATA", str(tmp_path))
    assert data_search_path()[0] == tmp_path
    ds = load_dataset("mini", protocol="S")
    assert ds.name == "mini" and ds.n_interactions == 12


def test_search_path_is_the_variable_then_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("EMBUDGET_DATA", os.pathsep.join([str(tmp_path / "a"), "", "~/b"]))
    assert data_search_path() == [
        tmp_path / "a",
        Path("~/b").expanduser(),
        work / "shared" / "data",
        tmp_path / "shared" / "data",
    ]  # nothing relative to where the package is installed
    monkeypatch.delenv("EMBUDGET_DATA")
    shutil.copytree(FIX / "lightgcn", tmp_path / "shared" / "data" / "mini")
    assert load_dataset("mini").n_interactions == 12  # found in the parent of the working directory
    shutil.copytree(FIX / "lightgcn", work / "shared" / "data" / "mini")
    assert resolve_dataset("mini") == ("mini", work / "shared" / "data" / "mini")  # ./ first


def test_unknown_name_lists_known_names_and_search_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBUDGET_DATA", str(tmp_path))
    with pytest.raises(DataFormatError) as exc:
        load_dataset("no-such-dataset")
    msg = str(exc.value)
    assert "gowalla" in msg and "ml-100k" in msg and str(tmp_path) in msg


def test_missing_test_file_named(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("0 1\n")
    with pytest.raises(DataFormatError, match="test.txt") as exc:
        load_dataset(tmp_path, fmt="lightgcn")
    assert exc.value.path == str(tmp_path / "test.txt")
    with pytest.raises(DataFormatError, match="train.txt \\+ test.txt"):
        load_dataset(tmp_path)  # auto-detection lists what it expects


def test_checksum_mismatch_is_an_error(tmp_path: Path) -> None:
    shutil.copytree(FIX / "lightgcn", tmp_path / "d")
    (tmp_path / "d" / "SHA256SUMS").write_text("0" * 64 + "  train.txt\n")
    with pytest.raises(DataFormatError, match="sha256 mismatch"):
        load_dataset(tmp_path / "d")


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="protocol"):
        load_dataset(FIX / "lightgcn", protocol="random")
    with pytest.raises(ConfigError, match="format"):
        load_dataset(FIX / "lightgcn", fmt="feather")
    with pytest.raises(ConfigError, match="min_rating"):
        load_dataset(FIX / "lightgcn", min_rating=4)
