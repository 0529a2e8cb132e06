"""Per-user ranking metrics (protocol.md §5) and the BET quality Q (bet.md §6).

Every function here is pure: it maps hit indicators of ranked lists to per-user values.
Ranking, exclusion and tie handling live in :mod:`embudget.training.evaluate`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np
import torch

from embudget.errors import ConfigError

METRIC_NAMES = ("recall", "ndcg", "precision", "hitrate")
#: the six metrics whose mean is Q (bet.md §6)
QUALITY_KEYS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")

_Q = TypeVar("_Q", torch.Tensor, np.ndarray, float)


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Validate cut-offs: a non-empty sequence of positive ints. Returns them as a tuple."""
    out = tuple(ks)
    if not out or any(isinstance(k, bool) or not isinstance(k, int | np.integer) for k in out):
        raise ConfigError(f"ks must be a non-empty sequence of ints, got {ks!r}; e.g. (5, 10, 20)")
    if min(out) < 1:
        raise ConfigError(f"every K must be >= 1, got {ks!r}")
    return tuple(int(k) for k in out)


def ranking_metrics(
    hits: torch.Tensor, n_targets: torch.Tensor, ks: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Recall, NDCG, Precision and HitRate at every K, per user.

    Args:
        hits: (B, K_max) bool/float hit indicators r_i of each ranked list, rank 1 first;
            K_max must be >= max(ks).
        n_targets: (B,) |T_u| of each user, all >= 1.
        ks: cut-offs.

    Returns:
        ``{"recall@K", "ndcg@K", "precision@K", "hitrate@K"}`` for each K, float64 (B,) tensors.
    """
    ks = check_ks(ks)
    if hits.dim() != 2:
        raise ValueError(f"hits must be (B, K_max), got shape {tuple(hits.shape)}")
    k_max = max(ks)
    if hits.shape[1] < k_max:
        raise ValueError(
            f"hits has {hits.shape[1]} ranks but max(ks) = {k_max}; pad with zeros (non-hits)"
        )
    if n_targets.shape != (hits.shape[0],):
        raise ValueError(
            f"n_targets must have shape ({hits.shape[0]},), got {tuple(n_targets.shape)}"
        )
    if n_targets.numel() and int(n_targets.min()) < 1:
        raise ValueError("every user needs |T_u| >= 1; skip users without targets before this")

    dev = hits.device
    r = hits[:, :k_max].to(torch.float64)
    nt = n_targets.to(device=dev, dtype=torch.int64)
    disc = 1.0 / torch.log2(torch.arange(2, k_max + 2, device=dev, dtype=torch.float64))
    cum_hits = torch.cumsum(r, dim=1)
    cum_dcg = torch.cumsum(r * disc, dim=1)
    # IDCG@K = sum of the first min(|T_u|, K) discounts (ideal list over the targets, not hits)
    cum_disc = torch.cumsum(disc, dim=0)
    ntf = nt.to(torch.float64)
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        n_hit = cum_hits[:, k - 1]
        idcg = cum_disc[torch.clamp(nt, max=k) - 1]
        out[f"recall@{k}"] = n_hit / ntf
        out[f"ndcg@{k}"] = cum_dcg[:, k - 1] / idcg
        out[f"precision@{k}"] = n_hit / k
        out[f"hitrate@{k}"] = (n_hit > 0).to(torch.float64)
    return out


def has_quality(keys: Sequence[str] | Mapping[str, object]) -> bool:
    """Whether the six metrics of Q are all present."""
    return all(k in keys for k in QUALITY_KEYS)


def quality(metrics: Mapping[str, _Q]) -> _Q:
    """Q = mean of Recall@{5,10,20} and NDCG@{5,10,20} (bet.md §6).

    Works element-wise, so per-user arrays/tensors give per-user Q and macro means give the
    mean Q (the two agree: the mean of per-user Q equals Q of the means).
    """
    missing = [k for k in QUALITY_KEYS if k not in metrics]
    if missing:
        raise ConfigError(f"quality Q needs {missing}; evaluate with ks including 5, 10 and 20")
    total = metrics[QUALITY_KEYS[0]]
    for k in QUALITY_KEYS[1:]:
        total = total + metrics[k]
    return total / len(QUALITY_KEYS)
