"""Export a run's compact tables (bet.md §14.1, §14.3): one file of tensors plus JSON metadata.

The file format, and :func:`load` that reads it back without unpickling, are in
:mod:`embudget.deploy.formats` (re-exported here). The metadata's ``memory`` is the
:class:`~embudget.budget.usage.Usage` of the exported tables in the exported dtype and layout.

Interactions (``train.*``, ``history.*``) are written only with ``with_history=True``
(``--with-history``): serving needs them to exclude seen items, and graph backbones need them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from embudget import __version__
from embudget.budget.usage import Usage, params_used
from embudget.deploy.encode import (
    bucket_sizes,
    csr_arrays,
    encode_dense,
    encode_jagged,
    ids_arrays,
)
from embudget.deploy.formats import (
    BUCKET_STEP,
    EXPORT_DTYPES,
    FORMAT_NAME,
    FORMAT_VERSION,
    FORMATS,
    META_KEY,
    SIDES,
    Exported,
    checksum,
    load,
)
from embudget.errors import ExportError, RunDirError
from embudget.io import atomic_path
from embudget.models.base import Backbone
from embudget.models.registry import GRAPH_MODELS
from embudget.tables.compact import is_compact, load_weights, to_compact

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


def _table_names(model: nn.Module, tables: list[Any]) -> list[str]:
    by_id = {id(m): n for n, m in model.named_modules()}
    return [by_id[id(t)] for t in tables]


def _check_history(backbone: str, with_history: bool) -> None:
    if not with_history and backbone in GRAPH_MODELS:
        raise ExportError(
            f"{backbone} propagates over the training graph when loaded, so its export must "
            "carry the training interactions; export with --with-history (with_history=True)"
        )


def export_model(
    model: Backbone,
    out: str | Path,
    *,
    train: sp.csr_matrix,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    history: sp.csr_matrix | None = None,
    with_history: bool = False,
    fmt: str = "safetensors",
    dtype: str = "fp32",
    options: dict[str, Any] | None = None,
    bucket_budget: int | None = None,
    extra_meta: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``model``'s tables (masked or compact), dense weights, graph and id maps to ``out``.

    Args:
        train: the training interactions (the graph for LightGCN/NGCF); written only with
            ``with_history``.
        user_ids, item_ids: raw-id maps.
        history: interactions to exclude when serving (default: ``train``); written only with
            ``with_history``.
        with_history: write ``train`` and ``history`` (needed by graph backbones and by serving
            that excludes seen items); without it the file holds no interaction data.
        fmt: ``safetensors``, ``npz``, ``buckets`` or ``torchrec`` (a directory: one TorchRec
            table per size bucket, :mod:`embudget.deploy.torchrec`).
        dtype: ``fp32``, ``fp16`` or ``int8`` (row-wise, per-row scale and bias).
        options: the backbone options (``build_model`` keyword arguments) to rebuild it.
        bucket_budget: per-entity parameter budget that the bucketed sizes must respect
            (default: the current Σ sizes).

    Returns:
        The metadata written.

    Raises:
        ExportError: a graph backbone exported without ``with_history``, or bad arguments.
    """
    _check_history(model.name, with_history)
    if fmt == "torchrec":  # a directory of TorchRec files (embudget.deploy.torchrec)
        from embudget.deploy.torchrec import export_torchrec

        return export_torchrec(
            model,
            out,
            train=train,
            user_ids=user_ids,
            item_ids=item_ids,
            history=history,
            with_history=with_history,
            dtype=dtype,
            options=options,
            extra_meta=extra_meta,
            overwrite=overwrite,
        )
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
            params_used(sizes["user"], sizes["item"]) if bucket_budget is None else bucket_budget
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
                    for suffix, arr in encode_dense(block, dtype).items():
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
                for key, arr in encode_jagged(full[mask], s, offsets, dtype).items():
                    tensors[f"emb.{name}.{key}"] = arr
    table_prefixes = tuple(f"{n}." for side in SIDES for n in names[side])
    for k, v in model.state_dict().items():
        if k.startswith(table_prefixes):
            continue
        tensors[f"dense.{k}"] = v.detach().cpu().float().numpy().copy()
    id_kinds = {}
    for side, ids in (("user", user_ids), ("item", item_ids)):
        arrs, kind = ids_arrays(side, ids)
        tensors.update(arrs)
        id_kinds[side] = kind
    if with_history:
        tensors.update(csr_arrays("train", train))
        tensors.update(csr_arrays("history", train if history is None else history))
    usage = Usage.of_sizes(
        sizes["user"],
        sizes["item"],
        d_max=d,
        tables=len(tables["user"]),
        dtype=dtype,
        layout=layout,
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
        "history": bool(with_history),
        "buckets": meta_buckets or None,
        "memory": usage.to_dict(),
        "embudget_version": __version__,
        "serving": (
            "compact ego tables + dense weights + training graph; load() rebuilds the backbone "
            "and graph models propagate once at load (dense N x d_max activations in memory)"
            if with_history
            else "compact ego tables + dense weights; no interaction history, so serving "
            "cannot exclude items a user has seen"
        ),
        **(extra_meta or {}),
    }
    meta["sha256"] = checksum(tensors, meta)
    _write(out, tensors, meta, meta["container"])
    log.info("exported %s (%s, %s, %s) to %s", model.name, fmt, layout, dtype, out)
    return meta


def _write(out: Path, tensors: dict[str, np.ndarray], meta: dict[str, Any], container: str) -> None:
    blob = json.dumps(meta, sort_keys=True)
    with atomic_path(out) as tmp:
        if container == "npz":
            arrays = dict(tensors)
            arrays[META_KEY] = np.frombuffer(blob.encode("utf-8"), dtype=np.uint8)
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]
        else:  # serialised in memory: safetensors' writer would hide a full disk's OSError
            from safetensors.numpy import save

            data = save(
                {k: np.ascontiguousarray(v) for k, v in tensors.items()},
                metadata={"embudget": blob},
            )
            with open(tmp, "wb") as f:
                f.write(data)


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    fmt: str = "safetensors",
    dtype: str = "fp32",
    overwrite: bool = False,
    with_history: bool = False,
) -> dict[str, Any]:
    """Export the final model of a run directory (``embudget export RUN_DIR``).

    The dataset is re-read from the run's config (for the id maps and, with ``with_history``,
    the training graph and the interactions to exclude); its fingerprint must match the run's.
    """
    from embudget.io import load_npz, load_safetensors
    from embudget.pipeline.build import load_data, make_model, model_options, resolve_budget
    from embudget.pipeline.rundir import read_run_config
    from embudget.result import RunResult

    run = Path(run_dir)
    need = ["config.yaml", "results.json", "model.safetensors"]
    missing = [n for n in need if not (run / n).is_file()]
    if missing:
        raise RunDirError(
            f"{run} is not a finished run (missing {', '.join(missing)}); export a run directory "
            "written by `embudget search` or `embudget train`"
        )
    cfg = read_run_config(run / "config.yaml")
    _check_history(cfg.model.name, with_history)  # before the data is read
    result = RunResult.read(run / "results.json")
    dataset = load_data(cfg)
    if result.split_fingerprint != dataset.fingerprint():
        raise ExportError(
            f"the data of {cfg.data.name!r} no longer matches the run (split fingerprint differs); "
            "export with the data the run was trained on"
        )
    model = make_model(cfg, dataset, torch.device("cpu"), "export")
    if (run / "sizes.npz").is_file():
        s = load_npz(run / "sizes.npz")
        model.set_sizes(s["user_sizes"], s["item_sizes"])
    state = load_safetensors(
        run / "model.safetensors",
        fix="rerun the run into a new --out (or with --overwrite) to rewrite its model",
    )
    load_weights(model, state)
    if not is_compact(model):
        to_compact(model)
    model.eval()
    bucket_budget = None
    if result.budgeted:
        bucket_budget = resolve_budget(cfg, dataset).per_entity  # the run's per-entity budget
    history = (dataset.train + dataset.valid + dataset.test).tocsr()
    history.data[:] = 1.0
    return export_model(
        model,
        out,
        train=dataset.train,
        user_ids=dataset.user_ids,
        item_ids=dataset.item_ids,
        history=history,
        with_history=with_history,
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
            "budget": result.usage.to_dict() if result.kind == "search" else None,
            "source": {
                "run_dir": str(run),
                "kind": result.kind,
                "method": result.method,
                "config_hash": result.config_hash,
                "test": result.test.to_dict(),
            },
        },
    )
