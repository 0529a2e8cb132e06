"""Checks of an export's metadata and tensors before and after they are read (bet.md §14.1).

:func:`check_meta` checks the JSON metadata's types and bounds; :func:`expected` derives from
it the name, dtype and shape of every tensor the file must hold, so that the container's header
is checked against it before a byte of data is read; the ``check_*`` functions then check the
contents (sizes, offsets, graphs, raw ids). Every failure is an
:class:`~embudget.errors.ExportError` that says what is wrong.
"""

from __future__ import annotations

import re
from typing import Any, TypeGuard

import numpy as np

from embudget.errors import ExportError

__all__ = [
    "MAX_D",
    "MAX_ENTITIES",
    "MAX_LAYERS",
    "bucket_spec",
    "check_buckets",
    "check_csr",
    "check_finite",
    "check_ids",
    "check_meta",
    "check_offsets",
    "check_sizes",
    "check_spec",
    "expected",
]

#: largest d_max (sizes are stored as int16)
MAX_D = 2**15 - 1
#: largest n_layers of a graph backbone accepted from a file (each layer is one propagation)
MAX_LAYERS = 16
#: the interaction graphs of an export written with its history
GRAPHS = ("train", "history")
#: largest user or item count (graph indices are stored as int32)
MAX_ENTITIES = 2**31 - 1

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_VALUES = {"fp32": np.float32, "fp16": np.float16, "int8": np.uint8}

#: (dtype, shape) per tensor name; ``None`` in a shape is a length checked after reading
Spec = dict[str, tuple[Any, tuple[int | None, ...]]]


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(meta: dict[str, Any], key: str, lo: int, hi: int, where: str = "") -> int:
    v = meta.get(key)
    if not _is_int(v) or not lo <= v <= hi:
        raise ExportError(
            f"metadata field {where}{key} must be an integer in [{lo}, {hi}], got {v!r}; "
            "the file was not written by `embudget export` or was altered: export it again"
        )
    return int(v)


def _dict(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ExportError(f"metadata {what} must be a JSON object, got {type(v).__name__}")
    return v


def check_meta(meta: Any, version: int, format_name: str, dtypes: tuple[str, ...]) -> None:
    """Types and bounds of every metadata field that loading uses."""
    from embudget.models.registry import GRAPH_MODELS, MODELS

    meta = _dict(meta, "")
    if meta.get("format") != format_name:
        raise ExportError(f"not an embudget export (format {meta.get('format')!r})")
    v = meta.get("format_version")
    if _is_int(v) and v > version:
        raise ExportError(
            f"export format version {v}; this embudget reads up to {version}: upgrade embudget"
        )
    _int(meta, "format_version", 1, version)
    if meta.get("layout") not in ("jagged", "bucketed"):
        raise ExportError(f"metadata layout must be jagged or bucketed, got {meta.get('layout')!r}")
    if meta.get("dtype") not in dtypes:
        raise ExportError(f"metadata dtype must be one of {dtypes}, got {meta.get('dtype')!r}")
    _int(meta, "n_users", 1, MAX_ENTITIES)
    _int(meta, "n_items", 1, MAX_ENTITIES)
    model = _dict(meta.get("model"), "model")
    if model.get("name") not in MODELS:
        raise ExportError(f"metadata model.name must be one of {sorted(MODELS)}")
    _int(model, "d_max", 1, MAX_D, "model.")
    if not isinstance(meta.get("history", True), bool):
        raise ExportError("metadata history must be true or false")
    if not has_history(meta) and model["name"] in GRAPH_MODELS:
        raise ExportError(f"a {model['name']} export must hold its training graph (history)")
    options = _dict(model.get("options"), "model.options")
    if "n_layers" in options:
        _int(options, "n_layers", 1, MAX_LAYERS, "model.options.")
    tables = _dict(meta.get("tables"), "tables")
    ids = _dict(meta.get("ids"), "ids")
    for side in ("user", "item"):
        names = tables.get(side)
        if (
            not isinstance(names, list)
            or not names
            or len(names) > 8
            or len(set(map(str, names))) != len(names)
            or not all(isinstance(n, str) and _NAME.fullmatch(n) for n in names)
        ):
            raise ExportError(f"metadata tables.{side} must list 1 to 8 distinct module names")
        if ids.get(side) not in ("int", "str"):
            raise ExportError(f"metadata ids.{side} must be 'int' or 'str'")
    if not isinstance(meta.get("sha256"), str):
        raise ExportError("metadata sha256 is missing; export it again")
    if "memory" in meta and not isinstance(meta["memory"], dict):
        raise ExportError("metadata memory must be an object (the table's usage)")


def has_history(meta: dict[str, Any]) -> bool:
    """Whether the export holds its interactions (``train.*`` and ``history.*``, all or none).

    Exports written before the field existed always held them.
    """
    return meta.get("history", True) is True


def expected(meta: dict[str, Any], dense: dict[str, tuple[int, ...]]) -> Spec:
    """Every tensor the file must hold whose name follows from the metadata alone."""
    nu, ni = meta["n_users"], meta["n_items"]
    spec: Spec = {f"dense.{k}": (np.float32, s) for k, s in dense.items()}
    values = _VALUES[meta["dtype"]]
    for side, n in (("user", nu), ("item", ni)):
        spec[f"sizes.{side}"] = (np.int16, (n,))
        if meta["layout"] == "jagged":
            spec[f"offsets.{side}"] = (np.int64, (n + 1,))
            for name in meta["tables"][side]:
                spec[f"emb.{name}.values"] = (values, (None,))
                if meta["dtype"] == "int8":
                    spec[f"emb.{name}.scale"] = (np.float32, (n,))
                    spec[f"emb.{name}.bias"] = (np.float32, (n,))
        else:
            spec[f"buckets.{side}.dims"] = (np.int64, (None,))
            spec[f"buckets.{side}.counts"] = (np.int64, (None,))
            spec[f"index.{side}.bucket"] = (np.int32, (n,))
            spec[f"index.{side}.row"] = (np.int32, (n,))
        if meta["ids"][side] == "int":
            spec[f"ids.{side}"] = (np.int64, (n,))
        else:
            spec[f"ids.{side}.utf8"] = (np.uint8, (None,))
            spec[f"ids.{side}.offsets"] = (np.int64, (n + 1,))
    for g in GRAPHS if has_history(meta) else ():
        spec[f"{g}.indptr"] = (np.int64, (nu + 1,))
        spec[f"{g}.indices"] = (np.int32, (None,))
    return spec


def bucket_spec(meta: dict[str, Any], side: str, dims: np.ndarray, counts: np.ndarray) -> Spec:
    """The bucket tables of one entity type, from its (checked) bucket dims and counts."""
    spec: Spec = {}
    for name in meta["tables"][side]:
        for dim, c in zip(dims.tolist(), counts.tolist(), strict=True):
            key = f"emb.{name}.bucket{dim}"
            spec[key] = (_VALUES[meta["dtype"]], (c, dim))
            if meta["dtype"] == "int8":
                spec[f"{key}.scale"] = (np.float32, (c,))
                spec[f"{key}.bias"] = (np.float32, (c,))
    return spec


def check_spec(entries: dict[str, Any], spec: Spec) -> None:
    """Each named tensor is present with its dtype and shape (``None``: any length)."""
    for name, (dtype, shape) in spec.items():
        e = entries.get(name)
        if e is None:
            raise ExportError(f"the file lacks tensor {name!r}")
        ok = e.dtype == np.dtype(dtype) and len(e.shape) == len(shape)
        if not ok or any(s is not None and s != t for s, t in zip(shape, e.shape, strict=True)):
            raise ExportError(
                f"tensor {name!r} is {e.dtype} of shape {e.shape}; expected "
                f"{np.dtype(dtype)} of shape {tuple('n' if s is None else s for s in shape)}"
            )


def check_sizes(sizes: np.ndarray, d: int, side: str) -> None:
    if sizes.size and (sizes.min() < 1 or sizes.max() > d):
        raise ExportError(f"{side} sizes must lie in [1, d_max = {d}]")


def check_buckets(
    dims: np.ndarray, counts: np.ndarray, bucket: np.ndarray, row: np.ndarray, d: int, side: str
) -> None:
    """Bucket dims increase within [1, d]; every entity has a distinct row of its bucket."""
    nb = dims.size
    if counts.size != nb or nb == 0 or nb > d:
        raise ExportError(f"buckets.{side}.dims/counts must be 1 to d_max long and equal")
    if dims.min() < 1 or dims.max() > d or np.any(np.diff(dims) <= 0):
        raise ExportError(f"buckets.{side}.dims must increase within [1, d_max = {d}]")
    if bucket.size and (bucket.min() < 0 or bucket.max() >= nb):
        raise ExportError(f"index.{side}.bucket holds bucket numbers out of range")
    if not np.array_equal(np.bincount(bucket, minlength=nb), counts):
        raise ExportError(f"buckets.{side}.counts do not match index.{side}.bucket")
    if row.size and (row.min() < 0 or np.any(row >= counts[bucket])):
        raise ExportError(f"index.{side}.row holds rows out of their bucket")
    key = bucket.astype(np.int64) * (int(counts.max()) + 1) + row
    if np.unique(key).size != key.size:
        raise ExportError(f"index.{side}.row gives two {side}s the same bucket row")


def check_offsets(off: np.ndarray, lengths: np.ndarray | None, total: int, what: str) -> None:
    """Offsets start at 0, never decrease, end at ``total`` (and match ``lengths`` if given)."""
    if off[0] != 0 or off[-1] != total or np.any(np.diff(off) < 0):
        raise ExportError(f"{what} must rise from 0 to {total} (got {off[0]} .. {off[-1]})")
    if lengths is not None and not np.array_equal(np.diff(off), lengths):
        raise ExportError(f"{what} do not match the sizes")


def check_csr(indptr: np.ndarray, indices: np.ndarray, n_cols: int, name: str) -> None:
    """A CSR graph: monotone indptr over all of indices, column indices in [0, n_cols)."""
    check_offsets(indptr, None, indices.size, f"{name}.indptr")
    if indices.size and (indices.min() < 0 or indices.max() >= n_cols):
        raise ExportError(f"{name}.indices must lie in [0, {n_cols}) (item indices)")


def check_finite(arrays: dict[str, np.ndarray]) -> None:
    """Every float tensor (embeddings, int8 scales and biases, dense weights) is finite."""
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ExportError(f"tensor {name!r} holds NaN or infinite values")


def check_ids(ids: np.ndarray, side: str) -> None:
    if np.unique(ids).size != ids.size:
        raise ExportError(f"the raw {side} ids are not unique")
