"""Fitness predictors over actions in canonical form, their online trainer, and selection.

An action is given as two int64 histograms ``hist_u`` and ``hist_v`` of length ``d_max``
(``hist[d - 1]`` = number of users / items with size ``d``, bet.md §3.3). Under the
frequency-rank assignment the ranked users (largest sizes first) with size ``d`` form one
contiguous block, so a set mean is a difference of two prefix sums (bet.md §4.5).

- :class:`DeepSetsPredictor`: the set-based predictor of bet.md §4.3–4.5.
- :class:`SimplePredictor`: the BET-simple histogram MLP (bet.md §9).
- :class:`PredictorTrainer`: online training with a never-evicting replay (bet.md §4.6).
- :func:`greedy`, :func:`nearest`: the selection rules of bet.md §5.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from embudget.errors import BudgetError, BudgetErrorType, ConfigError, EmbudgetError

logger = logging.getLogger(__name__)

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
    step pushes negative learns 100x slower, which collapsed the predictor in RESULTS.md)."""
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


class PredictorTrainer:
    """Online training of a predictor from a never-evicting replay (bet.md §4.6).

    Each update draws one (action, r) pair uniformly with replacement, takes one Adam step on
    (r̂ − r)², then decays the learning rate: lr ← max(lr_min, lr_decay · lr). With
    ``batch=True`` (fast mode; bet.md §4.6 allows it as a recorded variant) each update is one
    Adam step on the mean squared error over the whole replay instead.
    """

    def __init__(
        self,
        predictor: FitnessPredictor,
        lr: float = 0.01,
        lr_decay: float = 0.9,
        lr_min: float = 0.002,
        batch: bool = False,
    ) -> None:
        if not (lr > 0 and 0 < lr_decay <= 1 and 0 <= lr_min <= lr):
            raise ConfigError(
                f"need lr > 0, 0 < lr_decay <= 1 and 0 <= lr_min <= lr; got lr={lr}, "
                f"lr_decay={lr_decay}, lr_min={lr_min}"
            )
        self.predictor = predictor
        self.lr = float(lr)
        self.lr_decay = float(lr_decay)
        self.lr_min = float(lr_min)
        self.batch = bool(batch)
        self.n_updates = 0
        self.optimizer = torch.optim.Adam(predictor.parameters(), lr=self.lr)
        self._hu: list[np.ndarray] = []
        self._hv: list[np.ndarray] = []
        self._r: list[float] = []

    def __len__(self) -> int:
        return len(self._r)

    def add(self, action_hists: HasHists | tuple[HistLike, HistLike], r: float) -> None:
        """Append one probed action (object with histograms, or a (hist_u, hist_v) pair)."""
        if isinstance(action_hists, tuple):
            hist_u, hist_v = action_hists
        else:
            hist_u, hist_v = action_hists.hist_u, action_hists.hist_v
        hu, hv = self.predictor.check_hists(hist_u, hist_v)
        if hu.shape[0] != 1:
            raise BudgetError(f"add() takes one action, got {hu.shape[0]}", BudgetErrorType.INVALID)
        if not math.isfinite(float(r)):
            raise EmbudgetError(f"fitness must be finite, got {r}; check the probe")
        self._hu.append(hu[0].cpu().numpy())
        self._hv.append(hv[0].cpu().numpy())
        self._r.append(float(r))

    def update(self, rng: np.random.Generator, n_updates: int = 2) -> list[dict[str, float]]:
        """Take ``n_updates`` Adam steps (single pairs, or the whole replay with ``batch``);
        return one log dict per step (``index`` -1 and means over the replay for a batch)."""
        if not self._r:
            raise EmbudgetError("the replay is empty; add() a probed action before update()")
        logs: list[dict[str, float]] = []
        self.predictor.train()
        if self.batch:
            hu_all, hv_all, r_np = self.replay()
            r_all = torch.as_tensor(r_np, dtype=torch.float32)
        for _ in range(n_updates):
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
            if self.batch:
                i = -1
                r_hat = self.predictor(hu_all, hv_all)
                loss = ((r_hat - r_all.to(r_hat.device)) ** 2).mean()
                r_log, r_hat_log = float(r_all.mean()), float(r_hat.detach().mean())
            else:
                i = int(rng.integers(len(self._r)))
                r_hat = self.predictor(self._hu[i][None], self._hv[i][None])[0]
                loss = (r_hat - self._r[i]) ** 2
                r_log, r_hat_log = self._r[i], float(r_hat.detach())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            logs.append(
                {
                    "index": float(i),
                    "r": r_log,
                    "r_hat": r_hat_log,
                    "loss": float(loss.detach()),
                    "lr": self.lr,
                }
            )
            self.n_updates += 1
            if not self.batch:
                self.lr = max(self.lr_min, self.lr_decay * self.lr)
        if self.batch:  # one decay per iteration: many batch steps must not hit the floor at once
            self.lr = max(self.lr_min, self.lr_decay * self.lr)
        logger.debug("predictor updates: %s", logs)
        return logs

    def replay(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The replay as ``(hist_u (n, D), hist_v (n, D), r (n,))`` copies."""
        d = self.predictor.d_max
        if not self._r:
            empty = np.zeros((0, d), dtype=np.int64)
            return empty, empty.copy(), np.zeros(0)
        return np.stack(self._hu), np.stack(self._hv), np.asarray(self._r, dtype=np.float64)

    def state_dict(self) -> dict[str, Any]:
        """Weights, Adam state, lr and replay: plain tensors/numbers, a deep copy.

        Loadable with ``torch.load(..., weights_only=True)``.
        """
        hu, hv, r = self.replay()
        return {
            "predictor": {k: v.detach().clone() for k, v in self.predictor.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "lr": self.lr,
            "n_updates": self.n_updates,
            "replay_hist_u": torch.from_numpy(hu),
            "replay_hist_v": torch.from_numpy(hv),
            "replay_r": torch.from_numpy(r),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore everything :meth:`state_dict` captured."""
        keys = {"predictor", "optimizer", "lr", "n_updates", "replay_hist_u", "replay_hist_v"}
        missing = sorted((keys | {"replay_r"}) - set(state))
        if missing:
            raise EmbudgetError(f"predictor trainer state lacks {missing}; is it a checkpoint?")
        self.predictor.load_state_dict(state["predictor"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.lr = float(state["lr"])
        self.n_updates = int(state["n_updates"])
        hu = state["replay_hist_u"].cpu().numpy().astype(np.int64)
        hv = state["replay_hist_v"].cpu().numpy().astype(np.int64)
        r = state["replay_r"].cpu().numpy().astype(np.float64)
        if not (len(hu) == len(hv) == len(r)):
            raise EmbudgetError("corrupt trainer state: replay arrays differ in length")
        self._hu = [row.copy() for row in hu]
        self._hv = [row.copy() for row in hv]
        self._r = [float(x) for x in r]


def _unique_rows(*arrays: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Distinct actions and the inverse map, so equal actions get bit-identical outputs."""
    key = np.concatenate([a.cpu().numpy() for a in arrays], axis=1)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    first_t = torch.from_numpy(first)
    return (*(a[first_t] for a in arrays), torch.from_numpy(inverse.reshape(-1)))


def greedy(pred: FitnessPredictor, hist_u: HistLike, hist_v: HistLike) -> int:
    """Index of the candidate with the highest predicted fitness (ties: lowest index)."""
    hu, hv = pred.check_hists(hist_u, hist_v)
    uu, uv, inverse = _unique_rows(hu, hv)
    with torch.no_grad():
        scores = pred(uu, uv)[inverse].cpu().numpy()
    return int(np.argmax(scores))  # first maximum


def nearest(
    pred: FitnessPredictor,
    hist_u: HistLike,
    hist_v: HistLike,
    best_hist_u: HistLike,
    best_hist_v: HistLike,
) -> int:
    """Index of the candidate closest to the best action in h-space (ties: lowest index).

    Both are embedded with the current predictor (bet.md §5, D8).
    """
    hu, hv = pred.check_hists(hist_u, hist_v)
    bu, bv = pred.check_hists(best_hist_u, best_hist_v)
    if bu.shape[0] != 1:
        raise BudgetError(
            f"nearest() takes one best action, got {bu.shape[0]}", BudgetErrorType.INVALID
        )
    # Embed the best action in the same batch so an identical candidate is at distance 0.
    uu, uv, inverse = _unique_rows(torch.cat([hu, bu]), torch.cat([hv, bv]))
    with torch.no_grad():
        h = pred.embed(uu, uv)[inverse].to(torch.float64)
    dist = torch.linalg.vector_norm(h[:-1] - h[-1], dim=1).cpu().numpy()
    return int(np.argmin(dist))  # first minimum
