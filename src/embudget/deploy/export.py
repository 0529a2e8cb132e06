"""Export a run's compact tables, and load them back without unpickling (bet.md §14.1, §14.3).

Formats (one file each, tensors plus JSON metadata):

- ``safetensors`` / ``npz``: the *jagged* layout. Per entity type ``sizes.{user,item}`` (int16)
  and ``offsets.{user,item}`` (int64, count + 1), per table ``emb.<table>.values`` (Σ d_n).
- ``buckets``: sizes rounded to multiples of 4 within the budget (FBGEMM/TorchRec tables need
  dimensions that are multiples of 4); per table and bucket ``emb.<table>.bucket<d>`` of shape
  (rows, d), and per entity type ``index.<type>.bucket`` / ``index.<type>.row`` (int32) with
  ``buckets.<type>.dims`` / ``.counts``: ready for one embedding config per bucket. Rounding
  changes the model (prefixes cut or zero-extended), so its scores differ from the run's.

Precision: ``fp32`` (default), ``fp16``, or ``int8`` row-wise (uint8 codes, per-row fp32
``.scale`` and ``.bias``: x ≈ code · scale + bias), counted by :mod:`embudget.budget.memory`.

What serving needs. Every export also holds the dense backbone weights (``dense.<name>``,
fp32: NGCF transforms, NCF MLP), the training graph (``train.indptr`` / ``train.indices``),
all known interactions for exclusion (``history.*``) and the raw-id maps (``ids.*``).
:func:`load` rebuilds the backbone around the *compact ego tables*: for MF and NCF that is the
whole model; LightGCN and NGCF propagate once over the stored training graph at load, so the
propagated user/item representations (dense, d_max or 4·d_max wide, N rows) exist only in
memory at serving time, never in the file. The compact part is exactly the ID tables.

Integrity: the metadata holds a sha256 over every tensor; a truncated or corrupted file raises
:class:`~embudget.errors.ExportError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from embudget import __version__
from embudget.budget.core import check_budget, check_feasible, repair, sampler_budget
from embudget.budget.memory import memory_report
from embudget.errors import EmbudgetError, ExportError, RunDirError
from embudget.io import atomic_path
from embudget.models import build_model
from embudget.models.base import Backbone
from embudget.tables.compact import CompactEmbedding, is_compact, load_weights, to_compact

log = logging.getLogger(__name__)

__all__ = [
    "EXPORT_DTYPES",
    "FORMATS",
    "Exported",
    "bucket_sizes",
    "export_model",
    "export_run",
    "load",
]

FORMATS = ("safetensors", "npz", "buckets")
EXPORT_DTYPES = ("fp32", "fp16", "int8")
FORMAT_NAME = "embudget-export"
FORMAT_VERSION = 1
BUCKET_STEP = 4
_META_KEY = "__metadata__"
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


# --------------------------------------------------------------------------------------------
# bucketing (bet.md §14.3)
# --------------------------------------------------------------------------------------------
def bucket_sizes(
    user_sizes: np.ndarray,
    item_sizes: np.ndarray,
    budget: int,
    d_max: int,
    step: int = BUCKET_STEP,
) -> tuple[np.ndarray, np.ndarray]:
    """Round sizes to multiples of ``step`` without exceeding ``budget`` (per-entity params).

    Sizes are rounded down, sizes below ``step`` raised to ``step`` (this adds parameters), then
    :func:`~embudget.budget.core.repair` removes any excess in units of ``step`` with entity-index
    priority.

    Raises:
        BudgetError: INFEASIBLE when budget < step · N.
    """
    us = np.asarray(user_sizes, dtype=np.int64)
    vs = np.asarray(item_sizes, dtype=np.int64)
    n = us.size + vs.size
    top = (d_max // step) * step
    check_feasible(budget, n, d_max, step)
    s = np.concatenate([us, vs])
    s = np.clip((s // step) * step, step, top)
    s = repair(s, budget, np.arange(n), step=step)
    out_u, out_v = s[: us.size], s[us.size :]
    check_budget(out_u, out_v, budget, d_max, step)
    return out_u, out_v


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def _quantise(rows_min: np.ndarray, rows_max: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = ((rows_max - rows_min) / 255.0).astype(np.float32)
    scale[scale == 0] = 1.0  # constant rows: every code is 0, value = bias
    return scale, rows_min.astype(np.float32)


def _encode_jagged(
    values: np.ndarray, sizes: np.ndarray, offsets: np.ndarray, dtype: str
) -> dict[str, np.ndarray]:
    if dtype == "fp32":
        return {"values": values.astype(np.float32)}
    if dtype == "fp16":
        return {"values": values.astype(np.float16)}
    starts = offsets[:-1]
    scale, bias = _quantise(
        np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts)
    )
    rs, rb = np.repeat(scale, sizes), np.repeat(bias, sizes)
    codes = np.clip(np.rint((values - rb) / rs), 0, 255).astype(np.uint8)
    return {"values": codes, "scale": scale, "bias": bias}


def _encode_dense(table: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    if dtype == "fp32":
        return {"": table.astype(np.float32)}
    if dtype == "fp16":
        return {"": table.astype(np.float16)}
    scale, bias = _quantise(table.min(axis=1), table.max(axis=1))
    codes = np.clip(np.rint((table - bias[:, None]) / scale[:, None]), 0, 255).astype(np.uint8)
    return {"": codes, ".scale": scale, ".bias": bias}


def _ids(name: str, ids: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
    a = np.asarray(ids)
    if a.dtype.kind in "iu":
        return {f"ids.{name}": a.astype(np.int64)}, "int"
    enc = [str(x).encode("utf-8") for x in a.tolist()]
    lengths = np.fromiter((len(e) for e in enc), dtype=np.int64, count=len(enc))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    blob = np.frombuffer(b"".join(enc), dtype=np.uint8).copy()
    return {f"ids.{name}.utf8": blob, f"ids.{name}.offsets": offsets}, "str"


def _csr_arrays(name: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    m = sp.csr_matrix(m)
    m.sort_indices()
    return {
        f"{name}.indptr": m.indptr.astype(np.int64),
        f"{name}.indices": m.indices.astype(np.int32),
    }


def _table_names(model: nn.Module, tables: list[Any]) -> list[str]:
    by_id = {id(m): n for n, m in model.named_modules()}
    return [by_id[id(t)] for t in tables]


def _checksum(tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def export_model(
    model: Backbone,
    out: str | Path,
    *,
    train: sp.csr_matrix,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    history: sp.csr_matrix | None = None,
    fmt: str = "safetensors",
    dtype: str = "fp32",
    options: dict[str, Any] | None = None,
    bucket_budget: int | None = None,
    extra_meta: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``model``'s tables (masked or compact), dense weights, graph and id maps to ``out``.

    Args:
        train: the training interactions (the graph for LightGCN/NGCF).
        user_ids, item_ids: raw-id maps.
        history: interactions to exclude when serving (default: ``train``).
        fmt: ``safetensors``, ``npz`` or ``buckets``.
        dtype: ``fp32``, ``fp16`` or ``int8`` (row-wise, per-row scale and bias).
        options: the backbone options (``build_model`` keyword arguments) to rebuild it.
        bucket_budget: per-entity parameter budget that the bucketed sizes must respect
            (default: the current Σ sizes).

    Returns:
        The metadata written.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if dtype not in EXPORT_DTYPES:
        raise ExportError(f"unknown export dtype {dtype!r}; use one of {', '.join(EXPORT_DTYPES)}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; choose another --out or pass --overwrite")
    n_users, n_items, d = model.n_users, model.n_items, model.d_max
    if len(user_ids) != n_users or len(item_ids) != n_items:
        raise ExportError("id maps must have one raw id per user and per item of the model")
    if tuple(train.shape) != (n_users, n_items):
        raise ExportError(f"train has shape {train.shape}, expected ({n_users}, {n_items})")
    tables = {"user": model.user_tables(), "item": model.item_tables()}
    names = {side: _table_names(model, ts) for side, ts in tables.items()}
    sizes = {
        side: ts[0].sizes.detach().cpu().numpy().astype(np.int64) for side, ts in tables.items()
    }
    for side, ts in tables.items():
        if any(not torch.equal(t.sizes, ts[0].sizes) for t in ts):
            raise ExportError(f"the {side} tables of one model must share their sizes")
    padded = {
        side: [t.full().detach().cpu().float().numpy() for t in ts] for side, ts in tables.items()
    }
    tensors: dict[str, np.ndarray] = {}
    layout = "bucketed" if fmt == "buckets" else "jagged"
    meta_buckets: dict[str, Any] = {}
    if layout == "bucketed":
        budget = (
            int(sizes["user"].sum() + sizes["item"].sum())
            if bucket_budget is None
            else bucket_budget
        )
        bu, bv = bucket_sizes(sizes["user"], sizes["item"], budget, d)
        meta_buckets = {"step": BUCKET_STEP, "budget_params_per_entity": int(budget)}
        for side, new in (("user", bu), ("item", bv)):
            dims, inverse, counts = np.unique(new, return_inverse=True, return_counts=True)
            # row of each entity inside its bucket: rank among entities of the same bucket
            order = np.argsort(inverse, kind="stable")
            row = np.empty(new.size, dtype=np.int64)
            row[order] = np.arange(new.size) - np.repeat(np.cumsum(counts) - counts, counts)
            tensors[f"buckets.{side}.dims"] = dims.astype(np.int64)
            tensors[f"buckets.{side}.counts"] = counts.astype(np.int64)
            tensors[f"index.{side}.bucket"] = inverse.astype(np.int32)
            tensors[f"index.{side}.row"] = row.astype(np.int32)
            for name, full in zip(names[side], padded[side], strict=True):
                for b, dim in enumerate(dims.tolist()):  # one table per bucket (≤ d_max / 4)
                    rows = order[np.cumsum(counts)[b] - counts[b] : np.cumsum(counts)[b]]
                    block = full[rows, :dim]
                    for suffix, arr in _encode_dense(block, dtype).items():
                        tensors[f"emb.{name}.bucket{dim}{suffix}"] = arr
            sizes[side] = new
    for side in SIDES:
        s = sizes[side]
        offsets = np.concatenate([[0], np.cumsum(s)]).astype(np.int64)
        tensors[f"sizes.{side}"] = s.astype(np.int16)
        if layout == "jagged":
            tensors[f"offsets.{side}"] = offsets
            mask = np.arange(d)[None, :] < s[:, None]
            for name, full in zip(names[side], padded[side], strict=True):
                for key, arr in _encode_jagged(full[mask], s, offsets, dtype).items():
                    tensors[f"emb.{name}.{key}"] = arr
    table_prefixes = tuple(f"{n}." for side in SIDES for n in names[side])
    for k, v in model.state_dict().items():
        if k.startswith(table_prefixes):
            continue
        tensors[f"dense.{k}"] = v.detach().cpu().float().numpy().copy()
    id_kinds = {}
    for side, ids in (("user", user_ids), ("item", item_ids)):
        arrs, kind = _ids(side, ids)
        tensors.update(arrs)
        id_kinds[side] = kind
    tensors.update(_csr_arrays("train", train))
    tensors.update(_csr_arrays("history", train if history is None else history))
    mem = memory_report(
        (sizes["user"], sizes["item"]),
        dtype=dtype,
        layout=layout,
        d_max=d,
        tables=len(tables["user"]),
        dense_params=model.dense_params(),
    )
    meta: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "container": "npz" if fmt == "npz" else "safetensors",
        "layout": layout,
        "dtype": dtype,
        "model": {"name": model.name, "d_max": d, "options": dict(options or {})},
        "n_users": n_users,
        "n_items": n_items,
        "tables": names,
        "ids": id_kinds,
        "buckets": meta_buckets or None,
        "memory": mem,
        "embudget_version": __version__,
        "serving": (
            "compact ego tables + dense weights + training graph; load() rebuilds the backbone "
            "and graph models propagate once at load (dense N x d_max activations in memory)"
        ),
        **(extra_meta or {}),
    }
    meta["sha256"] = _checksum(tensors)
    _write(out, tensors, meta, meta["container"])
    log.info("exported %s (%s, %s, %s) to %s", model.name, fmt, layout, dtype, out)
    return meta


def _write(out: Path, tensors: dict[str, np.ndarray], meta: dict[str, Any], container: str) -> None:
    blob = json.dumps(meta, sort_keys=True)
    with atomic_path(out) as tmp:
        if container == "npz":
            arrays = dict(tensors)
            arrays[_META_KEY] = np.frombuffer(blob.encode("utf-8"), dtype=np.uint8)
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]
        else:
            from safetensors.numpy import save_file

            save_file(
                {k: np.ascontiguousarray(v) for k, v in tensors.items()},
                str(tmp),
                metadata={"embudget": blob},
            )


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    fmt: str = "safetensors",
    dtype: str = "fp32",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export the final model of a run directory (``embudget export RUN_DIR``).

    The dataset is re-read from the run's config (for the training graph and the interactions
    to exclude); its fingerprint must match the run's.
    """
    from safetensors.torch import load_file

    from embudget.config import load_config
    from embudget.io import load_npz, read_json
    from embudget.pipeline.experiment import load_data, make_model, model_options, tables_per_entity

    run = Path(run_dir)
    need = ["config.yaml", "results.json", "model.safetensors"]
    missing = [n for n in need if not (run / n).is_file()]
    if missing:
        raise RunDirError(
            f"{run} is not a finished run (missing {', '.join(missing)}); export a run directory "
            "written by `embudget search` or `embudget train`"
        )
    cfg = load_config([run / "config.yaml"])
    results = read_json(run / "results.json")
    dataset = load_data(cfg)
    fp = results.get("split_fingerprint")
    if fp is not None and fp != dataset.fingerprint():
        raise ExportError(
            f"the data of {cfg.data.name!r} no longer matches the run (split fingerprint differs); "
            "export with the data the run was trained on"
        )
    model = make_model(cfg, dataset, torch.device("cpu"), "export")
    if (run / "sizes.npz").is_file():
        s = load_npz(run / "sizes.npz")
        model.set_sizes(s["user_sizes"], s["item_sizes"])
    try:
        state = load_file(str(run / "model.safetensors"), device="cpu")
    except Exception as e:  # safetensors raises its own error types
        raise ExportError(f"{run / 'model.safetensors'} cannot be read ({e}); re-run") from e
    load_weights(model, state)
    if not is_compact(model):
        to_compact(model)
    model.eval()
    budget = results.get("budget") or {}
    tables = tables_per_entity(cfg)
    bucket_budget = None
    if budget.get("params_budget") is not None and results.get("method") != "full":
        bucket_budget = sampler_budget(int(budget["params_budget"]), tables)
    history = (dataset.train + dataset.valid + dataset.test).tocsr()
    history.data[:] = 1.0
    return export_model(
        model,
        out,
        train=dataset.train,
        user_ids=dataset.user_ids,
        item_ids=dataset.item_ids,
        history=history,
        fmt=fmt,
        dtype=dtype,
        options=model_options(cfg.model),
        bucket_budget=bucket_budget,
        overwrite=overwrite,
        extra_meta={
            "dataset": {
                "name": dataset.name,
                "protocol": dataset.protocol,
                "split_seed": dataset.split_seed,
                "split_fingerprint": dataset.fingerprint(),
            },
            "budget": budget or None,
            "source": {
                "run_dir": str(run),
                "method": results.get("method"),
                "config_hash": results.get("config_hash"),
                "test": results.get("test"),
            },
        },
    )


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
            if _META_KEY not in arrays:
                raise ExportError(f"{path} is an npz file without embudget metadata")
            meta = json.loads(arrays.pop(_META_KEY).tobytes().decode("utf-8"))
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
    if _checksum(arrays) != meta.get("sha256"):
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
