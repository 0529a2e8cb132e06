"""The canonical in-memory dataset: CSR train/valid/test over contiguous indices.

Every reader and split produces a :class:`Dataset`. Everything downstream (sampling, graphs,
evaluation, search) consumes only this object.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

SPLITS = ("train", "valid", "test")


def _csr(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    data = np.ones(len(users), dtype=np.float32)
    m = sp.csr_matrix((data, (users, items)), shape=(n_users, n_items), dtype=np.float32)
    m.sum_duplicates()
    m.sort_indices()
    m.data[:] = 1.0
    return m


@dataclass(frozen=True)
class Dataset:
    """Interactions split into train/valid/test, as binary CSR matrices (users x items).

    Attributes:
        name: dataset name (e.g. ``gowalla``) or the path it was read from.
        protocol: ``paper`` (P, 50/25/25 re-split) or ``standard`` (S, given train/test).
        split_seed: seed of the keyed ordering used by the split.
        train, valid, test: ``scipy.sparse.csr_matrix`` of shape (n_users, n_items), float32
            ones at interactions, sorted indices, no duplicates.
        user_ids, item_ids: raw ids, ``user_ids[index] == raw id`` (int64 or unicode arrays).
        source_hashes: sha256 of each input file, keyed by file name.
        meta: free-form facts recorded by the reader/split (e.g. dropped duplicates).
    """

    name: str
    protocol: str
    split_seed: int
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    source_hashes: dict[str, str] = field(default_factory=dict)
    meta: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_arrays(
        cls,
        name: str,
        protocol: str,
        split_seed: int,
        splits: dict[str, tuple[np.ndarray, np.ndarray]],
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        source_hashes: dict[str, str] | None = None,
        meta: dict[str, object] | None = None,
    ) -> Dataset:
        """Build from (user_index, item_index) arrays per split."""
        n_u, n_i = len(user_ids), len(item_ids)
        mats = {s: _csr(*splits[s], n_u, n_i) for s in SPLITS}
        return cls(
            name=name,
            protocol=protocol,
            split_seed=split_seed,
            train=mats["train"],
            valid=mats["valid"],
            test=mats["test"],
            user_ids=user_ids,
            item_ids=item_ids,
            source_hashes=dict(source_hashes or {}),
            meta=dict(meta or {}),
        )

    # --- sizes -------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return int(self.train.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.train.shape[1])

    @property
    def n_entities(self) -> int:
        """N = |U| + |V|, what the budget counts."""
        return self.n_users + self.n_items

    @property
    def n_interactions(self) -> int:
        return int(self.train.nnz + self.valid.nnz + self.test.nnz)

    def split(self, name: str) -> sp.csr_matrix:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    # --- frequencies (training split) --------------------------------------------------
    @property
    def user_freq(self) -> np.ndarray:
        """Training interactions per user (int64, length n_users)."""
        return np.diff(self.train.indptr).astype(np.int64)

    @property
    def item_freq(self) -> np.ndarray:
        """Training interactions per item (int64, length n_items)."""
        return np.bincount(self.train.indices, minlength=self.n_items).astype(np.int64)

    # --- identity ----------------------------------------------------------------------
    def fingerprint(self) -> str:
        """sha256 over the sorted (user, item, split) triples and the entity counts."""
        h = hashlib.sha256()
        h.update(f"{self.n_users},{self.n_items};".encode())
        for code, s in enumerate(SPLITS):
            m = self.split(s).tocoo()
            order = np.lexsort((m.col, m.row))
            h.update(bytes([code]))
            h.update(np.ascontiguousarray(m.row[order], dtype=np.int64).tobytes())
            h.update(np.ascontiguousarray(m.col[order], dtype=np.int64).tobytes())
        return h.hexdigest()

    def stats(self) -> dict[str, float | int]:
        """Users, items, interactions and density, plus per-split counts."""
        n = self.n_interactions
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n,
            "density": n / float(self.n_users * self.n_items) if n else 0.0,
            "train": int(self.train.nnz),
            "valid": int(self.valid.nnz),
            "test": int(self.test.nnz),
        }
