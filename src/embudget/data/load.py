"""Dataset name resolution, format detection and loading into a split :class:`Dataset`.

``load_dataset("gowalla")`` reads the gzipped copy shipped in ``embudget/datasets/gowalla``
(likewise ``gowalla-mini``). Other names (``lastfm``, ``ml-100k``, ``yelp2018`` or any folder
name) are looked up as ``<dir>/<name>`` in :func:`data_search_path`: ``$EMBUDGET_DATA``, then
``./shared/data`` and ``../shared/data`` of the working directory. A path may be a
directory (format detected from its files) or a single file (format from its extension).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from embudget.config.choices import DataFormat, SplitProtocol, choices
from embudget.data.dataset import Dataset
from embudget.data.formats import (
    RawInteractions,
    read_csv,
    read_lastfm,
    read_lightgcn,
    read_movielens,
    read_recbole,
)
from embudget.data.raw import verify_checksums
from embudget.data.split import (
    Pairs,
    SplitArrays,
    split_paper,
    split_standard,
    split_standard_single,
    split_summary,
)
from embudget.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)

#: Known dataset names and their file format.
KNOWN_DATASETS: dict[str, str] = {
    "gowalla": "lightgcn",
    "gowalla-mini": "lightgcn",
    "yelp2018": "lightgcn",
    "lastfm": "lastfm",
    "ml-100k": "recbole",
}
#: Datasets shipped inside the package (``embudget/datasets/<name>``).
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "datasets"
SHIPPED_DATASETS = ("gowalla", "gowalla-mini")
FORMATS = choices(DataFormat)
#: protocol names and their one-letter short forms
PROTOCOLS = {**{p: p for p in choices(SplitProtocol)}, "p": "paper", "s": "standard"}
_EXPECTED_FILES = (
    "train.txt + test.txt (lightgcn), data1.txt + test1.txt (lastfm), "
    "one *.inter (recbole), ratings.dat or ratings.csv (movielens); each may be .gz"
)


# --- name resolution ----------------------------------------------------------------------


def data_search_path() -> list[Path]:
    """Directories searched for dataset names, in order: ``$EMBUDGET_DATA`` (os.pathsep
    separated), then ``./shared/data`` and ``../shared/data`` relative to the working directory.

    Nothing depends on where the package is installed: a name is found only through the
    environment variable or the directory the command runs in.
    """
    env = os.environ.get("EMBUDGET_DATA", "")
    dirs = [Path(d).expanduser() for d in env.split(os.pathsep) if d]
    cwd = Path.cwd()
    dirs += [cwd / "shared" / "data", cwd.parent / "shared" / "data"]
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def absolute_dataset_path(name: str) -> str:
    """``name`` as an absolute path when it names an existing file or folder (and is not a
    known dataset name, which :func:`resolve_dataset` looks up first); else ``name``."""
    if not name.strip() or name in KNOWN_DATASETS:
        return name
    p = Path(name).expanduser()
    return os.path.abspath(p) if p.exists() else name


def resolve_dataset(name_or_path: str | Path) -> tuple[str, Path]:
    """(name, path) of a dataset given by known name, by name in the search path, or by path.

    ``gowalla`` and ``gowalla-mini`` resolve to the copies shipped in the package.

    Raises:
        DataFormatError: an empty name, or a name that is neither an existing path nor found.
    """
    if not str(name_or_path).strip():
        raise DataFormatError(
            "empty dataset name; name a dataset (e.g. gowalla, gowalla-mini) or give its path"
        )
    if isinstance(name_or_path, str) and name_or_path in SHIPPED_DATASETS:
        return name_or_path, SHIPPED_DIR / name_or_path
    is_name = isinstance(name_or_path, str) and name_or_path in KNOWN_DATASETS
    p = Path(name_or_path).expanduser()
    if not is_name and p.exists():
        return str(name_or_path), p
    name = str(name_or_path)
    if isinstance(name_or_path, str) and os.sep not in name and "/" not in name:
        for d in data_search_path():
            if (d / name).is_dir():
                return name, d / name
    search = ", ".join(str(d) for d in data_search_path())
    raise DataFormatError(
        f"unknown dataset {name!r}: not an existing path and not found as a folder in the data "
        f"search path [{search}]. Known names: {', '.join(KNOWN_DATASETS)}. Pass a path, or set "
        "EMBUDGET_DATA to the folder that holds the dataset folder."
    )


def _find(d: Path, name: str) -> Path | None:
    for cand in (d / name, d / f"{name}.gz"):
        if cand.exists() and not cand.is_dir():  # the reader refuses a FIFO or device by kind
            return cand
    return None


def _strip_gz(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


def _inter_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if _strip_gz(p.name).endswith(".inter") and p.is_file())


def detect_format(path: Path) -> str:
    """Format of a dataset directory (from its files) or of a single file (its extension)."""
    if path.is_dir():
        if _find(path, "train.txt") and _find(path, "test.txt"):
            return "lightgcn"
        if _find(path, "data1.txt") and _find(path, "test1.txt"):
            return "lastfm"
        if len(_inter_files(path)) == 1:
            return "recbole"
        if _find(path, "ratings.dat") or _find(path, "ratings.csv"):
            return "movielens"
        raise DataFormatError(
            f"cannot detect the dataset format: expected {_EXPECTED_FILES}; pass fmt=... or "
            "point at a single file",
            str(path),
        )
    name = _strip_gz(path.name).lower()
    suffix = Path(name).suffix
    if suffix == ".inter":
        return "recbole"
    if suffix == ".dat" or name == "ratings.csv":
        return "movielens"
    if suffix == ".txt":
        return "lightgcn"
    return "csv"


def input_files(path: Path, fmt: str) -> list[tuple[str, Path]]:
    """(role, file) pairs to read; role is ``train``/``test`` for a given split, else ``all``."""
    if not path.exists():
        raise DataFormatError("no such file or directory", str(path))
    if not path.is_dir():  # a file, or a FIFO or device that the reader refuses by its kind
        return [("all", path)]
    pairs = {"lightgcn": ("train.txt", "test.txt"), "lastfm": ("data1.txt", "test1.txt")}
    if fmt in pairs:
        found = [
            (role, fname, _find(path, fname))
            for role, fname in zip(("train", "test"), pairs[fmt], strict=True)
        ]
        missing = [fname for _, fname, f in found if f is None]
        if missing:
            raise DataFormatError(
                f"missing {' and '.join(missing)}: the {fmt} format expects "
                f"{' + '.join(pairs[fmt])} (optionally .gz) in this folder",
                str(path / missing[0]),
            )
        return [(role, f) for role, _, f in found if f is not None]
    if fmt == "recbole":
        inters = _inter_files(path)
        if len(inters) != 1:
            raise DataFormatError(
                f"the recbole format expects exactly one *.inter file here, found {len(inters)}; "
                "pass the file path instead",
                str(path),
            )
        return [("all", inters[0])]
    if fmt == "movielens":
        f = _find(path, "ratings.dat") or _find(path, "ratings.csv")
        if f is None:
            raise DataFormatError(
                "the movielens format expects ratings.dat or ratings.csv in this folder",
                str(path / "ratings.dat"),
            )
        return [("all", f)]
    raise DataFormatError(
        f"the {fmt} format needs a file path, not a folder; pass the file itself", str(path)
    )


def _read(
    f: Path,
    fmt: str,
    min_rating: float | None,
    user_col: str | None,
    item_col: str | None,
) -> RawInteractions:
    if fmt in ("lightgcn", "lastfm"):
        if min_rating is not None:
            raise ConfigError(f"min_rating needs ratings, and the {fmt} format has none; drop it")
        if user_col is not None or item_col is not None:
            raise ConfigError(f"user_col/item_col need a header; the {fmt} format has none")
        return read_lightgcn(f) if fmt == "lightgcn" else read_lastfm(f)
    if fmt == "recbole":
        return read_recbole(f, min_rating=min_rating, user_col=user_col, item_col=item_col)
    if fmt == "movielens" and _strip_gz(f.name).lower().endswith(".dat"):
        if user_col is not None or item_col is not None:
            raise ConfigError("user_col/item_col need a header; ratings.dat has none")
        return read_movielens(f, min_rating=min_rating)
    return read_csv(f, user_col=user_col, item_col=item_col, min_rating=min_rating)


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
) -> Dataset:
    """Read, index and split a dataset (protocol.md §2-4).

    Args:
        name_or_path: a shipped name (``gowalla``, ``gowalla-mini``), a folder name in
            :func:`data_search_path` (e.g. ``lastfm``, ``ml-100k``, ``yelp2018``), or a
            directory / file path.
        protocol: ``paper`` (P: merge and re-split 50/25/25 per user) or ``standard``
            (S: keep the given train/test, carve validation from train).
        split_seed: seed of the keyed ordering.
        fmt: ``auto`` or one of ``lightgcn``, ``lastfm``, ``recbole``, ``movielens``, ``csv``.
        min_rating: keep only ratings >= this (formats with ratings); names the variant.
        user_col, item_col: header columns of the user and item ids (csv / recbole).
    """
    proto = PROTOCOLS.get(str(protocol).lower())
    if proto is None:
        raise ConfigError(f"unknown protocol {protocol!r}; use 'paper' (P) or 'standard' (S)")
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
    raws = [(role, _read(f, fmt, min_rating, user_col, item_col)) for role, f in files]
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
    splits: SplitArrays
    if proto == "paper" or not given:
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


def dataset_stats(ds: Dataset) -> dict[str, float | int]:
    """Users, items, interactions, density and per-split counts (``Dataset.stats``)."""
    return ds.stats()
