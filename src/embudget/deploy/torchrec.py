"""Export a run's budgeted tables as a TorchRec package, and load it into an
``EmbeddingBagCollection`` (bet.md §14.3).

A package is a directory (written atomically, nothing pickled)::

    DIR/
      configs.json        one EmbeddingBagConfig per table: name, embedding_dim, num_embeddings,
                          feature_names (one feature per table, named like the table), pooling
      state.safetensors   embedding_bags.<table>.weight, (num_embeddings, embedding_dim) fp32:
                          exactly the keys of EmbeddingBagCollection.state_dict()
      maps.npz            per entity type: <type>.bucket (int32, the bucket of each entity
                          index), <type>.row (int32, its row in that bucket's table),
                          <type>.size (int16, its embedding size), <type>.dims (int64, the
                          bucket dims); raw ids ids.<type> (or ids.<type>.utf8 + .offsets) only
                          with the history
      history.npz         only with the history: train.* and history.* CSR arrays
      dense.safetensors   the backbone's dense weights (NCF MLP, NGCF transforms), if any
      meta.json           format, model, tables (embudget table -> TorchRec table per bucket),
                          padding, memory, and the sha256 of every other file

Buckets. Rows are grouped by their embedding size rounded up to a multiple of
:data:`DIM_STEP` (4: FBGEMM's ``construct_split_state`` asserts ``embedding_dim % 4 == 0``,
which is why ``search.sampler.size_step=4`` makes sizes FBGEMM takes as they are). A row whose
size is not a multiple of 4 sits in the next bucket with zero columns after its prefix, so a
lookup is exact: a table of a run searched with ``size_step=4`` has no padding at all
(``meta.json``'s ``padding`` counts the zero values). Unlike ``--format buckets`` no size is
changed, so the scores are the run's.

A lookup of entity ``i`` of table ``t`` is the one-id bag ``row[i]`` of the feature of table
``t``'s bucket ``bucket[i]``; :meth:`TorchRecMaps.features` builds that ``KeyedJaggedTensor``
and :meth:`TorchRecMaps.assemble` turns the pooled output into zero-padded ``d_max``-wide rows,
equal to ``embudget.load(...)``'s tables. For LightGCN and NGCF these are the ego (layer-0)
tables: propagation over ``history.npz``'s training graph is left to the caller. TorchRec is
imported only by the loading functions; writing needs none.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from embudget import __version__
from embudget.deploy.encode import csr_arrays, ids_arrays
from embudget.deploy.formats import SIDES
from embudget.deploy.torchrec_package import (
    DIM_STEP,
    TORCHREC_FORMAT,
    TORCHREC_VERSION,
    TorchRecMaps,
    bucket_dims,
    read_package,
    sha256,
)
from embudget.errors import ExportError, from_os_error
from embudget.io import _umask, write_bytes

if TYPE_CHECKING:
    import torch
    from torchrec import EmbeddingBagCollection

    from embudget.models.base import Backbone

__all__ = [
    "DIM_STEP",
    "TORCHREC_FORMAT",
    "TorchRecMaps",
    "bucket_dims",
    "ebc_from_configs",
    "export_torchrec",
    "load_torchrec",
    "read_package",
]

log = logging.getLogger(__name__)


def _table_name(name: str, dim: int) -> str:
    # TorchRec keys tables in a ModuleDict: no dots in a name
    return f"{re.sub(r'[^A-Za-z0-9_]', '_', name)}_d{dim}"


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _st_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v) for k, v in tensors.items()})


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def export_torchrec(
    model: Backbone,
    out: str | Path,
    *,
    train: sp.csr_matrix,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    history: sp.csr_matrix | None = None,
    with_history: bool = False,
    dtype: str = "fp32",
    options: dict[str, Any] | None = None,
    extra_meta: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``model``'s ID tables as a TorchRec package directory ``out`` (module docstring).

    Raw ids and interactions are written only with ``with_history``. Returns the metadata.

    Raises:
        ExportError: ``out`` exists (without ``overwrite``), a dtype other than fp32, id maps of
            the wrong length.
        FileAccessError: the operating system refused a write.
    """
    if dtype != "fp32":
        raise ExportError("--format torchrec writes fp32 tables only; drop --dtype")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; choose another --out or pass --overwrite")
    n = {"user": model.n_users, "item": model.n_items}
    if len(user_ids) != n["user"] or len(item_ids) != n["item"]:
        raise ExportError("id maps must have one raw id per user and per item of the model")
    by_id = {id(m): name for name, m in model.named_modules()}
    tables = {"user": model.user_tables(), "item": model.item_tables()}
    configs: list[dict[str, Any]] = []
    state: dict[str, np.ndarray] = {}
    maps: dict[str, np.ndarray] = {}
    names: dict[str, dict[str, list[str]]] = {}
    zeros = 0
    for side in SIDES:
        sizes = tables[side][0].sizes.detach().cpu().numpy().astype(np.int64)
        width = bucket_dims(sizes)
        dims, bucket, counts = np.unique(width, return_inverse=True, return_counts=True)
        order = np.argsort(bucket, kind="stable")
        starts = np.cumsum(counts) - counts
        row = np.empty(sizes.size, dtype=np.int64)
        row[order] = np.arange(sizes.size) - np.repeat(starts, counts)
        maps.update(
            {
                f"{side}.bucket": bucket.astype(np.int32),
                f"{side}.row": row.astype(np.int32),
                f"{side}.size": sizes.astype(np.int16),
                f"{side}.dims": dims.astype(np.int64),
            }
        )
        names[side] = {}
        for t in tables[side]:
            name = by_id[id(t)]
            full = t.full().detach().cpu().float().numpy()
            wide = np.zeros((full.shape[0], int(dims.max())), dtype=np.float32)
            k = min(full.shape[1], wide.shape[1])
            wide[:, :k] = full[:, :k]  # columns past a row's size are zero in full()
            names[side][name] = []
            for b, dim in enumerate(dims.tolist()):
                tname = _table_name(name, dim)
                members = order[starts[b] : starts[b] + counts[b]]
                state[f"embedding_bags.{tname}.weight"] = wide[members, :dim]
                configs.append(
                    {
                        "name": tname,
                        "embedding_dim": dim,
                        "num_embeddings": int(counts[b]),
                        "feature_names": [tname],
                        "pooling": "SUM",
                    }
                )
                names[side][name].append(tname)
        zeros += int((width - sizes).sum()) * len(tables[side])
    files = {
        "configs.json": (json.dumps(configs, indent=2) + "\n").encode(),
        "state.safetensors": _st_bytes(state),
    }
    id_kinds: dict[str, str] | None = None
    if with_history:
        id_kinds = {}
        for side, ids in (("user", user_ids), ("item", item_ids)):
            arrs, id_kinds[side] = ids_arrays(side, ids)
            maps.update(arrs)
        hist = {**csr_arrays("train", train)}
        hist.update(csr_arrays("history", train if history is None else history))
        files["history.npz"] = _npz_bytes(hist)
    files["maps.npz"] = _npz_bytes(maps)
    prefixes = tuple(f"{n}." for side in SIDES for n in names[side])
    dense = {
        k: v.detach().cpu().float().numpy().copy()
        for k, v in model.state_dict().items()
        if not k.startswith(prefixes)
    }
    if dense:
        files["dense.safetensors"] = _st_bytes(dense)
    values = sum(int(np.prod(v.shape)) for v in state.values())
    meta: dict[str, Any] = {
        "format": TORCHREC_FORMAT,
        "format_version": TORCHREC_VERSION,
        "model": {"name": model.name, "d_max": model.d_max, "options": dict(options or {})},
        "n_users": n["user"],
        "n_items": n["item"],
        "tables": names,
        "dim_step": DIM_STEP,
        "padding": {
            "zero_values": zeros,
            "note": "each row's size is rounded up to a multiple of dim_step with zero columns "
            "(FBGEMM needs embedding_dim % 4 == 0); lookups are exact",
        },
        "memory": {"values": values, "bytes": 4 * values},
        "ids": id_kinds,
        "history": bool(with_history),
        "dtype": "fp32",
        "embudget_version": __version__,
        "sha256": {k: sha256(v) for k, v in sorted(files.items())},
        **(extra_meta or {}),
    }
    files["meta.json"] = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    _write_dir(out, files, overwrite)
    log.info("exported %s as a TorchRec package (%d tables) to %s", model.name, len(configs), out)
    return meta


def _write_dir(out: Path, files: dict[str, bytes], overwrite: bool) -> None:
    """Write ``files`` into a fresh sibling directory, then rename it to ``out``."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise from_os_error(e, out) from None
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        for name, data in files.items():
            write_bytes(tmp / name, data)
        if out.exists() or out.is_symlink():
            if not overwrite:
                raise ExportError(f"{out} already exists; choose another --out or pass --overwrite")
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as e:
        raise from_os_error(e, out) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        elif old.exists() or old.is_symlink():
            old.unlink(missing_ok=True)


def ebc_from_configs(
    configs: list[dict[str, Any]], device: str | torch.device = "cpu"
) -> EmbeddingBagCollection:
    """An ``EmbeddingBagCollection`` of the package's tables (``device="meta"``: unallocated,
    the way ``DistributedModelParallel`` wants it)."""
    import torch
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType

    tables = [
        EmbeddingBagConfig(
            name=c["name"],
            embedding_dim=int(c["embedding_dim"]),
            num_embeddings=int(c["num_embeddings"]),
            feature_names=list(c["feature_names"]),
            pooling=PoolingType[c["pooling"]],
        )
        for c in configs
    ]
    return EmbeddingBagCollection(tables=tables, device=torch.device(device))


def load_torchrec(path: str | Path) -> tuple[EmbeddingBagCollection, TorchRecMaps]:
    """Load a package into an ``EmbeddingBagCollection`` (CPU, eval mode) and its maps.

    ``maps.lookup(ebc, "user", idx)`` gives the rows ``embudget.load`` gives for those users.

    Raises:
        ExportError: see :func:`read_package`.
    """
    import torch

    state, maps = read_package(path)
    ebc = ebc_from_configs(maps.configs)
    ebc.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return ebc.eval(), maps
