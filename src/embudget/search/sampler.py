"""The bounded action sampler (bet.md §3.1–3.2, normative).

Each action splits the budget between users and items with w, draws one value per entity from a
heavy-tailed family, normalises each side and floors its share of the budget, rejects draws that
would exceed d_max (with a retry cap), lifts zeros to the minimum size and repairs the total. The
result is returned in canonical histogram form (:class:`~embudget.search.actions.Action`), so no
per-entity sort is needed: the histogram of a side is its sorted sizes.

Distributions. The families are SciPy's ``powerlaw(a=β)``, ``truncnorm(a=0, b=β)``,
``truncexpon(b=β)`` and ``lognorm(s=β)``. SciPy's ``rvs`` is the inverse CDF of one
``random_state.uniform`` stream for the first three and ``exp(s·standard_normal)`` for the
last; ``truncnorm``'s log-space ppf costs ~0.5 µs a value. The sampler therefore applies the same
closed-form inverse CDFs to the same draws from the caller's generator, which reproduces
``scipy.stats.<family>(β).rvs(size, random_state=rng)`` value for value (up to float rounding;
tested, along with a KS test per family):

- powerlaw: U^(1/β)
- truncnorm on [0, β]: −Φ⁻¹(Φ(−β) + (1 − U)(½ − Φ(−β)))  (scipy's right-tail form)
- truncexpon: −log1p(U · expm1(−β))
- lognorm: exp(β · Z)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from embudget.budget.core import check_feasible, repair_histograms
from embudget.errors import BudgetError, BudgetErrorType, ConfigError, SamplerError
from embudget.search.actions import Action

logger = logging.getLogger(__name__)

__all__ = ["BETA_MAX", "FAMILIES", "BoundedSampler", "SampleBatch", "draw_family"]

FAMILIES: tuple[str, ...] = ("powerlaw", "truncnorm", "truncexpon", "lognorm")
BETA_MAX: dict[str, float] = {
    "powerlaw": 20.0,
    "truncnorm": 20.0,
    "truncexpon": 5.0,
    "lognorm": 0.5,
}


def draw_family(family: str, beta: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` draws of one family with parameter β; same values as SciPy's ``rvs``."""
    if family == "lognorm":
        with np.errstate(over="ignore"):  # an overflow to inf fails the attempt
            return np.exp(beta * rng.standard_normal(size))
    u = rng.random(size)
    if family == "powerlaw":
        return np.power(u, 1.0 / beta)
    if family == "truncnorm":
        tail = special.ndtr(-beta)
        np.multiply(np.subtract(1.0, u, out=u), 0.5 - tail, out=u)
        u += tail
        x = special.ndtri(u)
        np.negative(x, out=x)
        return np.clip(x, 0.0, beta, out=x)
    if family == "truncexpon":
        np.multiply(u, math.expm1(-beta), out=u)
        x = np.log1p(u, out=u)
        return np.negative(x, out=x)
    raise ConfigError(f"unknown family {family!r}; use one of {', '.join(FAMILIES)}")


@dataclass(frozen=True)
class SampleBatch:
    """m sampled actions in array form: (m, d_max) histograms plus one record per action."""

    hist_u: np.ndarray
    hist_v: np.ndarray
    records: list[dict[str, Any]]

    @property
    def n_clamped(self) -> int:
        """How many actions were clamped after exhausting their attempts (reported per run)."""
        return sum(bool(r["clamped"]) for r in self.records)

    def actions(self) -> list[Action]:
        return [
            Action(hu, hv, rec)
            for hu, hv, rec in zip(self.hist_u, self.hist_v, self.records, strict=True)
        ]


class BoundedSampler:
    """Draws budget-respecting actions (bet.md §3.2); never loops without bound.

    Args:
        n_users, n_items: |U| and |V|.
        B: the sampler's parameter budget (NCF shared mode: ``sampler_budget(B_ncf, 2)``).
            A budget above d_max · N is treated as d_max · N, where every split w is feasible.
        d_max: the largest size.
        max_attempts: draws per action before exhaustion.
        on_exhausted: ``"clamp"`` caps the last finite draw at d_max (``clamped=True``);
            ``"error"`` raises :class:`SamplerError`.
        size_step: sizes restricted to multiples of this step (bet.md §14.3); must divide d_max.
        families: the families to draw from (default all four, uniformly).
        beta_max: per-family β_max overrides (defaults: :data:`BETA_MAX`).

    Raises:
        BudgetError: INFEASIBLE when B < size_step · N.
        ConfigError: on bad settings.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        B: int,
        d_max: int = 128,
        max_attempts: int = 100,
        on_exhausted: str = "clamp",
        size_step: int = 1,
        families: Sequence[str] | None = None,
        beta_max: Mapping[str, float] | None = None,
    ) -> None:
        for name, v, lo in (
            ("n_users", n_users, 1),
            ("n_items", n_items, 1),
            ("d_max", d_max, 1),
            ("max_attempts", max_attempts, 1),
            ("size_step", size_step, 1),
        ):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
        if on_exhausted not in ("clamp", "error"):
            raise ConfigError(f"on_exhausted must be 'clamp' or 'error', got {on_exhausted!r}")
        if d_max % size_step:
            raise ConfigError(f"size_step {size_step} must divide d_max {d_max} (e.g. 4 for 128)")
        self.n_users, self.n_items = int(n_users), int(n_items)
        self.d_max, self.step = int(d_max), int(size_step)
        self.max_attempts, self.on_exhausted = int(max_attempts), on_exhausted
        n = self.n_users + self.n_items
        check_feasible(B, n, self.d_max, self.step)
        self.B = int(B)
        self._B_eff = min(self.B, self.d_max * n)
        self.families = tuple(FAMILIES if families is None else families)
        if not self.families or any(f not in FAMILIES for f in self.families):
            raise ConfigError(f"families must be a non-empty subset of {FAMILIES}, got {families}")
        bm = dict(BETA_MAX)
        bm.update(beta_max or {})
        for f in self.families:
            if not (math.isfinite(bm[f]) and bm[f] > 0):
                raise ConfigError(f"beta_max for {f} must be positive and finite, got {bm[f]}")
        self.beta_max = {f: float(bm[f]) for f in self.families}
        # Feasible split interval: w·B ≤ d_max·|U| and (1 − w)·B ≤ d_max·|V|.
        self._w_lo = max(0.0, 1.0 - self.d_max * self.n_items / self._B_eff)
        self._w_hi = max(self._w_lo, min(1.0, self.d_max * self.n_users / self._B_eff))

    @property
    def w_interval(self) -> tuple[float, float]:
        """The interval w is drawn from (all of [0, 1) unless the kept fraction is large)."""
        return self._w_lo, self._w_hi

    def sample(self, rng: np.random.Generator) -> Action:
        """One action; ``sample_many(m, rng)`` equals m calls of this in sequence."""
        return self._one(rng)

    def sample_many(self, m: int, rng: np.random.Generator) -> list[Action]:
        """m actions, drawn one after another from ``rng``."""
        return [self._one(rng) for _ in range(int(m))]

    def sample_batch(self, m: int, rng: np.random.Generator) -> SampleBatch:
        """m actions as (m, d_max) histogram arrays plus records (same draws as sample_many)."""
        acts = self.sample_many(m, rng)
        hu = np.stack([a.hist_u for a in acts]) if acts else np.zeros((0, self.d_max), np.int64)
        hv = np.stack([a.hist_v for a in acts]) if acts else np.zeros((0, self.d_max), np.int64)
        return SampleBatch(hu, hv, [a.record for a in acts])

    # -- internals ------------------------------------------------------------------------------
    def _draw_w(self, rng: np.random.Generator) -> float:
        # Uniform on the feasible interval: the same law as redrawing w ~ U(0, 1) until feasible,
        # without an unbounded loop (bet.md §12, defect 7).
        u = float(rng.random())
        return self._w_lo + (self._w_hi - self._w_lo) * u

    def _side_units(self, p: np.ndarray, total: float, share: float) -> np.ndarray:
        """Floors of p̃ · share, in units of the step (float64, as in bet.md §3.2 step 6)."""
        return np.floor(p / total * share / self.step)

    def _one(self, rng: np.random.Generator) -> Action:
        w = self._draw_w(rng)
        share_u, share_v = w * self._B_eff, (1.0 - w) * self._B_eff
        n_units = self.d_max // self.step
        nf = len(self.families)
        last: tuple[np.ndarray, float, np.ndarray, float, str, str, float, float] | None = None
        accepted = False
        attempt = 0
        for attempt in range(1, self.max_attempts + 1):  # noqa: B007 (attempt used after loop)
            fu = self.families[int(rng.integers(nf))] if nf > 1 else self.families[0]
            fv = self.families[int(rng.integers(nf))] if nf > 1 else self.families[0]
            bu = self.beta_max[fu] * (1.0 - float(rng.random()))
            bv = self.beta_max[fv] * (1.0 - float(rng.random()))
            pu = draw_family(fu, bu, self.n_users, rng)
            pv = draw_family(fv, bv, self.n_items, rng)
            su, sv = float(pu.sum()), float(pv.sum())
            if not (math.isfinite(su) and math.isfinite(sv) and su > 0 and sv > 0):
                continue
            last = (pu, su, pv, sv, fu, fv, bu, bv)
            # The largest floor comes from the largest value (division and product are monotone).
            top_u = math.floor(float(pu.max()) / su * share_u / self.step)
            top_v = math.floor(float(pv.max()) / sv * share_v / self.step)
            if top_u <= n_units and top_v <= n_units:
                accepted = True
                break
        if last is None or (not accepted and self.on_exhausted == "error"):
            raise SamplerError(
                f"no acceptable draw in {attempt} attempts (w={w:.4f}, B={self.B:,}, "
                f"|U|={self.n_users:,}, |V|={self.n_items:,}, d_max={self.d_max}"
                + ("" if last is not None else "; no draw was finite")
                + "). Lower the budget, raise max_attempts, or use on_exhausted='clamp'."
            )
        pu, su, pv, sv, fu, fv, bu, bv = last  # the accepted draw, or the last finite one
        hists = []
        for p, s, share in ((pu, su, share_u), (pv, sv, share_v)):
            units = self._side_units(p, s, share)
            np.minimum(units, n_units, out=units)  # no-op unless exhausted (clamp)
            h = np.bincount(units.astype(np.int64), minlength=n_units + 1)
            h[1] += h[0]  # lower clamp to one unit
            hists.append(h[1:])
        sizes_hists = []
        for hu in hists:
            h = np.zeros(self.d_max, dtype=np.int64)
            h[self.step - 1 :: self.step] = hu
            sizes_hists.append(h)
        (hist_u, hist_v), removed = repair_histograms(sizes_hists, self.B, self.step)
        act = Action(
            hist_u,
            hist_v,
            {
                "family_u": fu,
                "family_v": fv,
                "beta_u": bu,
                "beta_v": bv,
                "w": w,
                "attempts": attempt,
                "clamped": not accepted,
                "repair_removed": int(removed),
                "params_used": 0,
            },
        )
        act.record["params_used"] = act.params_used
        if act.params_used > self.B:  # pragma: no cover - guarded by repair_histograms
            raise BudgetError(
                f"sampler produced {act.params_used:,} > B = {self.B:,}; this is a bug",
                BudgetErrorType.VIOLATED,
            )
        if not accepted:
            logger.debug("sampler exhausted %d attempts; clamped the last draw", attempt)
        return act
