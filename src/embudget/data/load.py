"""Loading a dataset into a split :class:`Dataset`: read, index, filter (k-core), split.

``load_dataset("gowalla")`` reads the gzipped copy shipped in ``embudget/datasets/gowalla``
(likewise ``gowalla-mini``); how names and paths resolve is :mod:`embudget.data.locate`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embudget.config.choices import TIME_PROTOCOLS, DataFormat, SplitProtocol, choices
from embudget.data.dataset import Dataset
from embudget.data.filters import kcore_parts, reindex
from embudget.data.formats import (
    RawInteractions,
    read_csv,
    read_lastfm,
    read_lightgcn,
    read_movielens,
    read_recbole,
)
from embudget.data.locate import (
    KNOWN_DATASETS,
    SHIPPED_DATASETS,
    SHIPPED_DIR,
    _strip_gz,
    absolute_dataset_path,
    data_search_path,
    detect_format,
    input_files,
    resolve_dataset,
)
from embudget.data.parquet import read_parquet
from embudget.data.raw import verify_checksums
from embudget.data.split import (
    Pairs,
    SplitArrays,
    split_paper,
    split_standard,
    split_standard_single,
    split_summary,
)
from embudget.data.temporal import split_leave_last_out, split_temporal
from embudget.errors import ConfigError, DataFormatError

if TYPE_CHECKING:
    from embudget.config.schema import DataConfig

log = logging.getLogger(__name__)

# re-exported: name resolution lives in data/locate.py
__all__ = [
    "FORMATS",
    "KNOWN_DATASETS",
    "PROTOCOLS",
    "SHIPPED_DATASETS",
    "SHIPPED_DIR",
    "absolute_dataset_path",
    "data_search_path",
    "dataset_stats",
    "detect_format",
    "load_configured",
    "load_dataset",
    "resolve_dataset",
]

FORMATS = choices(DataFormat)
#: protocol names and their one-letter short forms
PROTOCOLS = {**{p: p for p in choices(SplitProtocol)}, "p": "paper", "s": "standard"}
PROTOCOLS.update({"t": "temporal", "l": "leave-last-out", "llo": "leave-last-out"})


def _read(
    f: Path,
    fmt: str,
    min_rating: float | None,
    cols: tuple[str | None, str | None, str | None],
    sep: str | None,
) -> RawInteractions:
    user_col, item_col, time_col = cols
    named = [k for k, v in zip(("user_col", "item_col", "time_col"), cols, strict=True) if v]
    headless = fmt in ("lightgcn", "lastfm") or (
        fmt == "movielens" and _strip_gz(f.name).lower().endswith(".dat")
    )
    if headless and named:
        raise ConfigError(f"{'/'.join(named)} need a header; the {fmt} file {f.name} has none")
    if sep is not None and fmt not in ("csv", "movielens"):
        raise ConfigError(f"sep applies to csv files; the {fmt} format fixes its delimiter")
    if fmt in ("lightgcn", "lastfm"):
        if min_rating is not None:
            raise ConfigError(f"min_rating needs ratings, and the {fmt} format has none; drop it")
        return read_lightgcn(f) if fmt == "lightgcn" else read_lastfm(f)
    if fmt == "recbole":
        return read_recbole(
            f, min_rating=min_rating, user_col=user_col, item_col=item_col, time_col=time_col
        )
    if fmt == "parquet":
        return read_parquet(f, user_col, item_col, time_col, min_rating=min_rating)
    if headless:
        return read_movielens(f, min_rating=min_rating)
    return read_csv(
        f,
        user_col=user_col,
        item_col=item_col,
        delimiter=sep,
        min_rating=min_rating,
        timestamp_col=time_col or "timestamp",
        require_time=time_col is not None,
    )


# --- assembling a Dataset -----------------------------------------------------------------


def _index(arrays: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sorted unique raw ids and, per input array, its 0-based indices into them."""
    if all(a.dtype.kind in "iu" for a in arrays):
        cat = np.concatenate([a.astype(np.int64, copy=False) for a in arrays])
    else:  # any string id: compare everything as strings
        cat = np.concatenate([a.astype(np.str_) for a in arrays])
    uniq, inv = np.unique(cat, return_inverse=True)
    bounds = np.cumsum([len(a) for a in arrays])[:-1]
    return uniq, [x.astype(np.int64, copy=False) for x in np.split(inv.ravel(), bounds)]


def _dedupe(u: np.ndarray, i: np.ndarray, n_items: int) -> tuple[Pairs, int]:
    keys = u * n_items + i
    _, first = np.unique(keys, return_index=True)
    first.sort()
    return (u[first], i[first]), len(u) - len(first)


def _timed_dedupe(
    u: np.ndarray, i: np.ndarray, t: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Distinct (user, item) pairs, each with its earliest timestamp."""
    o = np.argsort(t, kind="stable")
    u, i, t = u[o], i[o], t[o]
    _, first = np.unique(u * n_items + i, return_index=True)
    return u[first], i[first], t[first], len(u) - len(first)


def _member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """keys in sorted_keys (np.isin is several times slower here)."""
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[at] == keys


def load_dataset(
    name_or_path: str | Path,
    protocol: str = "paper",
    split_seed: int = 42,
    fmt: str = "auto",
    min_rating: float | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    sep: str | None = None,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.1,
) -> Dataset:
    """Read, index and split a dataset (protocol.md §2-4).

    Args:
        name_or_path: a shipped name (``gowalla``, ``gowalla-mini``), a folder name in
            :func:`data_search_path` (e.g. ``lastfm``, ``ml-100k``, ``yelp2018``), or a
            directory / file path.
        protocol: ``paper`` (P: merge and re-split 50/25/25 per user), ``standard``
            (S: keep the given train/test, carve validation from train), ``temporal`` (the
            latest ``test_fraction`` of all interactions by time test, the ``valid_fraction``
            before them validation) or ``leave-last-out`` (per user, the latest interaction
            test and the one before validation; users with < 3 keep all in train);
            :mod:`embudget.data.temporal`. The last two need ``time_col``.
        split_seed: seed of the keyed ordering.
        fmt: ``auto`` or one of ``lightgcn``, ``lastfm``, ``recbole``, ``movielens``, ``csv``.
        min_rating: keep only ratings >= this (formats with ratings); names the variant.
        user_col, item_col, time_col: header columns of the user ids, item ids and timestamps
            (csv / recbole / parquet).
        sep: the delimiter of a csv file (None: sniffed).
        min_user_interactions, min_item_interactions: the k-core filter
            (:mod:`embudget.data.filters`), applied before the split; 0 keeps everything.
    """
    proto = PROTOCOLS.get(str(protocol).lower())
    if proto is None:
        raise ConfigError(
            f"unknown protocol {protocol!r}; use one of {', '.join(choices(SplitProtocol))}"
        )
    if proto in TIME_PROTOCOLS and time_col is None:
        raise ConfigError(
            f"protocol {proto} orders interactions by time; name the timestamp column "
            "(time_col, --time-col)"
        )
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int | np.integer):
        raise ConfigError(f"split_seed must be an integer, got {split_seed!r}")
    if not 0 <= split_seed < 2**63:
        raise ConfigError(f"split_seed must lie in [0, 2^63), got {split_seed}")
    name, path = resolve_dataset(name_or_path)
    if fmt == "auto":
        fmt = detect_format(path)
    files = input_files(path, fmt)
    if sep in ("tab", "\\t"):  # the tab character as a config file or flag may spell it
        sep = "\t"
    cols = (user_col, item_col, time_col)
    raws = [(role, _read(f, fmt, min_rating, cols, sep)) for role, f in files]
    hashes = {_strip_gz(Path(r.path).name): r.sha256 for _, r in raws}
    verified = verify_checksums(path if path.is_dir() else path.parent, hashes)

    user_ids, uidx = _index([r.users for _, r in raws])
    item_ids, iidx = _index([r.items for _, r in raws])
    n_users, n_items = len(user_ids), len(item_ids)
    if n_users == 0 or n_items == 0:
        raise DataFormatError("no interactions (empty dataset)", str(path))
    roles = [role for role, _ in raws]
    given = roles == ["train", "test"]
    seed = int(split_seed)
    dropped = overlap = 0
    times: list[np.ndarray] = []
    if time_col is not None:  # the readers require the column when time_col is named
        times = [r.timestamps for _, r in raws if r.timestamps is not None]
    kcore = max(min_user_interactions, min_item_interactions) > 1
    if kcore:
        keep_u, keep_i, keep = kcore_parts(
            uidx, iidx, n_users, n_items, min_user_interactions, min_item_interactions
        )
        if not keep_u.any():
            raise DataFormatError(
                f"the k-core filter (users >= {min_user_interactions}, items >= "
                f"{min_item_interactions} interactions) leaves nothing; lower the thresholds",
                str(path),
            )
        new_u, new_i = reindex(keep_u), reindex(keep_i)
        uidx = [new_u[a[k]] for a, k in zip(uidx, keep, strict=True)]
        iidx = [new_i[a[k]] for a, k in zip(iidx, keep, strict=True)]
        times = [t[k] for t, k in zip(times, keep, strict=True)] if times else []
        user_ids, item_ids = user_ids[keep_u], item_ids[keep_i]
        n_users, n_items = len(user_ids), len(item_ids)
    splits: SplitArrays
    if proto in TIME_PROTOCOLS:
        ut, it, tt, dropped = _timed_dedupe(
            np.concatenate(uidx), np.concatenate(iidx), np.concatenate(times), n_items
        )
        if proto == "temporal":
            splits = split_temporal(ut, it, tt, n_users, test_fraction, valid_fraction)
        else:
            splits = split_leave_last_out(ut, it, tt, n_users)
    elif proto == "paper" or not given:
        (u, i), dropped = _dedupe(np.concatenate(uidx), np.concatenate(iidx), n_items)
        if proto == "paper":
            splits = split_paper(u, i, n_users, seed)
        else:
            splits = split_standard_single(u, i, n_users, seed)
    else:
        train, d1 = _dedupe(uidx[0], iidx[0], n_items)
        (eu, ei), d2 = _dedupe(uidx[1], iidx[1], n_items)
        dropped = d1 + d2
        in_train = _member(eu * n_items + ei, np.sort(train[0] * n_items + train[1]))
        overlap = int(in_train.sum())
        splits = split_standard(train, (eu[~in_train], ei[~in_train]), n_users, seed)
    if dropped or overlap:
        log.warning(
            "%s: dropped %d duplicate (user, item) pairs and %d test pairs also in train",
            name,
            dropped,
            overlap,
        )
    summary = split_summary(splits, n_users)
    label = name if min_rating is None else f"{name}-min_rating{min_rating:g}"
    meta: dict[str, object] = {
        "format": fmt,
        "files": [Path(r.path).name for _, r in raws],
        "given_split": given,
        "derived_split": proto == "standard" and not given,
        "raw_interactions": int(sum(len(r) for _, r in raws)),
        "duplicates_dropped": int(dropped),
        "test_overlap_dropped": overlap,
        "min_rating": min_rating,
        "checksums_verified": verified,
        **summary,
    }
    if time_col is not None:
        meta["time_col"] = time_col
    if kcore:
        meta["kcore"] = {"min_user": min_user_interactions, "min_item": min_item_interactions}
    ds = Dataset.from_arrays(
        name=label,
        protocol=proto,
        split_seed=seed,
        splits=splits,
        user_ids=user_ids,
        item_ids=item_ids,
        source_hashes=hashes,
        meta=meta,
    )
    log.info(
        "loaded %s (%s): %d users, %d items, train/valid/test %d/%d/%d",
        label,
        proto,
        n_users,
        n_items,
        summary["n_train"],
        summary["n_valid"],
        summary["n_test"],
    )
    return ds


def load_configured(d: DataConfig) -> Dataset:
    """:func:`load_dataset` with every setting of a config's ``data`` section."""
    return load_dataset(
        d.name,
        protocol=d.protocol,
        split_seed=d.split_seed,
        fmt=d.format,
        min_rating=d.min_rating,
        user_col=d.user_col,
        item_col=d.item_col,
        time_col=d.time_col,
        sep=d.sep,
        min_user_interactions=d.min_user_interactions,
        min_item_interactions=d.min_item_interactions,
        test_fraction=d.test_fraction,
        valid_fraction=d.valid_fraction,
    )


def dataset_stats(ds: Dataset) -> dict[str, float | int]:
    """Users, items, interactions, density and per-split counts (``Dataset.stats``)."""
    return ds.stats()
