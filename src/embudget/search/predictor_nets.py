"""Fitness predictors over actions in canonical form (bet.md §4.3–4.5, §9).

An action is given as two int64 histograms ``hist_u`` and ``hist_v`` of length ``d_max``
(``hist[d - 1]`` = number of users / items with size ``d``, bet.md §3.3). Under the
frequency-rank assignment the ranked users (largest sizes first) with size ``d`` form one
contiguous block, so a set mean is a difference of two prefix sums (bet.md §4.5).

- :class:`DeepSetsPredictor`: the set-based predictor of bet.md §4.3–4.5.
- :class:`SimplePredictor`: the BET-simple histogram MLP (bet.md §9).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from embudget.errors import BudgetError, BudgetErrorType, ConfigError

HistLike = np.ndarray | torch.Tensor | Sequence[int] | Sequence[Sequence[int]]

# Hidden widths fixed by bet.md §4.3.
ELEMENT_DIM = 16
SET_DIM = 64
SIMPLE_HIDDEN = 64


class HasHists(Protocol):
    """Anything that carries an action in canonical form (e.g. the sampler's action record)."""

    @property
    def hist_u(self) -> np.ndarray | torch.Tensor: ...

    @property
    def hist_v(self) -> np.ndarray | torch.Tensor: ...


def ranked_features(freq: np.ndarray) -> np.ndarray:
    """Popularity features q = f / max f in rank order (f descending, index ascending).

    Returns float64 values in [0, 1], non-increasing; all zeros if every frequency is 0.

    Example::

        >>> ranked_features(np.array([1, 4, 0, 4])).tolist()
        [1.0, 1.0, 0.25, 0.0]
    """
    f = np.asarray(freq)
    if f.ndim != 1:
        raise ConfigError(f"frequencies must be a 1-D array, got shape {f.shape}")
    if f.size and (not np.all(np.isfinite(f)) or f.min() < 0):
        raise ConfigError("frequencies must be finite and non-negative; count training rows")
    ranked = np.sort(f.astype(np.float64))[::-1]  # values only; ties do not change q
    top = ranked[0] if ranked.size else 0.0
    return ranked / top if top > 0 else np.zeros_like(ranked)


def stack_hists(actions: Sequence[HasHists]) -> tuple[np.ndarray, np.ndarray]:
    """Stack the histograms of action objects into two ``(m, d_max)`` int64 arrays."""
    if len(actions) == 0:
        raise ConfigError("no actions to stack; pass at least one action")
    hu = np.stack([_to_numpy(a.hist_u) for a in actions]).astype(np.int64)
    hv = np.stack([_to_numpy(a.hist_v) for a in actions]).astype(np.int64)
    return hu, hv


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _linear(n_in: int, n_out: int, gen: torch.Generator, xavier: bool) -> nn.Linear:
    """A Linear layer initialised from ``gen`` (never from the global RNG)."""
    lin: nn.Linear = nn.utils.skip_init(nn.Linear, n_in, n_out)
    with torch.no_grad():
        if xavier:
            nn.init.xavier_uniform_(lin.weight, generator=gen)
        else:  # PyTorch's default Linear init, drawn from our generator
            nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5), generator=gen)
        bound = 1.0 / math.sqrt(n_in)
        nn.init.uniform_(lin.bias, -bound, bound, generator=gen)
    return lin


def _mlp(
    n_in: int, n_hidden: int, n_out: int, gen: torch.Generator, xavier: bool, out_act: bool = True
) -> nn.Module:
    """Two Linear layers, each followed by LeakyReLU(0.01) (bet.md §4.3); ``out_act=False``
    drops the last activation (fast mode's linear output: a LeakyReLU output that one large
    step pushes negative learns 100x slower; in a faithful Gowalla MF search it stalled the
    predictor near zero for most iterations)."""
    layers = [
        _linear(n_in, n_hidden, gen, xavier),
        nn.LeakyReLU(0.01),
        _linear(n_hidden, n_out, gen, xavier),
    ]
    if out_act:
        layers.append(nn.LeakyReLU(0.01))
    return nn.Sequential(*layers)


def _generator(generator: torch.Generator | None) -> torch.Generator:
    # None means a fixed seed, so that construction never touches global RNG state.
    return generator if generator is not None else torch.Generator().manual_seed(0)


class FitnessPredictor(nn.Module):
    """Common part: histogram validation, the decoder π and ``forward = π(embed(·))``."""

    def __init__(self, n_users: int, n_items: int, d_max: int) -> None:
        super().__init__()
        if d_max < 1:
            raise ConfigError(f"d_max must be >= 1, got {d_max}")
        if n_users < 0 or n_items < 0 or n_users + n_items == 0:
            raise ConfigError(f"need at least one entity, got {n_users} users and {n_items} items")
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        self.d_max = int(d_max)
        self.decoder: nn.Module

    def check_hists(self, hist_u: HistLike, hist_v: HistLike) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate and convert to two ``(m, d_max)`` int64 tensors (a 1-D pair is m = 1)."""
        out = []
        for name, h, total in (("hist_u", hist_u, self.n_users), ("hist_v", hist_v, self.n_items)):
            t = h.detach() if isinstance(h, torch.Tensor) else torch.from_numpy(np.array(h))
            integral = not (t.dtype.is_complex or t.dtype == torch.bool) and (
                not t.dtype.is_floating_point or torch.equal(t, t.round())
            )
            if not integral:
                raise BudgetError(
                    f"{name} must hold integer counts, got dtype {t.dtype}",
                    BudgetErrorType.INVALID,
                )
            t = t.to(torch.int64)
            if t.ndim == 1:
                t = t.unsqueeze(0)
            if t.ndim != 2 or t.shape[1] != self.d_max:
                raise BudgetError(
                    f"{name} must have shape (m, {self.d_max}) or ({self.d_max},), got "
                    f"{tuple(t.shape)}; build histograms with d_max = {self.d_max}",
                    BudgetErrorType.INVALID,
                )
            if t.numel() and int(t.min()) < 0:
                raise BudgetError(f"{name} has negative counts", BudgetErrorType.INVALID)
            sums = t.sum(dim=1)
            bad = torch.nonzero(sums != total).flatten()
            if bad.numel():
                a = int(bad[0])
                raise BudgetError(
                    f"{name} of action {a} counts {int(sums[a])} entities, but the dataset has "
                    f"{total}; every entity needs exactly one size in 1..{self.d_max}",
                    BudgetErrorType.INVALID,
                )
            out.append(t)
        if out[0].shape[0] != out[1].shape[0]:
            raise BudgetError(
                f"hist_u has {out[0].shape[0]} actions but hist_v has {out[1].shape[0]}",
                BudgetErrorType.INVALID,
            )
        return out[0], out[1]

    def embed(self, hist_u: HistLike, hist_v: HistLike) -> torch.Tensor:
        """Action embeddings h_a, shape ``(m, 64)``."""
        raise NotImplementedError

    def forward(self, hist_u: HistLike, hist_v: HistLike) -> torch.Tensor:
        """Predicted fitness r̂ = π(h_a), shape ``(m,)``."""
        return self.decoder(self.embed(hist_u, hist_v)).squeeze(-1)

    def embed_actions(self, actions: Sequence[HasHists]) -> torch.Tensor:
        """:meth:`embed` for action objects with ``.hist_u`` / ``.hist_v``."""
        return self.embed(*stack_hists(actions))

    def predict_actions(self, actions: Sequence[HasHists]) -> torch.Tensor:
        """:meth:`forward` for action objects with ``.hist_u`` / ``.hist_v``."""
        return self.forward(*stack_hists(actions))


class DeepSetsPredictor(FitnessPredictor):
    """The set-based fitness predictor F_Φ (bet.md §4.3–4.5).

    Args:
        q_u_ranked: user popularity features in rank order (see :func:`ranked_features`).
        q_v_ranked: item popularity features in rank order.
        d_max: number of sets (largest size).
        generator: source of the initial weights (a fixed seed if None).

    Example::

        >>> q_u, q_v = ranked_features(np.array([3, 1])), ranked_features(np.array([2, 2, 1]))
        >>> pred = DeepSetsPredictor(q_u, q_v, d_max=4, generator=torch.Generator().manual_seed(1))
        >>> pred(np.array([[0, 1, 0, 1]]), np.array([[3, 0, 0, 0]])).shape
        torch.Size([1])
    """

    def __init__(
        self,
        q_u_ranked: np.ndarray | torch.Tensor,
        q_v_ranked: np.ndarray | torch.Tensor,
        d_max: int = 128,
        generator: torch.Generator | None = None,
        linear_output: bool = False,
    ) -> None:
        q_u = self._check_q("q_u_ranked", q_u_ranked)
        q_v = self._check_q("q_v_ranked", q_v_ranked)
        super().__init__(int(q_u.numel()), int(q_v.numel()), d_max)
        gen = _generator(generator)
        self.rho_u = _mlp(1, ELEMENT_DIM, ELEMENT_DIM, gen, xavier=False)
        self.rho_v = _mlp(1, ELEMENT_DIM, ELEMENT_DIM, gen, xavier=False)
        self.mu = _mlp(ELEMENT_DIM + 1, SET_DIM, SET_DIM, gen, xavier=False)
        self.decoder = _mlp(SET_DIM, SET_DIM, 1, gen, xavier=True, out_act=not linear_output)
        self.register_buffer("q_u", q_u.unsqueeze(1))
        self.register_buffer("q_v", q_v.unsqueeze(1))
        sizes = torch.arange(1, self.d_max + 1, dtype=torch.float32) / self.d_max
        self.register_buffer("size_feature", sizes.unsqueeze(1))
        self.q_u: torch.Tensor
        self.q_v: torch.Tensor
        self.size_feature: torch.Tensor

    @classmethod
    def from_freqs(
        cls,
        user_freq: np.ndarray,
        item_freq: np.ndarray,
        d_max: int = 128,
        generator: torch.Generator | None = None,
        linear_output: bool = False,
    ) -> DeepSetsPredictor:
        """Build from training frequencies (e.g. ``Dataset.user_freq`` / ``item_freq``)."""
        q_u, q_v = ranked_features(user_freq), ranked_features(item_freq)
        return cls(q_u, q_v, d_max, generator, linear_output)

    @staticmethod
    def _check_q(name: str, q: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(_to_numpy(q), dtype=torch.float32)
        if t.ndim != 1:
            raise ConfigError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
        if t.numel() and (not bool(torch.isfinite(t).all()) or t.min() < 0 or t.max() > 1):
            raise ConfigError(f"{name} must lie in [0, 1]; use ranked_features(freq)")
        if t.numel() > 1 and bool((t[1:] > t[:-1]).any()):
            raise ConfigError(
                f"{name} must be in frequency-rank order (non-increasing); "
                "use ranked_features(freq)"
            )
        return t

    @staticmethod
    def _block_sums(
        x: torch.Tensor, hist: torch.Tensor
    ) -> torch.Tensor:  # (n, k) x (m, D) -> (m, D, k), float64
        """Sum of x over each size block of the ranked entities (largest size first)."""
        prefix = torch.cat([x.new_zeros(1, x.shape[1]), torch.cumsum(x, dim=0)])
        # Ranked entities hold sizes D, D-1, ..., 1 in this order.
        ends_rev = torch.cumsum(hist.flip(1), dim=1)
        starts_rev = ends_rev - hist.flip(1)
        sums_rev = prefix[ends_rev] - prefix[starts_rev]
        return sums_rev.flip(1)

    def set_means(self, hist_u: HistLike, hist_v: HistLike) -> torch.Tensor:
        """Set means m_d over users and items of S_d together (zero if empty): ``(m, D, 16)``."""
        hu, hv = self.check_hists(hist_u, hist_v)
        dev = self.q_u.device
        hu, hv = hu.to(dev), hv.to(dev)
        # Element embeddings once per pass; prefix sums in float64 keep differences exact enough.
        x_u = self.rho_u(self.q_u).to(torch.float64)
        x_v = self.rho_v(self.q_v).to(torch.float64)
        sums = self._block_sums(x_u, hu) + self._block_sums(x_v, hv)
        counts = (hu + hv).to(torch.float64).unsqueeze(-1)
        means = torch.where(counts > 0, sums / counts.clamp(min=1.0), torch.zeros_like(sums))
        return means.to(self.q_u.dtype)

    def embed(self, hist_u: HistLike, hist_v: HistLike) -> torch.Tensor:
        """h_a = mean over all d_max sets of μ([m_d ; d/d_max]), shape ``(m, 64)``."""
        means = self.set_means(hist_u, hist_v)
        size_feat = self.size_feature.expand(means.shape[0], -1, -1)
        s = self.mu(torch.cat([means, size_feat], dim=-1))
        return s.mean(dim=1)


class SimplePredictor(FitnessPredictor):
    """BET-simple (bet.md §9): an MLP on the size histogram, then the decoder π.

    ``hist="joint"`` feeds x_d = |S_d| / N (d_max inputs); ``hist="split"`` feeds the user and
    item histograms separately, each divided by N (2·d_max inputs).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        d_max: int = 128,
        hist: Literal["joint", "split"] = "joint",
        generator: torch.Generator | None = None,
        linear_output: bool = False,
    ) -> None:
        super().__init__(n_users, n_items, d_max)
        if hist not in ("joint", "split"):
            raise ConfigError(f"hist must be 'joint' or 'split', got {hist!r}")
        self.hist = hist
        gen = _generator(generator)
        n_in = self.d_max if hist == "joint" else 2 * self.d_max
        self.encoder = _mlp(n_in, SIMPLE_HIDDEN, SIMPLE_HIDDEN, gen, xavier=False)
        self.decoder = _mlp(SIMPLE_HIDDEN, SET_DIM, 1, gen, xavier=True, out_act=not linear_output)

    def embed(self, hist_u: HistLike, hist_v: HistLike) -> torch.Tensor:
        """h_a = MLP(histogram / N), shape ``(m, 64)``."""
        hu, hv = self.check_hists(hist_u, hist_v)
        dtype = next(self.encoder.parameters()).dtype
        dev = next(self.encoder.parameters()).device
        n = float(self.n_users + self.n_items)
        x = hu + hv if self.hist == "joint" else torch.cat([hu, hv], dim=1)
        return self.encoder((x.to(torch.float64) / n).to(dev, dtype))
