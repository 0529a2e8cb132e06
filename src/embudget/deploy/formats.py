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
fp32: NGCF transforms, NCF MLP), the training graph (``train.indptr`` / ``train.indices``),
all known interactions for exclusion (``history.*``) and the raw-id maps (``ids.*``).
:func:`load` rebuilds the backbone around the *compact ego tables*: for MF and NCF that is the
whole model; LightGCN and NGCF propagate once over the stored training graph at load, so the
propagated user/item representations (dense, d_max or 4·d_max wide, N rows) exist only in
memory at serving time, never in the file. The compact part is exactly the ID tables.

Integrity: the metadata holds a sha256 over every tensor; a truncated or corrupted file raises
:class:`~embudget.errors.ExportError`.

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
FORMAT_VERSION = 1
BUCKET_STEP = 4
META_KEY = "__metadata__"
SIDES = ("user", "item")


@dataclass
class Exported:
    """A loaded export: a backbone with compact tables (eval mode, CPU), ids and interactions.

    Attributes:
        model: the backbone; ``model.scorer()`` gives full-ranking scores.
        user_ids, item_ids: raw ids, ``user_ids[index] == raw id``.
        train: training interactions (the graph of LightGCN/NGCF), CSR (users × items).
        history: every known interaction (train, valid and test), for exclusion in serving.
        meta: the JSON metadata.
    """

    model: Backbone
    user_ids: np.ndarray
    item_ids: np.ndarray
    train: sp.csr_matrix
    history: sp.csr_matrix
    meta: dict[str, Any]


def checksum(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if not path.is_file():
        raise ExportError(f"{path} does not exist; give the file written by `embudget export`")
    with open(path, "rb") as f:
        head = f.read(4)
    try:
        if head == b"PK\x03\x04":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            if META_KEY not in arrays:
                raise ExportError(f"{path} is an npz file without embudget metadata")
            meta = json.loads(arrays.pop(META_KEY).tobytes().decode("utf-8"))
        else:
            from safetensors import safe_open

            with safe_open(str(path), framework="np") as sf:
                header = sf.metadata() or {}
                if "embudget" not in header:
                    raise ExportError(f"{path} is a safetensors file without embudget metadata")
                meta = json.loads(header["embudget"])
                arrays = {k: sf.get_tensor(k) for k in sf.keys()}  # noqa: SIM118
    except ExportError:
        raise
    except Exception as e:  # zipfile, safetensors, JSON and OS errors alike
        raise ExportError(
            f"{path} is truncated or corrupted and cannot be read ({type(e).__name__}: {e}); "
            "export it again"
        ) from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ExportError(f"{path} is not an embudget export (format {meta.get('format')!r})")
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise ExportError(
            f"{path} has export format version {meta['format_version']}; this embudget reads "
            f"up to {FORMAT_VERSION}: upgrade embudget"
        )
    if checksum(arrays) != meta.get("sha256"):
        raise ExportError(f"{path} is corrupted: its checksum does not match; export it again")
    return arrays, meta


def _decode_ids(arrays: dict[str, np.ndarray], side: str, kind: str) -> np.ndarray:
    if kind == "int":
        return arrays[f"ids.{side}"]
    blob = arrays[f"ids.{side}.utf8"].tobytes()
    off = arrays[f"ids.{side}.offsets"]
    return np.array([blob[a:b].decode("utf-8") for a, b in zip(off[:-1], off[1:], strict=True)])


def _csr(arrays: dict[str, np.ndarray], name: str, shape: tuple[int, int]) -> sp.csr_matrix:
    indptr, indices = arrays[f"{name}.indptr"], arrays[f"{name}.indices"]
    if indptr.size != shape[0] + 1 or indptr[-1] != indices.size:
        raise ExportError(f"{name} interactions are inconsistent (indptr/indices lengths)")
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
    arrays: dict[str, np.ndarray], key: str, side: str, sizes: np.ndarray, d_max: int
) -> np.ndarray:
    """Jagged values of one table rebuilt from its bucket tables."""
    dims = arrays[f"buckets.{side}.dims"]
    bucket, row = arrays[f"index.{side}.bucket"], arrays[f"index.{side}.row"]
    if not np.array_equal(dims[bucket], sizes):
        raise ExportError(f"bucket index of {side}s does not match their sizes")
    full = np.zeros((sizes.size, d_max), dtype=np.float32)
    for b, dim in enumerate(dims.tolist()):  # one pass per bucket table
        name = f"{key}.bucket{dim}"
        block = arrays[name]
        if block.dtype == np.uint8:
            block = block * arrays[f"{name}.scale"][:, None] + arrays[f"{name}.bias"][:, None]
        members = np.flatnonzero(bucket == b)
        full[members, :dim] = block[row[members]]
    return full[np.arange(d_max)[None, :] < sizes[:, None]]


def load(path: str | Path) -> Exported:
    """Load an export written by :func:`export_model` / ``embudget export`` (never unpickles).

    Raises:
        ExportError: the file is missing, truncated, corrupted or inconsistent.
    """
    path = Path(path)
    arrays, meta = _read(path)
    try:
        return _assemble(arrays, meta)
    except ExportError:
        raise
    except (KeyError, ValueError, RuntimeError, EmbudgetError) as e:
        raise ExportError(
            f"{path} is inconsistent and cannot be loaded ({e}); export it again"
        ) from e


def _assemble(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Exported:
    nu, ni = int(meta["n_users"]), int(meta["n_items"])
    d = int(meta["model"]["d_max"])
    train = _csr(arrays, "train", (nu, ni))
    history = _csr(arrays, "history", (nu, ni))
    # Build on the meta device: no dense (num, d_max) tables are ever allocated.
    with torch.device("meta"):
        model = build_model(meta["model"]["name"], nu, ni, train, d, **meta["model"]["options"])
    dense = {
        k[len("dense.") :]: torch.from_numpy(v.copy())
        for k, v in arrays.items()
        if k.startswith("dense.")
    }
    for side in SIDES:
        sizes = arrays[f"sizes.{side}"].astype(np.int64)
        if sizes.size != (nu if side == "user" else ni) or sizes.min() < 1 or sizes.max() > d:
            raise ExportError(f"{side} sizes are out of range or of the wrong length")
        if meta["layout"] == "jagged":
            off = arrays[f"offsets.{side}"]
            if off.size != sizes.size + 1 or not np.array_equal(np.diff(off), sizes):
                raise ExportError(f"{side} offsets do not match the sizes")
        for name in meta["tables"][side]:
            key = f"emb.{name}"
            if meta["layout"] == "jagged":
                values = _decode_jagged(arrays, key, sizes)
            else:
                values = _decode_bucketed(arrays, key, side, sizes, d)
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
    if user_ids.size != nu or item_ids.size != ni:
        raise ExportError("raw-id maps have the wrong length")
    return Exported(model, user_ids, item_ids, train, history, meta)
