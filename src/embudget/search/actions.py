"""Actions in canonical form and THE assignment of sizes to entities (bet.md §3.3).

Sizes go to entities by training-frequency rank: the k-th largest user size to the k-th ranked
user (frequency descending, index ascending), and likewise for items. Under this assignment an
action is fully determined by two size histograms, which is how embudget stores it.
:class:`RankAssignment` is the single place that turns an action into per-entity sizes; the
probe, the predictor, the retraining and the export all go through it (bet.md §12, defect 2).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from embudget.budget.usage import params_of_histograms
from embudget.errors import BudgetError, BudgetErrorType, DataFormatError

__all__ = ["Action", "RankAssignment", "rank_order"]

_INVALID = BudgetErrorType.INVALID


def rank_order(freq: np.ndarray) -> np.ndarray:
    """Indices sorted by frequency descending, ties by index ascending (int64).

    Example::

        >>> rank_order(np.array([3, 5, 3, 0])).tolist()
        [1, 0, 2, 3]
    """
    f = np.asarray(freq)
    if f.ndim != 1:
        raise DataFormatError(f"frequencies must be a 1-D array, got shape {f.shape}")
    if f.dtype.kind not in "iuf" and f.size:
        raise DataFormatError(f"frequencies must be numbers, got dtype {f.dtype}")
    f64 = f.astype(np.float64)
    if f.size and (not np.all(np.isfinite(f64)) or float(f64.min()) < 0):
        raise DataFormatError(
            "frequencies must be finite and non-negative (interaction counts on the training split)"
        )
    # A stable sort on the negated counts keeps equal counts in index order.
    return np.argsort(-f64, kind="stable").astype(np.int64)


def _hist(name: str, x: object) -> np.ndarray:
    h = np.asarray(x)
    if h.ndim != 1 or h.size == 0:
        raise BudgetError(f"{name} must be a non-empty 1-D array of length d_max", _INVALID)
    if h.dtype.kind not in "iu" and not (h.dtype.kind == "f" and np.all(h == np.floor(h))):
        raise BudgetError(f"{name} must hold integer counts, got dtype {h.dtype}", _INVALID)
    h = h.astype(np.int64)
    if int(h.min()) < 0:
        raise BudgetError(f"{name} has a negative count", _INVALID)
    h.setflags(write=False)
    return h


def _sorted_desc(hist: np.ndarray) -> np.ndarray:
    """Sizes in descending order: d_max repeated h[d_max-1] times, ..., 1 repeated h[0] times."""
    return np.repeat(np.arange(hist.size, 0, -1, dtype=np.int64), hist[::-1])


def _to_jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


@dataclass(frozen=True, eq=False)
class Action:
    """One complete size assignment in canonical form.

    Attributes:
        hist_u: ``hist_u[d-1]`` = number of users of size d (int64, length d_max, read-only).
        hist_v: the same for items.
        record: how the action was made (sampler families, β, w, attempts, clamped, ...).

    Equality and hashing use the histograms only.
    """

    hist_u: np.ndarray
    hist_v: np.ndarray
    record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        hu, hv = _hist("hist_u", self.hist_u), _hist("hist_v", self.hist_v)
        if hu.size != hv.size:
            raise BudgetError(
                f"hist_u and hist_v must both have length d_max, got {hu.size} and {hv.size}",
                _INVALID,
            )
        object.__setattr__(self, "hist_u", hu)
        object.__setattr__(self, "hist_v", hv)

    # -- identity -----------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Action):
            return NotImplemented
        return bool(
            np.array_equal(self.hist_u, other.hist_u) and np.array_equal(self.hist_v, other.hist_v)
        )

    def __hash__(self) -> int:
        return hash((self.hist_u.tobytes(), self.hist_v.tobytes()))

    # -- properties ---------------------------------------------------------------------------
    @property
    def d_max(self) -> int:
        return int(self.hist_u.size)

    @property
    def n_users(self) -> int:
        return int(self.hist_u.sum())

    @property
    def n_items(self) -> int:
        return int(self.hist_v.sum())

    @property
    def params_used(self) -> int:
        """Σ d_n over users and items (:func:`~embudget.budget.usage.params_used`, one table)."""
        return params_of_histograms(self.hist_u, self.hist_v)

    def sorted_sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """Users' and items' sizes in descending order (the size of rank 0 first)."""
        return _sorted_desc(self.hist_u), _sorted_desc(self.hist_v)

    # -- construction and assignment ----------------------------------------------------------
    @classmethod
    def from_sizes(
        cls,
        user_sizes: np.ndarray,
        item_sizes: np.ndarray,
        d_max: int,
        record: Mapping[str, Any] | None = None,
    ) -> Action:
        """Canonical form of per-entity sizes (sorted or not).

        Only the multiset of sizes per side is kept: rebuilding gives the largest sizes to the
        highest-ranked entities, whatever the input's order.
        """
        hists = []
        for name, s in (("user sizes", user_sizes), ("item sizes", item_sizes)):
            a = np.asarray(s)
            if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
                raise BudgetError(f"{name} must be a 1-D integer array", _INVALID)
            a = a.astype(np.int64)
            if a.size and (int(a.min()) < 1 or int(a.max()) > d_max):
                raise BudgetError(
                    f"{name} must lie in [1, {d_max}], got min {int(a.min())}, max {int(a.max())}",
                    _INVALID,
                )
            hists.append(np.bincount(a - 1, minlength=d_max))
        return cls(hists[0], hists[1], dict(record or {}))

    def sizes(self, user_rank: np.ndarray, item_rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-entity sizes (int64): the k-th largest size goes to entity ``user_rank[k]``.

        ``user_rank``/``item_rank`` are rank permutations as returned by :func:`rank_order`.
        Prefer :meth:`RankAssignment.sizes`, which holds them once per dataset.
        """
        out = []
        for name, hist, order in (
            ("user", self.hist_u, user_rank),
            ("item", self.hist_v, item_rank),
        ):
            order = np.asarray(order)
            if order.shape != (int(hist.sum()),):
                raise BudgetError(
                    f"the action has {int(hist.sum())} {name}s but the {name} rank has shape "
                    f"{order.shape}; use the rank of the dataset the action was sampled for",
                    _INVALID,
                )
            s = np.empty(order.size, dtype=np.int64)
            s[order] = _sorted_desc(hist)
            out.append(s)
        return out[0], out[1]

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: histograms as lists plus the record."""
        return {
            "hist_u": self.hist_u.tolist(),
            "hist_v": self.hist_v.tolist(),
            "record": _to_jsonable(self.record),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Action:
        """Inverse of :meth:`to_dict`."""
        try:
            hu, hv = data["hist_u"], data["hist_v"]
        except KeyError as e:
            raise BudgetError(f"action dict lacks {e.args[0]!r}", _INVALID) from None
        return cls(
            np.asarray(hu, dtype=np.int64),
            np.asarray(hv, dtype=np.int64),
            dict(data.get("record") or {}),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


class RankAssignment:
    """The one frequency-rank assignment of a dataset (bet.md §3.3), built once.

    Args:
        user_freq: training-split interaction count per user (index order).
        item_freq: the same per item.

    Attributes:
        user_order / item_order: rank → entity index (``user_order[0]`` is the top user).
        user_rank / item_rank: entity index → rank position (inverse permutations).
    """

    def __init__(self, user_freq: np.ndarray, item_freq: np.ndarray) -> None:
        self.user_order = rank_order(user_freq)
        self.item_order = rank_order(item_freq)
        self.user_rank = np.empty_like(self.user_order)
        self.user_rank[self.user_order] = np.arange(self.user_order.size)
        self.item_rank = np.empty_like(self.item_order)
        self.item_rank[self.item_order] = np.arange(self.item_order.size)
        for a in (self.user_order, self.item_order, self.user_rank, self.item_rank):
            a.setflags(write=False)

    @property
    def n_users(self) -> int:
        return int(self.user_order.size)

    @property
    def n_items(self) -> int:
        return int(self.item_order.size)

    def sizes(self, action: Action) -> tuple[np.ndarray, np.ndarray]:
        """Per-entity (user_sizes, item_sizes), int64, in entity-index order."""
        return action.sizes(self.user_order, self.item_order)

    def sizes_batch(
        self, hist_u: np.ndarray, hist_v: np.ndarray, dtype: npt.DTypeLike = np.int64
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-entity sizes of m actions at once from (m, d_max) histograms: (m, |U|), (m, |V|)."""
        out = []
        for name, hists, order in (
            ("user", hist_u, self.user_order),
            ("item", hist_v, self.item_order),
        ):
            h = np.asarray(hists, dtype=np.int64)
            if h.ndim != 2 or np.any(h.sum(axis=1) != order.size) or np.any(h < 0):
                raise BudgetError(
                    f"{name} histograms must be (m, d_max) non-negative counts summing to "
                    f"{order.size} per row",
                    _INVALID,
                )
            m, d_max = h.shape
            values: np.ndarray = np.tile(np.arange(d_max, 0, -1, dtype=dtype), m)
            ranked = np.repeat(values, h[:, ::-1].ravel()).reshape(m, order.size)
            s: np.ndarray = np.empty((m, order.size), dtype=dtype)
            s[:, order] = ranked
            out.append(s)
        return out[0], out[1]

    def action(
        self,
        user_sizes: np.ndarray,
        item_sizes: np.ndarray,
        d_max: int,
        record: Mapping[str, Any] | None = None,
    ) -> Action:
        """Canonical form of per-entity sizes that must already follow this rank.

        Raises:
            BudgetError: INVALID if the sizes are not non-increasing along the rank (the action
                would rebuild to different per-entity sizes).
        """
        if not self.follows_rank(user_sizes, item_sizes):
            raise BudgetError(
                "these sizes do not follow the frequency rank (larger sizes to more frequent "
                "entities), so an action cannot represent them; use Action.from_sizes to "
                "reassign them by rank",
                _INVALID,
            )
        return Action.from_sizes(user_sizes, item_sizes, d_max, record)

    def follows_rank(self, user_sizes: np.ndarray, item_sizes: np.ndarray) -> bool:
        """True when sizes are non-increasing along the rank on each side."""
        for s, order in ((user_sizes, self.user_order), (item_sizes, self.item_order)):
            a = np.asarray(s)
            if a.shape != order.shape:
                return False
            if np.any(np.diff(a[order].astype(np.int64)) > 0):
                return False
        return True

    def repair_priority(self) -> np.ndarray:
        """Repair priority of the concatenated [users, items]: users first, then rank."""
        return np.concatenate([self.user_rank, self.n_users + self.item_rank])
