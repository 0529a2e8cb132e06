"""Vectorised BPR batch sampler (bet.md §8.1 "Batches")."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from embudget.errors import ConfigError, SamplerError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

#: Largest users × items for a dense membership table (bytes; 32 MiB).
DENSE_LOOKUP_MAX = 1 << 25


def _jsonable(x: Any) -> Any:
    """Generator state as plain JSON data (numpy arrays and scalars become lists and ints)."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return {"__ndarray__": x.tolist(), "dtype": str(x.dtype)}
    if isinstance(x, np.generic):
        return x.item()
    return x


def _from_jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        if "__ndarray__" in x:
            return np.asarray(x["__ndarray__"], dtype=x["dtype"])
        return {k: _from_jsonable(v) for k, v in x.items()}
    return x


class BPRSampler:
    """Draws (users, positives, negatives) BPR triples from a binary CSR training matrix.

    Each :meth:`sample` draws ``batch_users`` distinct users uniformly without replacement
    from the users with at least one training item (with replacement if there are fewer such
    users), one positive uniformly from each user's training items, and one negative uniformly
    from all items, redrawn in vectorised rounds while it is a training positive of that user.
    Triples still unresolved after ``max_rounds`` rounds are dropped and counted in
    :attr:`dropped`. Every stored entry of ``train`` counts as a positive.
    """

    def __init__(
        self,
        train: sp.csr_matrix,
        batch_users: int = 10000,
        *,
        rng: np.random.Generator,
        max_rounds: int = 50,
    ) -> None:
        if not isinstance(rng, np.random.Generator):
            raise ConfigError(
                f"rng must be a numpy.random.Generator, got {type(rng).__name__}; "
                "pass e.g. numpy.random.default_rng(seed)"
            )
        if int(batch_users) < 1:
            raise ConfigError(f"batch_users must be >= 1, got {batch_users}")
        if int(max_rounds) < 1:
            raise ConfigError(f"max_rounds must be >= 1, got {max_rounds}")
        csr = sp.csr_matrix(train)
        csr.sum_duplicates()  # also sorts indices
        self.rng = rng
        self.batch_users = int(batch_users)
        self.max_rounds = int(max_rounds)
        self.n_users, self.n_items = (int(s) for s in csr.shape)
        self.nnz = int(csr.nnz)
        self._indptr = csr.indptr.astype(np.int64)
        self._indices = csr.indices.astype(np.int64)
        deg = np.diff(self._indptr)
        self._active = np.flatnonzero(deg > 0).astype(np.int64)
        if len(self._active) == 0:
            raise SamplerError(
                "the training matrix has no interactions; BPR batches need at least one "
                "training item (check the dataset and split)"
            )
        rows = np.repeat(np.arange(self.n_users, dtype=np.int64), deg)
        # CSR with sorted indices is row-major sorted, so these keys are already ascending
        self._keys = rows * self.n_items + self._indices
        # Small matrices also get a dense membership table: one lookup per triple instead of a
        # sort and a binary search (0.05 ms instead of 0.44 ms for 10,000 Last.fm triples).
        self._dense: np.ndarray | None = None
        if self.n_users * self.n_items <= DENSE_LOOKUP_MAX:
            self._dense = np.zeros(self.n_users * self.n_items, dtype=np.bool_)
            self._dense[self._keys] = True
        #: triples dropped because no negative was found within max_rounds (cumulative)
        self.dropped = 0

    @property
    def steps_per_epoch(self) -> int:
        """⌈#training interactions / batch_users⌉."""
        return math.ceil(self.nnz / self.batch_users)

    @property
    def n_active_users(self) -> int:
        """Users with at least one training item."""
        return len(self._active)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Boolean mask: is ``items[k]`` a training item of ``users[k]``?"""
        k = np.asarray(users, dtype=np.int64) * self.n_items + np.asarray(items, dtype=np.int64)
        if self._dense is not None:
            return self._dense[k]
        order = np.argsort(k)  # sorted queries make searchsorted ~3x faster (cache locality)
        at = np.empty_like(order)
        at[order] = np.searchsorted(self._keys, k[order])
        at[at == len(self._keys)] = 0
        return self._keys[at] == k

    def sample(self) -> Batch:
        """One batch of int64 tensors (users, pos, neg), each of length <= batch_users."""
        rng, b, act = self.rng, self.batch_users, self._active
        if len(act) >= b:
            users = rng.choice(act, size=b, replace=False)
        else:
            users = act[rng.integers(0, len(act), size=b)]
        start = self._indptr[users]
        deg = self._indptr[users + 1] - start
        pos = self._indices[start + rng.integers(0, deg)]
        neg = rng.integers(0, self.n_items, size=len(users), dtype=np.int64)
        bad = self.is_positive(users, neg)
        for _ in range(self.max_rounds):
            idx = np.flatnonzero(bad)
            if len(idx) == 0:
                break
            neg[idx] = rng.integers(0, self.n_items, size=len(idx), dtype=np.int64)
            bad[idx] = self.is_positive(users[idx], neg[idx])
        if bad.any():
            keep = ~bad
            self.dropped += int(bad.sum())
            users, pos, neg = users[keep], pos[keep], neg[keep]
        return (
            torch.from_numpy(np.ascontiguousarray(users, dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(pos, dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(neg, dtype=np.int64)),
        )

    def epoch(self) -> Iterator[Batch]:
        """``steps_per_epoch`` batches."""
        for _ in range(self.steps_per_epoch):
            yield self.sample()

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able state (generator state and drop counter) for an exact resume."""
        return {
            "rng": _jsonable(self.rng.bit_generator.state),
            "dropped": self.dropped,
            "batch_users": self.batch_users,
            "max_rounds": self.max_rounds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the next batch equals the one the saved sampler drew."""
        rng_state = _from_jsonable(state["rng"])
        have = self.rng.bit_generator.state["bit_generator"]
        if rng_state.get("bit_generator") != have:
            raise SamplerError(
                f"saved generator is {rng_state.get('bit_generator')!r} but this sampler uses "
                f"{have!r}; build the sampler with the same kind of generator"
            )
        if int(state.get("batch_users", self.batch_users)) != self.batch_users:
            raise SamplerError(
                f"saved batch_users={state['batch_users']} differs from {self.batch_users}; "
                "resume with the same batch size"
            )
        self.rng.bit_generator.state = rng_state
        self.dropped = int(state.get("dropped", 0))
