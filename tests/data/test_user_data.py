"""Data the way users have it: custom columns, quoted CSV, TSV, parquet, timestamps, the
temporal and leave-last-out splits and the k-core filter. Fixtures are written in tmp dirs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embudget.config import load_config
from embudget.data import (
    kcore_masks,
    load_configured,
    load_dataset,
    read_csv,
    split_leave_last_out,
    split_temporal,
)
from embudget.data.parquet import read_parquet
from embudget.errors import ConfigError, DataFormatError


def pairs(split: tuple[np.ndarray, np.ndarray]) -> list[tuple[int, int]]:
    return [(int(u), int(i)) for u, i in zip(*split, strict=True)]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- readers ------------------------------------------------------------------------------


def test_custom_columns_and_timestamps(tmp_path: Path) -> None:
    f = write(tmp_path / "shop.csv", "customer_id,product_id,ts\nc1,p1,10\nc2,p1,5\nc1,p2,7\n")
    raw = read_csv(f, user_col="customer_id", item_col="product_id", timestamp_col="ts")
    assert list(raw.users) == ["c1", "c2", "c1"] and list(raw.items) == ["p1", "p1", "p2"]
    assert raw.timestamps is not None and list(raw.timestamps) == [10.0, 5.0, 7.0]


def test_bad_column_lists_the_columns_found(tmp_path: Path) -> None:
    f = write(tmp_path / "shop.csv", "customer_id,product_id\nc1,p1\n")
    with pytest.raises(DataFormatError, match=r"\['customer_id', 'product_id'\].*'customer'"):
        load_dataset(f, user_col="customer", item_col="product_id")
    with pytest.raises(DataFormatError, match=r"customer_id.*no column named 'when'"):
        read_csv(f, user_col="customer_id", item_col="product_id", timestamp_col="when",
                 require_time=True)  # fmt: skip


def test_quoted_fields_hold_delimiters_quotes_and_newlines(tmp_path: Path) -> None:
    text = 'user,item,title\n"u 1","i,1","say ""hi"""\n\nu2,i2,"two\nlines"\nu3,"i3",plain\n'
    raw = read_csv(write(tmp_path / "q.csv", text))
    assert list(raw.users) == ["u 1", "u2", "u3"]
    assert list(raw.items) == ["i,1", "i2", "i3"]
    bad = write(tmp_path / "bad.csv", 'user,item\nu1,i1\nu2,"i2",x\n')
    with pytest.raises(DataFormatError, match="line 3: wrong column count"):
        read_csv(bad)


def test_quoted_field_length_is_bounded(tmp_path: Path) -> None:
    f = write(tmp_path / "long.csv", 'user,item\nu1,"' + "x" * 10_000 + '"\n')
    with pytest.raises(DataFormatError, match="line 2: field longer than 4096"):
        read_csv(f)
    unbalanced = write(tmp_path / "open.csv", 'user,item\nu1,"i1\n' + "u,i\n" * 3000)
    with pytest.raises(DataFormatError, match="field longer than"):
        read_csv(unbalanced)


def test_tsv_and_explicit_sep(tmp_path: Path) -> None:
    tsv = write(tmp_path / "log.tsv", 'who\twhat\n"a\tb"\tx\nc\ty\n')
    raw = read_csv(tsv, user_col="who", item_col="what")
    assert list(raw.users) == ["a\tb", "c"]
    semi = write(tmp_path / "log.txt.csv", "who;what\n1;2\n3;4\n")
    ds = load_dataset(semi, fmt="csv", sep=";", user_col="who", item_col="what")
    assert ds.n_users == 2 and ds.n_items == 2
    ds_tab = load_dataset(tsv, fmt="csv", sep="\\t", user_col="who", item_col="what")
    assert ds_tab.n_users == 2


def test_iso_dates_are_seconds(tmp_path: Path) -> None:
    f = write(tmp_path / "d.csv", "user,item,when\n1,2,1970-01-02\n1,3,1970-01-01T00:01:00\n")
    raw = read_csv(f, timestamp_col="when", require_time=True)
    assert raw.timestamps is not None and list(raw.timestamps) == [86400.0, 60.0]
    bad = write(tmp_path / "b.csv", "user,item,when\n1,2,yesterday\n")
    with pytest.raises(DataFormatError, match="line 2: when value 'yesterday'"):
        read_csv(bad, timestamp_col="when", require_time=True)


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table(
        {
            "customer_id": ["c1", "c2", "c1", "c3"],
            "product_id": [10, 10, 11, 12],
            "ts": pa.array([4, 3, 2, 1], type=pa.timestamp("s")),
        }
    )
    f = tmp_path / "shop.parquet"
    pq.write_table(table, f)
    raw = read_parquet(f, "customer_id", "product_id", "ts")
    assert list(raw.users) == ["c1", "c2", "c1", "c3"] and list(raw.items) == [10, 10, 11, 12]
    assert raw.timestamps is not None and list(raw.timestamps) == [4.0, 3.0, 2.0, 1.0]
    ds = load_dataset(f, user_col="customer_id", item_col="product_id", time_col="ts",
                      protocol="temporal")  # fmt: skip
    assert ds.meta["format"] == "parquet" and ds.n_users == 3
    with pytest.raises(DataFormatError, match=r"\['customer_id', 'product_id', 'ts'\]"):
        read_parquet(f, "user", "product_id")
    write(tmp_path / "junk.parquet", "not parquet")
    with pytest.raises(DataFormatError, match="not a readable parquet"):
        read_parquet(tmp_path / "junk.parquet")


def test_parquet_without_pyarrow_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails
    with pytest.raises(DataFormatError, match=r"pip install 'embudget\[parquet\]'"):
        read_parquet(write(tmp_path / "x.parquet", "x"))


# --- splits -------------------------------------------------------------------------------


def test_temporal_split_by_hand() -> None:
    # ten interactions at times 9..0: the latest 2 (times 9, 8) test, the one before valid
    users = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    items = np.arange(10)
    times = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], dtype=float)
    s = split_temporal(users, items, times, 3)
    assert pairs(s["test"]) == [(0, 0), (1, 1)]
    assert pairs(s["valid"]) == [(2, 2)]
    assert pairs(s["train"]) == [(0, 3), (0, 6), (0, 9), (1, 4), (1, 7), (2, 5), (2, 8)]
    # a tie at the cut is ordered by (user, item): (0, 5) before (1, 4) at time 1
    s = split_temporal(np.array([1, 0, 0]), np.array([4, 5, 6]), np.array([1.0, 1.0, 0.0]), 2,
                       test_fraction=0.34, valid_fraction=0.0)  # fmt: skip
    assert pairs(s["test"]) == [(1, 4)] and pairs(s["valid"]) == []


def test_leave_last_out_by_hand() -> None:
    users = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    items = np.array([0, 1, 2, 0, 1, 3, 2, 1, 0])
    times = np.array([3, 1, 2, 1, 2, 5, 6, 7, 8], dtype=float)
    s = split_leave_last_out(users, items, times, 3)
    # user 0: order 1 (t1), 2 (t2), 0 (t3); user 1 has 2 interactions: all in train
    assert pairs(s["test"]) == [(0, 0), (2, 0)]
    assert pairs(s["valid"]) == [(0, 2), (2, 1)]
    assert pairs(s["train"]) == [(0, 1), (1, 0), (1, 1), (2, 2), (2, 3)]


def test_time_protocols_through_load(tmp_path: Path) -> None:
    rows = ["u,i,t"] + [f"{u},{i},{10 * u + i}" for u in range(4) for i in range(5)]
    rows.append("0,0,99")  # a repeat: the pair keeps its earliest time (0)
    f = write(tmp_path / "log.csv", "\n".join(rows) + "\n")
    ds = load_dataset(f, protocol="leave-last-out", user_col="u", item_col="i", time_col="t")
    assert ds.stats()["test"] == 4 and ds.stats()["valid"] == 4
    assert ds.test.toarray()[:, 4].all() and ds.valid.toarray()[:, 3].all()
    ds = load_dataset(f, protocol="temporal", user_col="u", item_col="i", time_col="t")
    assert (ds.stats()["train"], ds.stats()["valid"], ds.stats()["test"]) == (14, 2, 4)
    assert ds.test.toarray()[3].sum() == 4  # user 3 acted last
    assert ds.meta["time_col"] == "t"
    with pytest.raises(ConfigError, match="time_col"):
        load_dataset(f, protocol="temporal", user_col="u", item_col="i")
    with pytest.raises(ConfigError, match="need a header"):
        load_dataset(tmp_path / "log.csv", fmt="lightgcn", time_col="t")


# --- k-core -------------------------------------------------------------------------------


def _brute_core(edges: set[tuple[int, int]], ku: int, ki: int) -> set[tuple[int, int]]:
    while True:
        cu: dict[int, int] = {}
        ci: dict[int, int] = {}
        for u, i in edges:
            cu[u] = cu.get(u, 0) + 1
            ci[i] = ci.get(i, 0) + 1
        kept = {(u, i) for u, i in edges if cu[u] >= ku and ci[i] >= ki}
        if kept == edges:
            return edges
        edges = kept


@settings(max_examples=200, deadline=None)
@given(
    st.sets(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=40),
    st.integers(0, 4),
    st.integers(0, 4),
)
def test_kcore_is_the_largest_fixed_point(edges: set[tuple[int, int]], ku: int, ki: int) -> None:
    e = sorted(edges)
    u = np.array([a for a, _ in e], dtype=np.int64)
    i = np.array([b for _, b in e], dtype=np.int64)
    keep_u, keep_i = kcore_masks(u, i, 8, 8, ku, ki)
    kept = {(a, b) for a, b in e if keep_u[a] and keep_i[b]}
    # every kept user and item has enough kept interactions
    for a in np.flatnonzero(keep_u):
        assert sum(1 for x, _ in kept if x == a) >= max(ku, 1)
    for b in np.flatnonzero(keep_i):
        assert sum(1 for _, y in kept if y == b) >= max(ki, 1)
    # nothing removed unnecessarily: the result is the largest such set
    assert kept == _brute_core(set(e), ku, ki)


def test_kcore_chain_needs_iteration() -> None:
    # item 2 has one user; dropping it leaves user 1 with one item, which drops item 1 too
    u = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    i = np.array([0, 1, 1, 2, 0, 3, 0, 3])
    keep_u, keep_i = kcore_masks(u, i, 4, 4, 2, 2)
    assert list(keep_u) == [False, False, True, True]
    assert list(keep_i) == [True, False, False, True]


def test_kcore_through_the_config(tmp_path: Path) -> None:
    rows = ["user,item"] + [f"{u},{i}" for u in range(5) for i in range(4)] + ["9,0", "5,77"]
    f = write(tmp_path / "k.csv", "\n".join(rows) + "\n")
    cfg = load_config(
        overrides=[
            f"data.name={f}",
            "data.min_user_interactions=2",
            "data.min_item_interactions=2",
        ],
        fast=False,
    )
    ds = load_configured(cfg.data)
    assert ds.n_users == 5 and ds.n_items == 4
    assert ds.meta["kcore"] == {"min_user": 2, "min_item": 2}
    assert "9" not in [str(x) for x in ds.user_ids]
    with pytest.raises(DataFormatError, match="leaves nothing"):
        load_dataset(f, min_user_interactions=50)


def test_config_checks_the_data_keys() -> None:
    with pytest.raises(ConfigError, match="data.time_col"):
        load_config(overrides=["data.protocol=temporal"], fast=False)
    with pytest.raises(ConfigError, match="test_fraction"):
        load_config(overrides=["data.test_fraction=0.7", "data.valid_fraction=0.3"], fast=False)
    with pytest.raises(ConfigError, match="min_user_interactions"):
        load_config(overrides=["data.min_user_interactions=-1"], fast=False)
    cfg = load_config(overrides=["data.protocol=leave-last-out", "data.time_col=ts"], fast=False)
    data_changes = cfg.changes(("data",))
    assert data_changes == {"data.protocol": "leave-last-out", "data.time_col": "ts"}
    assert (
        load_config(fast=False).hash()
        == load_config(overrides=["data.user_col=null"], fast=False).hash()
    )
