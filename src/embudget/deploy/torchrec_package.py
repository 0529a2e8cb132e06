"""Reading a TorchRec package (layout in :mod:`embudget.deploy.torchrec`) without TorchRec,
and the lookups through an ``EmbeddingBagCollection``: ids to a ``KeyedJaggedTensor``, pooled
output back to zero-padded ``d_max``-wide rows. TorchRec is imported inside the methods.

A package is checked before use: the sha256 of every file (``meta.json`` lists them), the
state dict's keys, dtypes and shapes against ``configs.json``, and the maps (every table row
used exactly once, sizes within their bucket's dim); a damaged package is an
:class:`~embudget.errors.ExportError`, never unpickled."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from embudget.deploy.formats import SIDES
from embudget.errors import ExportError, UnknownIdError

if TYPE_CHECKING:
    import torch
    from torchrec import EmbeddingBagCollection, KeyedJaggedTensor, KeyedTensor

__all__ = [
    "DIM_STEP",
    "FILES",
    "TORCHREC_FORMAT",
    "TORCHREC_VERSION",
    "TorchRecMaps",
    "bucket_dims",
    "read_package",
    "sha256",
]

TORCHREC_FORMAT = "embudget-torchrec"
TORCHREC_VERSION = 1
#: FBGEMM's table-batched kernels need embedding_dim % 4 == 0 (fbgemm-gpu-cpu 1.8.0)
DIM_STEP = 4
FILES = ("configs.json", "state.safetensors", "maps.npz")


def bucket_dims(sizes: np.ndarray, step: int = DIM_STEP) -> np.ndarray:
    """The table dim of each row: its size rounded up to a multiple of ``step`` (at least
    ``step``, so a size-0 row is a zero row of the smallest table)."""
    s = np.asarray(sizes, dtype=np.int64)
    return np.maximum(-(-s // step) * step, step)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class TorchRecMaps:
    """Where each user and item lives in the package's ``EmbeddingBagCollection``.

    Attributes:
        meta: ``meta.json``.
        configs: ``configs.json`` (one dict per table, in the collection's order).
        bucket, row, size: per entity type, indexed by entity index (embudget's dense index).
        dims: per entity type, the table dim of each bucket.
        user_ids, item_ids: raw ids (``ids[index] == raw id``); None without the history.
        train, history: CSR interactions; None without the history.
        dense: the backbone's dense weights (empty for MF and LightGCN).
    """

    meta: dict[str, Any]
    configs: list[dict[str, Any]]
    bucket: dict[str, np.ndarray]
    row: dict[str, np.ndarray]
    size: dict[str, np.ndarray]
    dims: dict[str, np.ndarray]
    user_ids: np.ndarray | None
    item_ids: np.ndarray | None
    train: sp.csr_matrix | None
    history: sp.csr_matrix | None
    dense: dict[str, np.ndarray]

    @property
    def d_max(self) -> int:
        return int(self.meta["model"]["d_max"])

    def tables(self, side: str) -> dict[str, list[str]]:
        """embudget table name -> the TorchRec table (and feature) of each bucket."""
        return dict(self.meta["tables"][side])

    def index_of(self, side: str, raw_ids: Any) -> np.ndarray:
        """Entity indices of raw ids (needs a package written with the history)."""
        ids = self.user_ids if side == "user" else self.item_ids
        if ids is None:
            raise ExportError(
                "this package holds no raw ids (exported without --with-history); "
                "look entities up by their index"
            )
        pos = {v: i for i, v in enumerate(ids.tolist())}
        wanted = np.asarray(raw_ids).tolist()
        missing = [r for r in wanted if r not in pos]
        if missing:
            raise UnknownIdError(f"unknown raw {side} ids {missing[:5]}")
        return np.array([pos[r] for r in wanted], dtype=np.int64)

    def features(self, side: str, idx: Any) -> KeyedJaggedTensor:
        """The ``KeyedJaggedTensor`` that looks up entities ``idx`` of ``side`` (one sample
        each): every feature of the collection is a key; a sample has one id in the feature of
        its bucket of each of ``side``'s tables and none elsewhere."""
        import torch
        from torchrec import KeyedJaggedTensor

        ix = self._check_idx(side, idx)
        keys = [c["feature_names"][0] for c in self.configs]
        where = {k: i for i, k in enumerate(keys)}
        lengths = np.zeros((len(keys), ix.size), dtype=np.int64)
        values: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(keys)
        b, r = self.bucket[side][ix], self.row[side][ix].astype(np.int64)
        for tnames in self.tables(side).values():
            for j, tname in enumerate(tnames):
                hit = b == j
                lengths[where[tname], hit] = 1
                values[where[tname]] = r[hit]
        return KeyedJaggedTensor.from_lengths_sync(
            keys=keys,
            values=torch.from_numpy(np.concatenate(values)),
            lengths=torch.from_numpy(lengths.reshape(-1)),
        )

    def assemble(self, side: str, idx: Any, pooled: KeyedTensor) -> dict[str, torch.Tensor]:
        """Zero-padded ``(len(idx), d_max)`` rows per embudget table from the pooled output."""
        import torch

        ix = self._check_idx(side, idx)
        per_key = pooled.to_dict()
        b = torch.from_numpy(self.bucket[side][ix].astype(np.int64))
        out: dict[str, torch.Tensor] = {}
        for name, tnames in self.tables(side).items():
            rows = torch.zeros(ix.size, self.d_max, dtype=torch.float32)
            for j, tname in enumerate(tnames):
                hit = b == j
                k = min(int(self.dims[side][j]), self.d_max)  # columns past d_max are zero
                rows[hit] = torch.nn.functional.pad(
                    per_key[tname][hit, :k].float(), (0, self.d_max - k)
                )
            out[name] = rows
        return out

    def lookup(
        self, ebc: EmbeddingBagCollection | Any, side: str, idx: Any
    ) -> dict[str, torch.Tensor]:
        """``ebc``'s zero-padded ``d_max``-wide rows of entities ``idx`` of ``side``, per table;
        ``ebc`` may be the loaded collection or a sharded one (its output is awaited)."""
        import torch

        with torch.no_grad():
            pooled = ebc(self.features(side, idx))
            if hasattr(pooled, "wait"):
                pooled = pooled.wait()
        return self.assemble(side, idx, pooled)

    def _check_idx(self, side: str, idx: Any) -> np.ndarray:
        if side not in SIDES:
            raise ExportError(f"side must be one of {SIDES}, not {side!r}")
        ix = np.asarray(idx, dtype=np.int64).reshape(-1)
        n = self.bucket[side].size
        if ix.size and (ix.min() < 0 or ix.max() >= n):
            raise ExportError(f"{side} indices must lie in [0, {n})")
        return ix


# --------------------------------------------------------------------------------------------
# reading: checksums, then every array's dtype, shape and range, before anything is built
# --------------------------------------------------------------------------------------------
def read_package(path: str | Path) -> tuple[dict[str, np.ndarray], TorchRecMaps]:
    """The checked contents of a package: the state dict (numpy, keyed as
    ``EmbeddingBagCollection.state_dict()``) and the maps. Needs no TorchRec.

    Raises:
        ExportError: not a package, a file missing, a checksum mismatch, or inconsistent
            contents.
    """
    path = Path(path)
    if not path.is_dir():
        raise ExportError(
            f"{path} is not a directory written by `embudget export --format torchrec`"
        )
    try:
        meta = json.loads((path / "meta.json").read_bytes())
    except FileNotFoundError:
        raise ExportError(f"{path} has no meta.json; export it again") from None
    except (OSError, ValueError) as e:
        raise ExportError(f"{path}/meta.json cannot be read ({e}); export it again") from None
    try:
        return _read_checked(path, meta)
    except ExportError as e:
        raise ExportError(f"{path}: {e}") from e
    except Exception as e:  # anything the checks missed is still a damaged package
        raise ExportError(
            f"{path} is inconsistent ({type(e).__name__}: {e}); export it again"
        ) from e


def _read_checked(path: Path, meta: dict[str, Any]) -> tuple[dict[str, np.ndarray], TorchRecMaps]:
    if not isinstance(meta, dict) or meta.get("format") != TORCHREC_FORMAT:
        raise ExportError(f"meta.json is not an {TORCHREC_FORMAT} package")
    if meta.get("format_version") != TORCHREC_VERSION:
        raise ExportError(f"format_version {meta.get('format_version')!r} is not supported")
    sums = meta["sha256"]
    need = [*FILES, *(["history.npz"] if meta["history"] else [])]
    missing = [f for f in need if f not in sums or not (path / f).is_file()]
    if missing:
        raise ExportError(f"missing {', '.join(missing)}; export it again")
    data: dict[str, bytes] = {}
    for name in sorted(sums):
        data[name] = (path / name).read_bytes()
        if sha256(data[name]) != sums[name]:
            raise ExportError(f"{name} is corrupted (its sha256 does not match); export it again")
    from safetensors.numpy import load as st_load

    configs = json.loads(data["configs.json"])
    state = st_load(data["state.safetensors"])
    with np.load(io.BytesIO(data["maps.npz"]), allow_pickle=False) as z:
        maps = {k: z[k] for k in z.files}
    d_max = int(meta["model"]["d_max"])
    want = {f"embedding_bags.{c['name']}.weight": c for c in configs}
    if set(state) != set(want):
        raise ExportError("state.safetensors keys do not match configs.json")
    for key, c in want.items():
        w = state[key]
        if w.dtype != np.float32 or w.shape != (c["num_embeddings"], c["embedding_dim"]):
            raise ExportError(f"{key} is {w.dtype} {w.shape}, configs.json says otherwise")
        if c["embedding_dim"] % DIM_STEP or c["feature_names"] != [c["name"]]:
            raise ExportError(f"table {c['name']} has dim or features FBGEMM cannot take")
        if not np.isfinite(w).all():
            raise ExportError(f"{key} holds NaN or infinite values")
    by_name = {c["name"]: c for c in configs}
    per: dict[str, dict[str, np.ndarray]] = {"bucket": {}, "row": {}, "size": {}, "dims": {}}
    for side in SIDES:
        n = int(meta[f"n_{side}s"])
        b, r = maps[f"{side}.bucket"].astype(np.int64), maps[f"{side}.row"].astype(np.int64)
        s, dims = maps[f"{side}.size"].astype(np.int64), maps[f"{side}.dims"]
        if b.shape != (n,) or r.shape != (n,) or s.shape != (n,):
            raise ExportError(f"{side} maps must hold {n} entries")
        if n and (b.min() < 0 or b.max() >= dims.size or s.min() < 0 or s.max() > d_max):
            raise ExportError(f"{side} buckets or sizes out of range")
        if not np.array_equal(bucket_dims(s), dims[b]):
            raise ExportError(f"{side} sizes do not match their buckets' dims")
        for tnames in meta["tables"][side].values():
            if len(tnames) != dims.size:
                raise ExportError(f"{side} tables do not have one TorchRec table per bucket")
            for j, tname in enumerate(tnames):
                c = by_name[tname]
                rows = np.sort(r[b == j])
                if c["embedding_dim"] != dims[j] or not np.array_equal(
                    rows, np.arange(c["num_embeddings"])
                ):
                    raise ExportError(f"{side} rows do not cover table {tname} exactly once")
        per["bucket"][side], per["row"][side], per["size"][side] = b, r, s
        per["dims"][side] = dims.astype(np.int64)
    ids: dict[str, np.ndarray | None] = {"user": None, "item": None}
    train = history = None
    if meta["history"]:
        for side in SIDES:
            ids[side] = _decode_ids(maps, side, meta["ids"][side], int(meta[f"n_{side}s"]))
        with np.load(io.BytesIO(data["history.npz"]), allow_pickle=False) as z:
            h = {k: z[k] for k in z.files}
        shape = (int(meta["n_users"]), int(meta["n_items"]))
        train, history = _csr(h, "train", shape), _csr(h, "history", shape)
    dense: dict[str, np.ndarray] = {}
    if "dense.safetensors" in data:
        dense = dict(st_load(data["dense.safetensors"]))
    tmaps = TorchRecMaps(
        meta,
        configs,
        **per,
        user_ids=ids["user"],
        item_ids=ids["item"],
        train=train,
        history=history,
        dense=dense,
    )
    return state, tmaps


def _decode_ids(maps: dict[str, np.ndarray], side: str, kind: str, n: int) -> np.ndarray:
    if kind == "int":
        ids = maps[f"ids.{side}"]
    else:
        blob, off = maps[f"ids.{side}.utf8"].tobytes(), maps[f"ids.{side}.offsets"].tolist()
        ids = np.array([blob[a:b].decode("utf-8") for a, b in zip(off[:-1], off[1:], strict=True)])
    if ids.shape != (n,) or np.unique(ids).size != n:
        raise ExportError(f"raw {side} ids must be {n} unique values")
    return ids


def _csr(h: dict[str, np.ndarray], name: str, shape: tuple[int, int]) -> sp.csr_matrix:
    indptr, indices = h[f"{name}.indptr"], h[f"{name}.indices"]
    return sp.csr_matrix((np.ones(indices.size, dtype=np.float32), indices, indptr), shape=shape)
