"""The export file format, and loading it back without unpickling (bet.md §14.1, §14.3).

Formats (one file each, tensors plus JSON metadata):

- ``safetensors`` / ``npz``: the *jagged* layout. Per entity type ``sizes.{user,item}`` (int16)
  and ``offsets.{user,item}`` (int64, count + 1), per table ``emb.<table>.values`` (Σ d_n).
- ``buckets``: sizes rounded to multiples of 4 within the budget (FBGEMM/TorchRec tables need
  dimensions that are multiples of 4); per table and bucket ``emb.<table>.bucket<d>`` of shape
  (rows, d), and per entity type ``index.<type>.bucket`` / ``index.<type>.row`` (int32) with
  ``buckets.<type>.dims`` / ``.counts``: ready for one embedding config per bucket. Rounding
  changes the model (prefixes cut or zero-extended), so its scores differ from the run's.

Precision: ``fp32`` (default), ``fp16``, or ``int8`` row-wise (uint8 codes, per-row fp32
``.scale`` and ``.bias``: x ≈ code · scale + bias); bytes as counted by
:class:`~embudget.budget.usage.Usage`.

What serving needs. Every export also holds the dense backbone weights (``dense.<name>``,
fp32: NGCF transforms, NCF MLP) and the raw-id maps (``ids.*``). Exports written with their
history (metadata ``history: true``) also hold the training graph (``train.indptr`` /
``train.indices``) and all known interactions for exclusion (``history.*``); without it the
file holds no interaction data, and graph backbones cannot be exported that way.
:func:`load` rebuilds the backbone around the *compact ego tables*: for MF and NCF that is the
whole model; LightGCN and NGCF propagate once over the stored training graph at load, so the
propagated user/item representations (dense, d_max or 4·d_max wide, N rows) exist only in
memory at serving time, never in the file. The compact part is exactly the ID tables.

Integrity: the metadata holds a sha256 over every tensor; a truncated or corrupted file raises
:class:`~embudget.errors.ExportError`. Untrusted files: :func:`load` parses the container's own
header with bounded readers (:mod:`embudget.deploy.container`) and checks the metadata and every
tensor's dtype, shape and byte range against it (:mod:`embudget.deploy.validate`) before reading
any tensor data, so a malformed or crafted file ends in ``ExportError`` with memory bounded by a
small multiple of the file's size.

Writing is :mod:`embudget.deploy.export`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from embudget.deploy.container import META_KEY, Container, open_container
from embudget.deploy.validate import (
    GRAPHS,
    bucket_spec,
    check_buckets,
    check_csr,
    check_finite,
    check_ids,
    check_meta,
    check_offsets,
    check_sizes,
    check_spec,
    expected,
    has_history,
)
from embudget.errors import EmbudgetError, ExportError
from embudget.models import build_model
from embudget.models.base import Backbone
from embudget.tables.compact import CompactEmbedding

__all__ = [
    "BUCKET_STEP",
    "EXPORT_DTYPES",
    "FORMATS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "META_KEY",
    "SIDES",
    "Exported",
    "checksum",
    "load",
]

FORMATS = ("safetensors", "npz", "buckets")
EXPORT_DTYPES = ("fp32", "fp16", "int8")
FORMAT_NAME = "embudget-export"
#: 2: the checksum covers the metadata too (a flipped bit in it no longer loads); 1 is still read
FORMAT_VERSION = 2
BUCKET_STEP = 4
SIDES = ("user", "item")


@dataclass
class Exported:
    """A loaded export: a backbone with compact tables (eval mode, CPU), ids and interactions.

    Attributes:
        model: the backbone; ``model.scorer()`` gives full-ranking scores.
        user_ids, item_ids: raw ids, ``user_ids[index] == raw id``.
        train: training interactions (the graph of LightGCN/NGCF), CSR (users × items);
            None when the export holds no history.
        history: every known interaction (train, valid and test), for exclusion in serving;
            None when the export holds no history.
        meta: the JSON metadata.
    """

    model: Backbone
    user_ids: np.ndarray
    item_ids: np.ndarray
    train: sp.csr_matrix | None
    history: sp.csr_matrix | None
    meta: dict[str, Any]


def checksum(tensors: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order, then (format 2)
    over the metadata as canonical JSON without its ``sha256`` field."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape};".encode())
        h.update(a.tobytes())
    if meta is not None:
        rest = {k: v for k, v in meta.items() if k != "sha256"}
        h.update(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# loading: the container header and the metadata are checked before any tensor is read
# --------------------------------------------------------------------------------------------
def load(path: str | Path) -> Exported:
    """Load an export written by :func:`export_model` / ``embudget export`` (never unpickles).

    Safe on files embudget did not write: the metadata is checked against the file's own header
    (every tensor's dtype, shape and byte range) before any tensor is read, every size field is
    bounded by what the file holds (``d_max`` ≤ 32767, ``n_layers`` ≤ 16, counts equal to the
    stored lengths), and the contents (sizes, offsets, graphs, raw ids, checksum) are checked
    before the model is built. Memory stays within a small multiple of the file's size.

    Raises:
        ExportError: the file is missing, truncated, corrupted, inconsistent or altered.
    """
    path = Path(path)
    with open_container(path) as c:
        try:
            arrays, meta = _read_checked(c)
            return _assemble(arrays, meta)
        except ExportError as e:
            if str(path) in str(e):
                raise
            raise ExportError(f"{path}: {e}") from e
        except Exception as e:  # anything the checks above missed is still a damaged file
            raise ExportError(
                f"{path} is inconsistent and cannot be loaded ({type(e).__name__}: {e}); "
                "export it again"
            ) from e


def _build(meta: dict[str, Any], train: sp.csr_matrix) -> Backbone:
    """The backbone on the meta device: no (num, d_max) table is ever allocated."""
    m = meta["model"]
    with torch.device("meta"):
        try:
            return build_model(
                m["name"], meta["n_users"], meta["n_items"], train, m["d_max"], **m["options"]
            )
        except (EmbudgetError, TypeError, ValueError) as e:
            raise ExportError(f"the model metadata does not build a backbone ({e})") from e


def _read_checked(c: Container) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    meta = c.meta
    check_meta(meta, FORMAT_VERSION, FORMAT_NAME, EXPORT_DTYPES)
    kind = "npz" if c.is_npz else "safetensors"
    if meta.get("container", kind) != kind:
        raise ExportError(
            f"metadata says container {meta.get('container')!r} but the file is {kind}"
        )
    nu, ni, d = meta["n_users"], meta["n_items"], meta["model"]["d_max"]
    spec = expected(meta, {})
    check_spec(c.entries, spec)  # n_users and n_items are now bounded by the stored lengths
    skeleton = _build(meta, sp.csr_matrix((nu, ni), dtype=np.float32))
    names = {
        "user": _module_names(skeleton, skeleton.user_tables()),
        "item": _module_names(skeleton, skeleton.item_tables()),
    }
    if names != meta["tables"]:
        raise ExportError(f"metadata tables {meta['tables']} are not the backbone's {names}")
    prefixes = tuple(f"{n}." for side in SIDES for n in names[side])
    dense = {
        k: tuple(v.shape) for k, v in skeleton.state_dict().items() if not k.startswith(prefixes)
    }
    spec = expected(meta, dense)
    check_spec(c.entries, spec)
    arrays: dict[str, np.ndarray] = {}

    def read(name: str) -> np.ndarray:
        if name not in arrays:
            arrays[name] = c.read(name)
        return arrays[name]

    def length(name: str) -> int:
        return int(c.entries[name].shape[0]) if name in c.entries else -1

    for side in SIDES:
        sizes = read(f"sizes.{side}")
        check_sizes(sizes, d, side)
        if meta["layout"] == "jagged":
            total = int(sizes.sum(dtype=np.int64))
            check_offsets(read(f"offsets.{side}"), sizes, total, f"offsets.{side}")
            for name in meta["tables"][side]:
                spec[f"emb.{name}.values"] = (spec[f"emb.{name}.values"][0], (total,))
        else:
            dims, counts = read(f"buckets.{side}.dims"), read(f"buckets.{side}.counts")
            bucket, row = read(f"index.{side}.bucket"), read(f"index.{side}.row")
            check_buckets(dims, counts, bucket, row, d, side)
            if not np.array_equal(dims[bucket], sizes):
                raise ExportError(f"bucket index of {side}s does not match their sizes")
            spec.update(bucket_spec(meta, side, dims, counts))
        if meta["ids"][side] == "str":
            name = f"ids.{side}.utf8"
            check_offsets(read(f"ids.{side}.offsets"), None, length(name), f"ids.{side}.offsets")
            widest = int(np.diff(arrays[f"ids.{side}.offsets"]).max(initial=0))
            if 4 * widest * sizes.size > 32 * c.size + 2**20:
                raise ExportError(f"raw {side} ids up to {widest} bytes long are refused")
    graphs = GRAPHS if has_history(meta) else ()
    for g in graphs:
        check_offsets(read(f"{g}.indptr"), None, length(f"{g}.indices"), f"{g}.indptr")
    check_spec(c.entries, spec)
    unknown = sorted(set(c.entries) - set(spec))
    if unknown:
        raise ExportError(f"the file holds tensors no embudget export has: {unknown[:5]}")
    for name in sorted(spec):
        read(name)
    covered = meta if meta["format_version"] >= 2 else None
    if checksum(arrays, covered) != meta["sha256"]:
        raise ExportError("corrupted: its checksum does not match; export it again")
    for g in graphs:
        check_csr(arrays[f"{g}.indptr"], arrays[f"{g}.indices"], ni, g)
    check_finite(arrays)
    return arrays, meta


def _module_names(model: Backbone, tables: list[Any]) -> list[str]:
    by_id = {id(m): n for n, m in model.named_modules()}
    return [by_id[id(t)] for t in tables]


def _decode_ids(arrays: dict[str, np.ndarray], side: str, kind: str) -> np.ndarray:
    if kind == "int":
        ids = arrays[f"ids.{side}"]
    else:
        blob = arrays[f"ids.{side}.utf8"].tobytes()
        off = arrays[f"ids.{side}.offsets"].tolist()
        pairs = zip(off[:-1], off[1:], strict=True)
        try:
            ids = np.array([blob[a:b].decode("utf-8") for a, b in pairs])
        except UnicodeDecodeError as e:
            raise ExportError(f"raw {side} ids are not valid UTF-8 ({e})") from e
    check_ids(ids, side)
    return ids


def _csr(arrays: dict[str, np.ndarray], name: str, shape: tuple[int, int]) -> sp.csr_matrix:
    indptr, indices = arrays[f"{name}.indptr"], arrays[f"{name}.indices"]
    data = np.ones(indices.size, dtype=np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=shape)


def _decode_jagged(arrays: dict[str, np.ndarray], key: str, sizes: np.ndarray) -> np.ndarray:
    v = arrays[f"{key}.values"]
    if v.dtype == np.uint8:
        scale = np.repeat(arrays[f"{key}.scale"], sizes)
        bias = np.repeat(arrays[f"{key}.bias"], sizes)
        return (v.astype(np.float32) * scale + bias).astype(np.float32)
    return v.astype(np.float32)


def _decode_bucketed(
    arrays: dict[str, np.ndarray], key: str, side: str, sizes: np.ndarray
) -> np.ndarray:
    """Jagged values of one table rebuilt from its bucket tables (Σ sizes floats, no padding)."""
    dims = arrays[f"buckets.{side}.dims"]
    bucket, row = arrays[f"index.{side}.bucket"], arrays[f"index.{side}.row"]
    starts = np.concatenate([[0], np.cumsum(sizes)])[:-1]
    values = np.empty(int(sizes.sum()), dtype=np.float32)
    for b, dim in enumerate(dims.tolist()):  # one pass per bucket table
        name = f"{key}.bucket{dim}"
        block = arrays[name]
        if block.dtype == np.uint8:
            block = block * arrays[f"{name}.scale"][:, None] + arrays[f"{name}.bias"][:, None]
        members = np.flatnonzero(bucket == b)
        values[starts[members][:, None] + np.arange(dim)] = block[row[members]]
    return values


def _assemble(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Exported:
    nu, ni = meta["n_users"], meta["n_items"]
    d = meta["model"]["d_max"]
    train = history = None
    if has_history(meta):
        train, history = _csr(arrays, "train", (nu, ni)), _csr(arrays, "history", (nu, ni))
    model = _build(meta, sp.csr_matrix((nu, ni), dtype=np.float32) if train is None else train)
    dense = {
        k[len("dense.") :]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("dense.")
    }
    for side in SIDES:
        sizes = arrays[f"sizes.{side}"].astype(np.int64)
        for name in meta["tables"][side]:
            key = f"emb.{name}"
            if meta["layout"] == "jagged":
                values = _decode_jagged(arrays, key, sizes)
            else:
                values = _decode_bucketed(arrays, key, side, sizes)
            table = CompactEmbedding(sizes, d, values=torch.from_numpy(values))
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, table)
    missing, unexpected = model.load_state_dict(dense, strict=False, assign=True)
    table_keys = {
        f"{n}.{k}" for side in SIDES for n in meta["tables"][side] for k in ("values", "sizes")
    }
    if unexpected or set(missing) - table_keys:
        raise ExportError(
            f"dense weights do not fit the {meta['model']['name']} backbone "
            f"(missing {sorted(set(missing) - table_keys)}, unexpected {sorted(unexpected)})"
        )
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftovers:
        raise ExportError(f"the export lacks tensors for {leftovers}")
    model.eval()
    user_ids = _decode_ids(arrays, "user", meta["ids"]["user"])
    item_ids = _decode_ids(arrays, "item", meta["ids"]["item"])
    return Exported(model, user_ids, item_ids, train, history, meta)
