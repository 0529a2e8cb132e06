"""Online training of a fitness predictor from a never-evicting replay (bet.md §4.6)."""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import numpy as np
import torch

from embudget.errors import BudgetError, BudgetErrorType, ConfigError, EmbudgetError
from embudget.search.predictor_nets import FitnessPredictor, HasHists, HistLike

logger = logging.getLogger(__name__)


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
