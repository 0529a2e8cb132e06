"""Where a dataset is: name resolution, format detection and the files a format reads.

``resolve_dataset("gowalla")`` finds the gzipped copy shipped in ``embudget/datasets/gowalla``
(likewise ``gowalla-mini``). Other names (``lastfm``, ``ml-100k``, ``yelp2018`` or any folder
name) are looked up as ``<dir>/<name>`` in :func:`data_search_path`: ``$EMBUDGET_DATA``, then
``./shared/data`` and ``../shared/data`` of the working directory, then ``./cache/data``
(:func:`fetch_dir`, where ``embudget data fetch`` puts what it downloads;
:mod:`embudget.data.fetch`). A path may be a directory (format detected from its files) or a
single file (format from its extension).
"""

from __future__ import annotations

import os
from pathlib import Path

from embudget.errors import DataFormatError

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
#: Where ``embudget data fetch`` puts datasets by default, relative to the working directory
#: (the ``data`` folder of the default ``cache_dir``).
FETCH_DIR = Path("cache") / "data"
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


def fetch_dir() -> Path:
    """The folder ``embudget data fetch`` writes to by default and names are looked up in
    last: ``./cache/data`` of the working directory."""
    return Path.cwd() / FETCH_DIR


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
        for d in [*data_search_path(), fetch_dir()]:
            if (d / name).is_dir():
                return name, d / name
    from embudget.data.remote import REMOTE_DATASETS

    search = ", ".join(str(d) for d in [*data_search_path(), fetch_dir()])
    raise DataFormatError(
        f"unknown dataset {name!r}: not an existing path and not found as a folder in the data "
        f"search path [{search}]. Known names: {', '.join(KNOWN_DATASETS)}. Pass a path, or set "
        "EMBUDGET_DATA to the folder that holds the dataset folder; `embudget data fetch NAME` "
        f"downloads {', '.join(REMOTE_DATASETS)} into {FETCH_DIR}."
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
    if suffix in (".parquet", ".pq"):
        return "parquet"
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
