"""Encoding a table's arrays for export (numpy only): bucketed sizes, fp16/int8 values with
per-row scale and bias, raw ids and CSR interaction arrays. The file layout is in
:mod:`embudget.deploy.formats`; :mod:`embudget.deploy.export` assembles the file."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from embudget.budget.core import check_budget, check_feasible, repair
from embudget.deploy.formats import BUCKET_STEP

__all__ = ["bucket_sizes", "csr_arrays", "encode_dense", "encode_jagged", "ids_arrays"]


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


def encode_jagged(
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


def encode_dense(table: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    if dtype == "fp32":
        return {"": table.astype(np.float32)}
    if dtype == "fp16":
        return {"": table.astype(np.float16)}
    scale, bias = _quantise(table.min(axis=1), table.max(axis=1))
    codes = np.clip(np.rint((table - bias[:, None]) / scale[:, None]), 0, 255).astype(np.uint8)
    return {"": codes, ".scale": scale, ".bias": bias}


def ids_arrays(name: str, ids: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
    a = np.asarray(ids)
    if a.dtype.kind in "iu":
        return {f"ids.{name}": a.astype(np.int64)}, "int"
    enc = [str(x).encode("utf-8") for x in a.tolist()]
    lengths = np.fromiter((len(e) for e in enc), dtype=np.int64, count=len(enc))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    blob = np.frombuffer(b"".join(enc), dtype=np.uint8).copy()
    return {f"ids.{name}.utf8": blob, f"ids.{name}.offsets": offsets}, "str"


def csr_arrays(name: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    m = sp.csr_matrix(m)
    m.sort_indices()
    return {
        f"{name}.indptr": m.indptr.astype(np.int64),
        f"{name}.indices": m.indices.astype(np.int32),
    }
