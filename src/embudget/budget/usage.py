"""The one count of what a size assignment uses, and the one resolution of a budget (bet.md §2.4).

- :func:`params_used` is THE definition of the embedding parameters a size assignment uses:
  ``tables · Σ_n d_n`` over users and items (the tables of one entity type share its sizes; NCF
  has two, bet.md §8.5). Every other count (actions, tables, backbones, results) calls it.
- :class:`ResolvedBudget` turns a budget given as sparsity, kept fraction, parameter count or
  bytes into the exact parameter budget B over all ID tables, and the per-entity budget
  ⌊B / tables⌋ that the sampler and the SU/SR baselines work with.
- :class:`Usage` is what a finished assignment uses against it: parameters and bytes (values,
  index, row metadata) for one storage dtype and layout, plus the dense backbone weights.

This module needs numpy only (no torch), so it can be used wherever results are read.

Example::

    >>> b = ResolvedBudget.resolve(sparsity=0.5, n_users=2, n_items=1, d_max=8)
    >>> (b.params, b.per_entity)
    (12, 12)
    >>> u = Usage.of_sizes(np.array([2, 3]), np.array([4]), budget=b)
    >>> (u.params, u.bytes, u.params_slack)
    (9, 76, 3)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from embudget.budget.core import Budget, check_feasible, sampler_budget
from embudget.budget.storage import DENSE_VALUE_BYTES, check_storage, params_for_bytes, table_bytes
from embudget.errors import BudgetError, BudgetErrorType

__all__ = ["BudgetSettings", "ResolvedBudget", "Usage", "params_of_histograms", "params_used"]

_INVALID = BudgetErrorType.INVALID


def _tables(tables: object) -> int:
    if isinstance(tables, bool) or not isinstance(tables, int | np.integer) or int(tables) < 1:
        raise BudgetError(f"tables must be a positive integer, got {tables!r}", _INVALID)
    return int(tables)


def _sizes(name: str, sizes: object) -> np.ndarray:
    a = np.asarray(sizes)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise BudgetError(f"{name} must be a 1-D integer array, got {a.dtype} {a.shape}", _INVALID)
    return a.astype(np.int64, copy=False)


def params_used(user_sizes: object, item_sizes: object, tables: int = 1) -> int:
    """Embedding parameters of an assignment: ``tables · Σ d_n`` over users and items.

    Example::

        >>> params_used(np.array([2, 3]), np.array([4]), tables=2)
        18
    """
    us, vs = _sizes("user sizes", user_sizes), _sizes("item sizes", item_sizes)
    return _tables(tables) * (int(us.sum()) + int(vs.sum()))


def params_of_histograms(hist_u: object, hist_v: object, tables: int = 1) -> int:
    """:func:`params_used` of the sizes counted by histograms (``hist[d-1]`` = #entities of
    size d): ``tables · Σ_d d · (hist_u[d-1] + hist_v[d-1])``, in O(d_max)."""
    total = 0
    for h in (np.asarray(hist_u, np.int64), np.asarray(hist_v, np.int64)):
        total += int((h * np.arange(1, h.size + 1, dtype=np.int64)).sum())
    return _tables(tables) * total


class BudgetSettings(Protocol):
    """What :meth:`ResolvedBudget.from_config` reads (e.g. ``embudget.config.BudgetConfig``)."""

    @property
    def sparsity(self) -> float | None: ...
    @property
    def kept_fraction(self) -> float | None: ...
    @property
    def params(self) -> int | None: ...
    @property
    def bytes(self) -> int | None: ...
    @property
    def dtype(self) -> str: ...
    @property
    def layout(self) -> str: ...


@dataclass(frozen=True)
class ResolvedBudget:
    """A budget resolved against a dataset and a backbone.

    Attributes:
        params: B, the parameter budget over all ID tables.
        per_entity: ⌊B / tables⌋, the budget of one size per entity (sampler, SU/SR, repair).
        tables: tables sharing each entity's size (NCF: 2).
        d_max, n_users, n_items: the full table's shape.
        bytes: the byte budget when one was given (B was derived from it), else None.
        dtype, layout: the storage the bytes are counted for.
        size_step: the size granularity (bet.md §14.3).
    """

    params: int
    per_entity: int
    tables: int
    d_max: int
    n_users: int
    n_items: int
    bytes: int | None = None
    dtype: str = "fp32"
    layout: str = "jagged"
    size_step: int = 1

    @property
    def n_entities(self) -> int:
        return self.n_users + self.n_items

    @classmethod
    def resolve(
        cls,
        *,
        sparsity: float | None = None,
        kept_fraction: float | None = None,
        params: int | None = None,
        bytes: int | None = None,  # named like the config key
        dtype: str = "fp32",
        layout: str = "jagged",
        n_users: int,
        n_items: int,
        d_max: int,
        tables: int = 1,
        size_step: int = 1,
    ) -> ResolvedBudget:
        """B from exactly one of sparsity, kept fraction, params or bytes.

        A parameter budget resolves as ``Budget(...).resolve(tables · N, d_max)``; a byte budget
        as :func:`~embudget.budget.storage.params_for_bytes` (the size-independent overhead of
        the storage is subtracted first, bet.md §14.2).
        """
        check_storage(dtype, layout)
        t = _tables(tables)
        if bytes is not None:
            others = [
                k
                for k, v in (("sparsity", sparsity), ("kept_fraction", kept_fraction))
                if v is not None
            ] + (["params"] if params is not None else [])
            if others:
                raise BudgetError(
                    f"give either bytes or one of sparsity, kept_fraction, params (got bytes and "
                    f"{', '.join(others)})",
                    _INVALID,
                )
            total = params_for_bytes(bytes, n_users, n_items, d_max, dtype, layout, t, size_step)
        else:
            budget = Budget(sparsity=sparsity, kept_fraction=kept_fraction, params=params)
            total = budget.resolve(t * (n_users + n_items), d_max)
        return cls(
            params=int(total),
            per_entity=sampler_budget(total, t),
            tables=t,
            d_max=int(d_max),
            n_users=int(n_users),
            n_items=int(n_items),
            bytes=None if bytes is None else int(bytes),
            dtype=dtype,
            layout=layout,
            size_step=int(size_step),
        )

    @classmethod
    def from_config(
        cls,
        budget_cfg: BudgetSettings,
        n_users: int,
        n_items: int,
        d_max: int,
        tables: int = 1,
        size_step: int = 1,
    ) -> ResolvedBudget:
        """:meth:`resolve` with the budget settings of a config (``cfg.budget``)."""
        return cls.resolve(
            sparsity=budget_cfg.sparsity,
            kept_fraction=budget_cfg.kept_fraction,
            params=budget_cfg.params,
            bytes=budget_cfg.bytes,
            dtype=budget_cfg.dtype,
            layout=budget_cfg.layout,
            n_users=n_users,
            n_items=n_items,
            d_max=d_max,
            tables=tables,
            size_step=size_step,
        )

    def check_feasible(self) -> None:
        """Raise ``BudgetError(INFEASIBLE)`` unless every entity can get ``size_step``."""
        check_feasible(self.per_entity, self.n_entities, self.d_max, self.size_step)

    def unbudgeted(self) -> ResolvedBudget:
        """The whole table as the budget (the unbudgeted full model reports against it)."""
        per_entity = self.d_max * self.n_entities
        return replace(self, params=self.tables * per_entity, per_entity=per_entity)


@dataclass(frozen=True)
class Usage:
    """Parameters and bytes that a size assignment's compact ID tables use.

    Attributes:
        params: :func:`params_used`, tables · Σ d_n.
        params_full: tables · d_max · N (the full table).
        bytes: embedding bytes, ``values_bytes + index_bytes + row_meta_bytes``.
        values_bytes, index_bytes, row_meta_bytes: the byte breakdown
            (:func:`~embudget.budget.storage.table_bytes`).
        dense_params: dense backbone weights (never in the budget), stored at fp32.
        params_budget, bytes_budget: the budget it is held against, when known.
    """

    params: int
    params_full: int
    bytes: int
    values_bytes: int
    index_bytes: int
    row_meta_bytes: int
    dense_params: int
    dtype: str
    layout: str
    tables: int
    d_max: int
    n_users: int
    n_items: int
    params_budget: int | None = None
    bytes_budget: int | None = None

    @classmethod
    def of_sizes(
        cls,
        user_sizes: object,
        item_sizes: object,
        *,
        d_max: int | None = None,
        tables: int | None = None,
        dtype: str | None = None,
        layout: str | None = None,
        dense_params: int = 0,
        budget: ResolvedBudget | None = None,
    ) -> Usage:
        """Usage of per-entity sizes (entity-index order not needed).

        ``d_max``, ``tables``, ``dtype`` and ``layout`` default to the budget's (without a
        budget: tables 1, fp32, jagged; d_max is then required).
        """
        us, vs = _sizes("user sizes", user_sizes), _sizes("item sizes", item_sizes)
        if budget is not None:
            d_max = budget.d_max if d_max is None else d_max
            tables = budget.tables if tables is None else tables
            dtype = budget.dtype if dtype is None else dtype
            layout = budget.layout if layout is None else layout
            given = (int(d_max), _tables(tables), us.size, vs.size)
            want = (budget.d_max, budget.tables, budget.n_users, budget.n_items)
            if given != want:
                raise BudgetError(
                    f"sizes (d_max, tables, users, items) = {given} do not fit the budget's "
                    f"{want}; use the budget resolved for this dataset and backbone",
                    _INVALID,
                )
        if d_max is None:
            raise BudgetError("give d_max (or a budget) with the sizes", _INVALID)
        t = _tables(1 if tables is None else tables)
        dtype, layout = dtype or "fp32", layout or "jagged"
        tb = table_bytes(us, vs, dtype, layout, t)
        return cls(
            params=params_used(us, vs, t),
            params_full=t * int(d_max) * (us.size + vs.size),
            bytes=tb["embedding"],
            values_bytes=tb["values"],
            index_bytes=tb["index"],
            row_meta_bytes=tb["row_meta"],
            dense_params=int(dense_params),
            dtype=dtype,
            layout=layout,
            tables=t,
            d_max=int(d_max),
            n_users=int(us.size),
            n_items=int(vs.size),
            params_budget=None if budget is None else budget.params,
            bytes_budget=None if budget is None else budget.bytes,
        )

    # -- derived ------------------------------------------------------------------------------
    @property
    def fraction_of_full(self) -> float:
        return self.params / self.params_full if self.params_full else 0.0

    @property
    def params_slack(self) -> int | None:
        """Budget minus params used (None without a budget)."""
        return None if self.params_budget is None else self.params_budget - self.params

    @property
    def bytes_slack(self) -> int | None:
        """Byte budget minus embedding bytes (None without a byte budget)."""
        return None if self.bytes_budget is None else self.bytes_budget - self.bytes

    @property
    def dense_backbone_bytes(self) -> int:
        return DENSE_VALUE_BYTES * self.dense_params

    @property
    def total_bytes(self) -> int:
        """Embedding bytes plus the dense backbone weights."""
        return self.bytes + self.dense_backbone_bytes

    @property
    def dense_table_bytes(self) -> int:
        """Bytes of the full fp32 d_max-wide tables."""
        return DENSE_VALUE_BYTES * self.params_full

    # -- the result file ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: the budget block of a run's results and an export's ``memory``."""
        dense_table = self.dense_table_bytes
        return {
            "params_budget": self.params_budget,
            "params_used": self.params,
            "params_full": self.params_full,
            "fraction_of_full": self.fraction_of_full,
            "params_slack": self.params_slack,
            "bytes_budget": self.bytes_budget,
            "bytes_used": self.bytes,
            "bytes_slack": self.bytes_slack,
            "dense_params": self.dense_params,
            "bytes": {
                "values": self.values_bytes,
                "index": self.index_bytes,
                "row_meta": self.row_meta_bytes,
                "embedding": self.bytes,
                "dense_backbone": self.dense_backbone_bytes,
                "total": self.total_bytes,
                "dense_table": dense_table,
                "fraction_of_dense_table": self.bytes / dense_table if dense_table else 0.0,
                "index_fraction_of_dense_table": (
                    (self.index_bytes + self.row_meta_bytes) / dense_table if dense_table else 0.0
                ),
            },
            "dtype": self.dtype,
            "layout": self.layout,
            "tables": self.tables,
            "d_max": self.d_max,
            "n_users": self.n_users,
            "n_items": self.n_items,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        """Inverse of :meth:`to_dict` (derived keys are recomputed; extra keys ignored)."""
        try:
            b = data["bytes"]
            out = cls(
                params=int(data["params_used"]),
                params_full=int(data["params_full"]),
                bytes=int(b["embedding"]),
                values_bytes=int(b["values"]),
                index_bytes=int(b["index"]),
                row_meta_bytes=int(b["row_meta"]),
                dense_params=int(data["dense_params"]),
                dtype=str(data["dtype"]),
                layout=str(data["layout"]),
                tables=int(data["tables"]),
                d_max=int(data["d_max"]),
                n_users=int(data["n_users"]),
                n_items=int(data["n_items"]),
                params_budget=_opt_int(data.get("params_budget")),
                bytes_budget=_opt_int(data.get("bytes_budget")),
            )
        except (KeyError, TypeError) as e:
            raise BudgetError(f"not a usage record: lacks or mistypes {e}", _INVALID) from None
        if out.bytes != out.values_bytes + out.index_bytes + out.row_meta_bytes:
            raise BudgetError("usage record: embedding bytes differ from their parts", _INVALID)
        return out


def _opt_int(x: Any) -> int | None:
    return None if x is None else int(x)
