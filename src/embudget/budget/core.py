"""Exact parameter budgets, the (I1)/(I2) check, deterministic repair and the SU/SR baselines.

The budget counts only ID-embedding entries: B = ⌊k · d_max · N⌋ with k = 1 − sparsity, in exact
rational arithmetic (bet.md §2). Every size assignment embudget produces satisfies

- (I1) 1 ≤ d_n ≤ d_max for every entity n, and
- (I2) Σ_n d_n ≤ B,

which :func:`check_budget` asserts. :func:`repair` removes an excess by repeatedly taking one
unit from the currently largest size (bet.md §2.3), in one vectorised pass.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from numbers import Integral, Real
from typing import Any

import numpy as np

from embudget.errors import BudgetError, BudgetErrorType

logger = logging.getLogger(__name__)

__all__ = [
    "Budget",
    "check_budget",
    "check_feasible",
    "random_sizes",
    "repair",
    "repair_histograms",
    "sampler_budget",
    "uniform_sizes",
]

_INVALID = BudgetErrorType.INVALID
_INFEASIBLE = BudgetErrorType.INFEASIBLE
_VIOLATED = BudgetErrorType.VIOLATED


def _as_fraction(name: str, value: object) -> Fraction:
    """Exact rational value of a decimal given as int or float (``Fraction(str(x))``)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise BudgetError(
            f"{name} must be a number, got {value!r} ({type(value).__name__}); "
            f"write it as a plain decimal such as 0.8",
            _INVALID,
        )
    if not math.isfinite(float(value)):
        raise BudgetError(f"{name} must be finite, got {value!r}", _INVALID)
    return Fraction(str(value))


def _as_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise BudgetError(
            f"{name} must be an integer, got {value!r} ({type(value).__name__})", _INVALID
        )
    if int(value) < minimum:
        raise BudgetError(f"{name} must be at least {minimum}, got {int(value)}", _INVALID)
    return int(value)


@dataclass(frozen=True)
class Budget:
    """A parameter budget given by exactly one of sparsity, kept fraction or parameter count.

    Example::

        >>> Budget(sparsity=0.9).resolve(n_entities=10, d_max=128)
        128
    """

    sparsity: float | None = None
    kept_fraction: float | None = None
    params: int | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("sparsity", "kept_fraction", "params") if getattr(self, k) is not None]
        if len(given) != 1:
            raise BudgetError(
                "give exactly one of sparsity, kept_fraction or params "
                f"(got {', '.join(given) if given else 'none'})",
                _INVALID,
            )
        if self.sparsity is not None:
            c = _as_fraction("sparsity", self.sparsity)
            if not 0 <= c < 1:
                raise BudgetError(
                    f"sparsity must lie in [0, 1), got {self.sparsity}; "
                    "0.8 keeps 20% of the full table",
                    _INVALID,
                )
        elif self.kept_fraction is not None:
            k = _as_fraction("kept_fraction", self.kept_fraction)
            if not 0 < k <= 1:
                raise BudgetError(
                    f"kept_fraction must lie in (0, 1], got {self.kept_fraction}; "
                    "0.2 keeps 20% of the full table",
                    _INVALID,
                )
        else:
            _as_count("params", self.params, 1)

    def kept(self) -> Fraction | None:
        """The exact kept fraction k, or None for an absolute ``params`` budget."""
        if self.sparsity is not None:
            return 1 - _as_fraction("sparsity", self.sparsity)
        if self.kept_fraction is not None:
            return _as_fraction("kept_fraction", self.kept_fraction)
        return None

    def resolve(self, n_entities: int, d_max: int) -> int:
        """B = ⌊k · d_max · N⌋ in exact arithmetic, or ``params`` as given.

        For NCF's shared mode pass N = 2 · (|U| + |V|) (both tables count, bet.md §8.5).
        """
        n = _as_count("n_entities", n_entities, 1)
        d = _as_count("d_max", d_max, 1)
        k = self.kept()
        if k is None:
            assert self.params is not None
            return int(self.params)
        return math.floor(k * d * n)

    def to_dict(self) -> dict[str, Any]:
        """The one key that is set, e.g. ``{"sparsity": 0.8}``."""
        if self.sparsity is not None:
            return {"sparsity": self.sparsity}
        if self.kept_fraction is not None:
            return {"kept_fraction": self.kept_fraction}
        return {"params": self.params}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Budget:
        """Inverse of :meth:`to_dict`; keys set to None are ignored, unknown keys rejected."""
        allowed = {"sparsity", "kept_fraction", "params"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise BudgetError(
                f"unknown budget key(s) {unknown}; use one of sparsity, kept_fraction, params",
                _INVALID,
            )
        return cls(**{k: v for k, v in data.items() if v is not None})


def check_feasible(B: int, n_entities: int, d_max: int, step: int = 1) -> None:
    """Raise ``BudgetError(INFEASIBLE)`` when B < step · N (not every entity gets ``step``)."""
    B = _as_count("budget", B, 0)
    n = _as_count("n_entities", n_entities, 1)
    d = _as_count("d_max", d_max, 1)
    step = _as_count("size_step", step, 1)
    if step > d:
        raise BudgetError(f"size_step {step} exceeds d_max {d}; use a step <= d_max", _INVALID)
    need = step * n
    if B < need:
        # Largest sparsity whose exact budget still reaches step·N: k = step/d_max suffices.
        max_sparsity = math.floor((1 - Fraction(step, d)) * 10_000) / 10_000
        unit = "dimension" if step == 1 else f"dimensions (size_step {step})"
        raise BudgetError(
            f"a budget of {B:,} parameters cannot give each of the {n:,} users and items at "
            f"least {step} {unit}. Use a sparsity of at most {max_sparsity:.4f} "
            f"(kept fraction >= {step}/{d}), or a budget of at least {need:,} parameters.",
            _INFEASIBLE,
        )


def _int_array(name: str, x: object, error_type: BudgetErrorType = _INVALID) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise BudgetError(f"{name} must be a 1-D array, got shape {a.shape}", error_type)
    if a.dtype.kind in "iu":
        return a.astype(np.int64, copy=False)
    if a.dtype.kind == "f" and a.size and np.all(np.isfinite(a)) and np.all(a == np.floor(a)):
        return a.astype(np.int64)
    if a.size == 0:
        return a.astype(np.int64)
    raise BudgetError(f"{name} must hold integers, got dtype {a.dtype}", error_type)


def check_budget(user_sizes: object, item_sizes: object, B: int, d_max: int, step: int = 1) -> None:
    """Assert (I1) 1 ≤ d ≤ d_max and (I2) Σ d ≤ B; a violation is an internal error.

    With ``step`` > 1 every size must also be a multiple of the step (bet.md §14.3).

    Raises:
        BudgetError: type VIOLATED. Sizes are never clamped here.
    """
    sizes = np.concatenate(
        [
            _int_array("user sizes", user_sizes, _VIOLATED),
            _int_array("item sizes", item_sizes, _VIOLATED),
        ]
    )
    if sizes.size:
        lo, hi = int(sizes.min()), int(sizes.max())
        if lo < 1 or hi > d_max:
            raise BudgetError(
                f"(I1) broken: sizes must lie in [1, {d_max}], got min {lo}, max {hi}. "
                "This is a bug in embudget; please report it.",
                _VIOLATED,
            )
        if step > 1 and np.any(sizes % step):
            raise BudgetError(
                f"sizes must be multiples of size_step {step}. This is a bug in embudget.",
                _VIOLATED,
            )
    total = int(sizes.sum())
    if total > B:
        raise BudgetError(
            f"(I2) broken: the sizes use {total:,} parameters, over the budget of {B:,}. "
            "This is a bug in embudget; please report it.",
            _VIOLATED,
        )


def _level(hist: np.ndarray, B: int) -> int:
    """Largest L ≥ 1 with Σ_n min(d_n, L) ≤ B, from hist[d-1] = #entities of size d."""
    d = np.arange(1, hist.size + 1, dtype=np.int64)
    below = np.cumsum(hist * d)  # Σ_{d' ≤ L} d'·h
    above = hist.sum() - np.cumsum(hist)  # #entities with d' > L
    f = below + d * above  # f[L-1] = Σ min(d_n, L), non-decreasing in L
    return int(np.searchsorted(f, B, side="right"))  # count of L with f(L) ≤ B


def repair(sizes: np.ndarray, B: int, priority: np.ndarray, step: int = 1) -> np.ndarray:
    """Bring Σ sizes down to at most B by taking units from the largest sizes (bet.md §2.3).

    Equivalent to repeatedly removing one unit (``step`` coordinates) from the currently
    largest size, where among equal sizes the unit comes from the entity last in the order
    (original size descending, ``priority`` ascending). Never increases a size, never goes below
    ``step``, and lands on Σ = B (in units of ``step``) whenever it acts.

    Args:
        sizes: 1-D integer sizes, each a multiple of ``step`` and at least ``step``.
        B: the parameter budget.
        priority: one distinct key per entity; lower keys keep their units first.
        step: the size granularity (bet.md §14.3).

    Returns:
        A new int64 array (a copy even when nothing changed).
    """
    s = _int_array("sizes", sizes)
    B = _as_count("budget", B, 0)
    prio = np.asarray(priority)
    if prio.shape != s.shape:
        raise BudgetError(
            f"priority must have one entry per size ({s.size}), got shape {prio.shape}",
            _INVALID,
        )
    step = _as_count("step", step, 1)
    if s.size == 0:
        return s.copy()
    if int(s.min()) < step or np.any(s % step):
        raise BudgetError(
            f"sizes must be positive multiples of step {step}; got min {int(s.min())}", _INVALID
        )
    if int(s.sum()) <= B:
        return s.copy()
    if B < step * s.size:
        raise BudgetError(
            f"a budget of {B:,} parameters cannot give each of the {s.size:,} entities at least "
            f"{step}; raise the budget to at least {step * s.size:,} parameters",
            _INFEASIBLE,
        )
    if np.unique(prio).size != prio.size:
        raise BudgetError("priority must be a total order: its entries must be distinct", _INVALID)
    units = s // step
    budget_units = B // step
    level = _level(np.bincount(units - 1, minlength=int(units.max())), budget_units)
    out = np.minimum(units, level)
    slack = budget_units - int(out.sum())
    if slack > 0:
        over = np.flatnonzero(units > level)
        order = np.lexsort((prio[over], -units[over]))  # size desc, then priority asc
        out[over[order[:slack]]] += 1
    return out * step


def repair_histograms(
    hists: Sequence[np.ndarray], B: int, step: int = 1
) -> tuple[list[np.ndarray], int]:
    """:func:`repair` on size histograms of rank-sorted sides (the canonical action form).

    ``hists[j][d-1]`` is the number of entities of side j with size d. Entities are ordered by
    side (side 0 first), then by rank, and each side's sizes are non-increasing along its rank,
    so this equals :func:`repair` on the rebuilt arrays with priority (side, rank). O(d_max).

    Returns:
        The repaired histograms (new arrays) and the number of parameters removed.
    """
    B = _as_count("budget", B, 0)
    hs = [_int_array("histogram", h) for h in hists]
    if not hs or any(h.size != hs[0].size for h in hs) or hs[0].size == 0:
        raise BudgetError("give one or more non-empty histograms of equal length", _INVALID)
    if any(int(h.min()) < 0 for h in hs):
        raise BudgetError("histogram counts must be non-negative", _INVALID)
    d_max = hs[0].size
    sizes = np.arange(1, d_max + 1, dtype=np.int64)
    total = int(sum(int((h * sizes).sum()) for h in hs))
    if total <= B:
        return [h.copy() for h in hs], 0
    step = _as_count("step", step, 1)
    # Work in units of the step: unit u ↔ size u·step.
    units = [h[step - 1 :: step] for h in hs]
    if any(int(h.sum()) != int(u.sum()) for h, u in zip(hs, units, strict=True)):
        raise BudgetError(f"histogram has sizes that are not multiples of step {step}", _INVALID)
    n = int(sum(int(u.sum()) for u in units))
    check_feasible(B, n, d_max, step)
    budget_units = B // step
    joint = np.sum(units, axis=0)
    level = _level(joint, budget_units)
    n_units = joint.size
    uvals = np.arange(1, n_units + 1, dtype=np.int64)
    kept = int((np.minimum(uvals, level) * joint).sum())
    slack = budget_units - kept
    # Entities above the level, ordered by size desc then side: interleave per size.
    above = np.stack([u[level:][::-1] for u in units], axis=1)  # (sizes desc, sides)
    flat = above.ravel()
    before = np.cumsum(flat) - flat
    given = np.clip(slack - before, 0, flat).reshape(above.shape).sum(axis=0)
    out = []
    for j, u in enumerate(units):
        new_u = u.copy()
        moved = int(new_u[level:].sum())
        new_u[level:] = 0
        new_u[level - 1] += moved - int(given[j])
        if given[j]:
            new_u[level] += int(given[j])
        h = np.zeros(d_max, dtype=np.int64)
        h[step - 1 :: step] = new_u
        out.append(h)
    return out, total - budget_units * step


def uniform_sizes(n_users: int, n_items: int, B: int, d_max: int) -> tuple[np.ndarray, np.ndarray]:
    """SU baseline: d_n = min(d_max, ⌊B / N⌋) for every entity (bet.md §9).

    The leftover B − N·⌊B/N⌋ stays unused.
    """
    nu = _as_count("n_users", n_users, 0)
    nv = _as_count("n_items", n_items, 0)
    check_feasible(B, nu + nv, d_max)
    d = min(int(d_max), int(B) // (nu + nv))
    user_sizes = np.full(nu, d, dtype=np.int64)
    item_sizes = np.full(nv, d, dtype=np.int64)
    check_budget(user_sizes, item_sizes, B, d_max)
    return user_sizes, item_sizes


def random_sizes(
    n_users: int, n_items: int, B: int, d_max: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """SR baseline (bet.md §9): u_n ~ Uniform{1..d_max} i.i.d. in entity-index order,
    d_n = min(d_max, max(1, ⌊u_n · B / Σu⌋)), then repair with entity-index priority.
    """
    nu = _as_count("n_users", n_users, 0)
    nv = _as_count("n_items", n_items, 0)
    n = nu + nv
    check_feasible(B, n, d_max)
    u = rng.integers(1, d_max + 1, size=n, dtype=np.int64)
    total = int(u.sum())
    whole, rest = divmod(int(B), total)
    # ⌊u·B/Σu⌋ = u·⌊B/Σu⌋ + ⌊u·(B mod Σu)/Σu⌋, exact and free of int64 overflow.
    if whole >= d_max:
        d = np.full(n, d_max, dtype=np.int64)
    else:
        d = u * whole + (u * rest) // total
    d = np.clip(d, 1, d_max)
    d = repair(d, B, np.arange(n))
    user_sizes, item_sizes = d[:nu], d[nu:]
    check_budget(user_sizes, item_sizes, B, d_max)
    return user_sizes, item_sizes


def sampler_budget(B: int, tables: int = 1) -> int:
    """The per-entity budget the sampler works with: ⌊B / tables⌋ (NCF shared mode: tables=2)."""
    return _as_count("budget", B, 0) // _as_count("tables", tables, 1)
