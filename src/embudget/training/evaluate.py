"""Batched full-ranking evaluation (protocol.md §5).

Every item of the catalogue is scored; a user's excluded items (train when validating,
train + valid when testing) get −inf; the ranking is (score desc, item index asc); users with no
target item, and cold-start users with no training item (protocol.md §4.4), are skipped;
metrics are macro averages and per-user values are kept.

Cost model: apart from the scorer's own product, a batch costs a sparse ``index_fill_``
(exclusion), one contiguous ``amax`` pass over strided item groups (candidate filter) and
O(B·sqrt(K·n_items)) work on the group maxima and candidates. Exact tie resolution touches
only rows whose K-th and (K+1)-th scores are equal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from embudget.data.dataset import Dataset
from embudget.errors import ConfigError, EmbudgetError
from embudget.training.metrics import check_ks, has_quality, quality, ranking_metrics

logger = logging.getLogger(__name__)

EVAL_SPLITS = ("valid", "test")
_NEG_INF = float("-inf")


class ScoreError(EmbudgetError, ValueError):
    """The scorer returned NaN scores or a matrix of the wrong shape."""


@dataclass(frozen=True)
class EvalResult:
    """Outcome of one evaluation pass.

    Attributes:
        split: ``valid`` or ``test``.
        ks: the cut-offs.
        means: macro averages keyed ``recall@20`` etc., plus ``quality`` when ks ⊇ {5, 10, 20}.
        per_user: float32 arrays aligned with ``users``, same keys as ``means``.
        users: evaluated user indices (ascending).
        n_users_evaluated: ``len(users)``.
    """

    split: str
    ks: tuple[int, ...]
    means: dict[str, float]
    per_user: dict[str, np.ndarray]
    users: np.ndarray
    n_users_evaluated: int

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly summary: split, ks, means and n_users_evaluated."""
        return {
            "split": self.split,
            "ks": list(self.ks),
            "means": dict(self.means),
            "n_users_evaluated": self.n_users_evaluated,
        }


# --- ranking --------------------------------------------------------------------------------


def _order_ties(vals: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder a small (B, k) candidate list by (value desc, index asc)."""
    o = torch.argsort(idx, dim=1)  # indices are distinct within a row: stability irrelevant
    idx, vals = idx.gather(1, o), vals.gather(1, o)
    o = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return vals.gather(1, o), idx.gather(1, o)


def _resolve_ties(
    scores: torch.Tensor, rows: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor, k: int
) -> torch.Tensor:
    """Exact top-k of ``rows`` whose k-th score also occurs outside their top-(k+1) list.

    ``vals``/``idx`` are those rows' true top-(k+1) lists ordered by (value desc, index asc).
    Every item above the k-th score is in that list; the rest of the top-k are the
    lowest-index items equal to it, found by scanning a growing prefix of the row (ties are
    usually dense, so the first prefix nearly always suffices).
    """
    n = scores.shape[1]
    kth = vals[:, k - 1 : k]
    n_gt = (vals[:, :k] > kth).sum(dim=1, keepdim=True)
    need = k - n_gt.squeeze(1)
    first = torch.empty(len(rows), k, dtype=torch.int64, device=scores.device)
    todo = torch.arange(len(rows), device=scores.device)
    c = min(n, max(1024, 8 * k))
    while todo.numel():
        eq = scores[:, :c][rows[todo]] == kth[todo]
        ok = (eq.sum(dim=1) >= need[todo]) | (c == n)
        # earliest equal positions first: priority c - position where equal, 0 elsewhere
        dt = torch.float32 if c < 2**24 else torch.float64  # positions exact in the float
        pri = eq[ok].to(dt) * torch.arange(c, 0, -1, device=scores.device, dtype=dt)
        first[todo[ok]] = torch.topk(pri, k, dim=1, sorted=True).indices
        todo, c = todo[~ok], min(n, 4 * c)
    j = torch.arange(k, device=scores.device)
    from_eq = first.gather(1, (j - n_gt).clamp_(min=0))
    return torch.where(j < n_gt, idx[:, :k], from_eq)


def _n_groups(n: int, k: int) -> int:
    """Number of strided item groups for the candidate filter, or 0 to use plain topk.

    Candidates are (k+1) groups of n // g items plus the < g tail items; g ≈ sqrt((k+1)·n)
    minimises their count.
    """
    g = 1 << max(1, round(float(np.log2(np.sqrt((k + 1) * n)))))
    m = n // g
    if g < 2 * (k + 1) or m < 2 or (k + 1) * m + (n - m * g) > n // 4:
        return 0
    return g


def _raise_nan(scores: torch.Tensor) -> None:
    bad = int(torch.isnan(scores).any(dim=1).sum())
    raise ScoreError(
        f"scorer returned NaN scores for {bad} of {scores.shape[0]} users in a batch; NaN is "
        "never ranked. Check the model for diverged weights (learning rate, L2) or bad inputs."
    )


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the first ``min(k, n_items)`` items per row, by (score desc, index asc).

    −inf is allowed; NaN raises :class:`ScoreError` (``topk`` ranks NaN above every number, so
    any NaN reaches the selected values, where it is checked).
    """
    b, n = scores.shape
    if k >= n:
        if bool(torch.isnan(scores).any()):
            _raise_nan(scores)
        return torch.sort(scores, dim=1, descending=True, stable=True).indices
    g = _n_groups(n, k)
    if g:
        # Group j holds items j, j+g, j+2g, ... (its max is a contiguous, fast reduction).
        # Every item outside the k+1 groups with the largest maxima scores <= the smallest of
        # those maxima <= the (k+1)-th candidate score, so the candidates (those groups plus
        # the tail) hold the true top-(k+1) scores.
        m = n // g
        body = scores[:, : m * g].reshape(b, m, g)
        sel = torch.topk(body.amax(dim=1), k + 1, dim=1, sorted=False).indices
        cand = body.gather(2, sel.unsqueeze(1).expand(b, m, k + 1)).reshape(b, -1)
        cand = torch.cat([cand, scores[:, m * g :]], dim=1)
        vals, pos = torch.topk(cand, k + 1, dim=1, sorted=False)
        nc = m * (k + 1)
        grp = sel.gather(1, torch.remainder(pos, k + 1))
        idx = torch.where(
            pos < nc, grp + torch.div(pos, k + 1, rounding_mode="floor") * g, pos - nc + m * g
        )
    else:
        vals, idx = torch.topk(scores, k + 1, dim=1, sorted=False)
    if bool(torch.isnan(vals).any()):
        _raise_nan(scores)
    vals, idx = _order_ties(vals, idx)
    top = idx[:, :k]
    # The top-k set is exact unless the k-th score also occurs outside it.
    tied = (vals[:, k - 1] == vals[:, k]).nonzero().squeeze(1)
    if tied.numel():
        top[tied] = _resolve_ties(scores, tied, vals[tied], idx[tied], k)
    return top


# --- data preparation -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    users: np.ndarray  # evaluated users, ascending
    excl_ptr: np.ndarray  # (n_eval + 1,) CSR pointers into excl_flat
    excl_flat: torch.Tensor  # row * n_items + item, row = position in users
    tgt_ptr: np.ndarray
    tgt_keys: torch.Tensor  # row * n_items + item, ascending
    n_targets: torch.Tensor  # (n_eval,) int64


def _select_users(dataset: Dataset, target: sp.csr_matrix, users: np.ndarray | None) -> np.ndarray:
    has_target = np.diff(target.indptr) > 0
    cold = has_target & (np.diff(dataset.train.indptr) == 0)
    if cold.any():  # protocol.md §4.4: cold-start users (no training item) are not evaluated
        logger.info("skipping %d cold-start users (targets but no training item)", cold.sum())
        has_target &= ~cold
    if users is None:
        return np.flatnonzero(has_target).astype(np.int64)
    u = np.asarray(users)
    if u.ndim != 1 or not (np.issubdtype(u.dtype, np.integer) or u.size == 0):
        raise ConfigError(
            f"users must be a 1-D array of user indices, got dtype {u.dtype} shape {u.shape}"
        )
    u = np.unique(u.astype(np.int64))
    if u.size and (u[0] < 0 or u[-1] >= dataset.n_users):
        raise ConfigError(
            f"user indices must lie in [0, {dataset.n_users}); got range [{u[0]}, {u[-1]}]"
        )
    return u[has_target[u]]


def _flat(m: sp.csr_matrix, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR pointers and row-major flat keys row * n_items + col (ascending)."""
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    return m.indptr.astype(np.int64), rows * n_items + m.indices.astype(np.int64)


def _prepare(
    dataset: Dataset, split: str, users: np.ndarray | None, device: torch.device
) -> _Prepared:
    if split not in EVAL_SPLITS:
        raise ConfigError(f"split must be one of {EVAL_SPLITS}, got {split!r}")
    target = dataset.split(split)
    ev = _select_users(dataset, target, users)
    if ev.size == 0:
        raise ConfigError(
            f"no user to evaluate: none of the requested users has a {split} item; "
            "check the split or the users argument"
        )
    n = dataset.n_items
    excl = dataset.train[ev]
    if split == "test":
        excl = excl + dataset.valid[ev]  # disjoint splits: the sum is their union
        excl.sort_indices()
    tgt = target[ev]
    tgt.sort_indices()
    excl_ptr, excl_flat = _flat(excl, n)
    tgt_ptr, tgt_keys = _flat(tgt, n)
    return _Prepared(
        users=ev,
        excl_ptr=excl_ptr,
        excl_flat=torch.from_numpy(excl_flat).to(device),
        tgt_ptr=tgt_ptr,
        tgt_keys=torch.from_numpy(tgt_keys).to(device),
        n_targets=torch.from_numpy(np.diff(tgt_ptr)).to(device),
    )


def _checked_scores(
    scores: torch.Tensor, b: int, n_items: int, device: torch.device
) -> torch.Tensor:
    if scores.device.type != device.type or (
        device.index is not None and scores.device.index != device.index
    ):
        raise ScoreError(
            f"scorer returned scores on {scores.device} but evaluate runs on {device}; "
            "pass the scorer's device as device="
        )
    if scores.shape != (b, n_items):
        raise ScoreError(
            f"scorer returned shape {tuple(scores.shape)}, expected ({b}, {n_items}) "
            "(one row per requested user, one column per item)"
        )
    if not scores.is_floating_point():
        scores = scores.to(torch.float64)
    elif scores._base is not None or not scores.is_contiguous():
        scores = scores.clone(memory_format=torch.contiguous_format)  # keep caller's data
    return scores


def _batch_size(batch_users: int | None, max_batch_bytes: int, n_items: int) -> int:
    if batch_users is not None:
        if isinstance(batch_users, bool) or int(batch_users) < 1:
            raise ConfigError(f"batch_users must be a positive int, got {batch_users!r}")
        return int(batch_users)
    if max_batch_bytes < 1:
        raise ConfigError(f"max_batch_bytes must be positive, got {max_batch_bytes}")
    # The float32 score block dominates; ranking adds only O(B·sqrt(K·n_items)).
    return max(1, int(max_batch_bytes) // (4 * max(n_items, 1)))


# --- public entry point ---------------------------------------------------------------------


def evaluate(
    scorer: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    split: str = "valid",
    ks: Sequence[int] = (5, 10, 20),
    users: np.ndarray | None = None,
    batch_users: int | None = None,
    device: torch.device | str = "cpu",
    max_batch_bytes: int = 256 * 2**20,
) -> EvalResult:
    """Full-ranking evaluation of ``scorer`` on ``split`` (protocol.md §5).

    Args:
        scorer: maps a (B,) int64 tensor of user indices (on ``device``) to a fresh (B, n_items)
            float score tensor; evaluate writes −inf into it (a backbone's ``scorer()``).
        dataset: the data; ``valid`` excludes train items, ``test`` excludes train and valid.
        split: ``valid`` or ``test``.
        ks: cut-offs; Q is added when they include 5, 10 and 20.
        users: optional user indices to restrict to. Users without targets, or without any
            training item (cold start), are skipped.
        batch_users: users per scorer call; by default derived from ``max_batch_bytes``.
        device: where the ranking runs (the scorer's output device).
        max_batch_bytes: memory bound of one float32 score block.

    Raises:
        ScoreError (a ValueError): NaN scores or a wrongly shaped score matrix.
        ConfigError: bad split, ks, users or batch size, or no user to evaluate.
    """
    ks = check_ks(ks)
    k_max = max(ks)
    dev = torch.device(device)
    t0 = time.perf_counter()
    prep = _prepare(dataset, split, users, dev)
    n_items, n_eval = dataset.n_items, len(prep.users)
    bs = _batch_size(batch_users, max_batch_bytes, n_items)
    users_t = torch.from_numpy(prep.users).to(dev)

    names = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "precision", "hitrate")]
    acc = {name: np.empty(n_eval, dtype=np.float64) for name in names}
    t_score = t_rank = 0.0
    with torch.no_grad():
        for b0 in range(0, n_eval, bs):
            b1 = min(b0 + bs, n_eval)
            ta = time.perf_counter()
            scores = _checked_scores(scorer(users_t[b0:b1]), b1 - b0, n_items, dev)
            tb = time.perf_counter()
            e0, e1 = prep.excl_ptr[b0], prep.excl_ptr[b1]
            if e1 > e0:
                flat = prep.excl_flat[e0:e1] - b0 * n_items
                # top_k checks the rest for NaN; the items about to be masked are checked here
                if bool(torch.isnan(scores.view(-1)[flat]).any()):
                    _raise_nan(scores)
                scores.view(-1).index_fill_(0, flat, _NEG_INF)
            top = top_k(scores, k_max)
            del scores
            # hits: look the (row, item) keys of the top-k up in the sorted target keys
            keys = prep.tgt_keys[prep.tgt_ptr[b0] : prep.tgt_ptr[b1]]
            rows = torch.arange(b0, b1, device=dev, dtype=torch.int64).unsqueeze(1)
            query = (rows * n_items + top).reshape(-1)
            pos = torch.searchsorted(keys, query).clamp_(max=keys.numel() - 1)
            hits = (keys[pos] == query).view(b1 - b0, -1)
            if hits.shape[1] < k_max:  # fewer items than K: the rest are non-hits
                hits = torch.nn.functional.pad(hits, (0, k_max - hits.shape[1]))
            mets = ranking_metrics(hits, prep.n_targets[b0:b1], ks)
            for name in names:
                acc[name][b0:b1] = mets[name].cpu().numpy()
            t_score += tb - ta
            t_rank += time.perf_counter() - tb

    if has_quality(acc):
        acc["quality"] = quality(acc)
    means = {name: float(v.mean()) for name, v in acc.items()}
    per_user = {name: v.astype(np.float32) for name, v in acc.items()}
    logger.debug(
        "evaluate %s: %d users, batch %d, scorer %.3fs, ranking %.3fs, total %.3fs",
        split,
        n_eval,
        bs,
        t_score,
        t_rank,
        time.perf_counter() - t0,
    )
    return EvalResult(
        split=split,
        ks=ks,
        means=means,
        per_user=per_user,
        users=prep.users,
        n_users_evaluated=n_eval,
    )
