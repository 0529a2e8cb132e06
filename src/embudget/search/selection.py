"""The selection rules of bet.md §5: greedy on predicted fitness, nearest to the best action."""

from __future__ import annotations

import numpy as np
import torch

from embudget.errors import BudgetError, BudgetErrorType
from embudget.search.predictor_nets import FitnessPredictor, HistLike


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
