"""Top-k recommendations from an exported table (``embudget recommend``).

Items a user already interacted with are excluded. An export written with its history
(``embudget export --with-history``) stores every known interaction of the dataset (train, valid
and test splits: ``history``), so by default nothing the user has seen comes back;
``exclude="train"`` excludes only the training interactions (what the model was fitted on),
``exclude="none"`` nothing. An export without history cannot exclude anything: ``recommend``
then ranks every item and logs a warning (:attr:`Recommender.has_history` tells beforehand).

Example::

    rec = Recommender.load("table.safetensors")
    out = rec.recommend(["u17", "u42"], k=20)
    out.items[0], out.scores[0]          # raw item ids and scores of user "u17"
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from embudget.deploy.export import Exported, load
from embudget.errors import ConfigError, UnknownIdError
from embudget.models.base import Scorer
from embudget.training.evaluate import top_k

log = logging.getLogger(__name__)

__all__ = ["Recommendations", "Recommender", "read_user_file"]

EXCLUDE = ("history", "train", "none")


@dataclass
class Recommendations:
    """Top-k per user; row r belongs to ``users[r]``.

    Attributes:
        users: raw user ids, as given.
        items: raw item ids, (n_users, k); only the first ``counts[r]`` of row r are valid
            (a user who has seen almost every item gets fewer than k).
        scores: float32 scores, (n_users, k), descending; -inf past ``counts[r]``.
        counts: valid recommendations per user.
    """

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    counts: np.ndarray

    def rows(self) -> Iterator[tuple[Any, int, Any, float]]:
        """(user, rank starting at 1, item, score) for every valid recommendation."""
        for r, user in enumerate(self.users.tolist()):
            for j in range(int(self.counts[r])):
                yield user, j + 1, self.items[r, j].item(), float(self.scores[r, j])


class Recommender:
    """Scores and top-k lists over an :class:`~embudget.deploy.export.Exported` model.

    Args:
        exported: a loaded export.
        batch_users: users scored at once (memory: batch_users · n_items floats).
    """

    def __init__(self, exported: Exported, batch_users: int = 256) -> None:
        if batch_users < 1:
            raise ConfigError(f"batch_users must be at least 1, got {batch_users}")
        self.exported = exported
        self.batch_users = int(batch_users)
        ids = exported.user_ids
        self._user_order = np.argsort(ids, kind="stable")
        self._user_sorted = ids[self._user_order]
        self._scorer: Scorer | None = None

    @classmethod
    def load(cls, path: str | Path, batch_users: int = 256) -> Recommender:
        return cls(load(path), batch_users)

    @property
    def has_history(self) -> bool:
        """Whether the export holds the interactions that ``exclude`` removes."""
        return self.exported.history is not None

    @property
    def n_items(self) -> int:
        return int(self.exported.item_ids.size)

    def scorer(self) -> Scorer:
        """The backbone's scorer, built once (graph models propagate here)."""
        if self._scorer is None:
            with torch.no_grad():
                self._scorer = self.exported.model.scorer()
        return self._scorer

    def user_index(self, users: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Indices of raw user ids; strings are parsed when the ids are integers.

        Raises:
            UnknownIdError: naming up to five unknown ids.
        """
        q = np.asarray(users)
        ids = self.exported.user_ids
        if ids.dtype.kind in "iu" and q.dtype.kind != "i":
            # strings, unsigned and Python ints: parsed one by one; ids outside int64 are unknown
            parsed = [_as_int(x) for x in q.tolist()]
            ok = np.array([p is not None for p in parsed], dtype=bool)
            q_int = np.array([0 if p is None else p for p in parsed], dtype=np.int64)
        elif ids.dtype.kind in "iu":
            ok = np.ones(q.size, dtype=bool)
            q_int = q.astype(np.int64)
        else:
            ok = np.ones(q.size, dtype=bool)
            # str ids: compare as str of any width (a cast to ids.dtype would truncate)
            q_int = q.astype(str) if ids.dtype.kind in "US" else q.astype(ids.dtype)
        pos = np.searchsorted(self._user_sorted, q_int)
        pos_c = np.minimum(pos, max(0, ids.size - 1))
        found = ok & (pos < ids.size) & (self._user_sorted[pos_c] == q_int)
        if not found.all():
            bad = [_short(x) for x in q[~found][:5].tolist()]
            more = int((~found).sum()) - len(bad)
            raise UnknownIdError(
                f"unknown user id(s) {', '.join(bad)}"
                + (f" and {more} more" if more > 0 else "")
                + f"; the table knows {ids.size:,} users (raw ids such as "
                f"{', '.join(str(x) for x in ids[:3].tolist())})"
            )
        return self._user_order[pos_c].astype(np.int64)

    def recommend(
        self, users: Sequence[Any] | np.ndarray, k: int = 20, exclude: str = "history"
    ) -> Recommendations:
        """Top-``k`` raw item ids and scores for each raw user id."""
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        if exclude not in EXCLUDE:
            raise ConfigError(f"exclude must be one of {', '.join(EXCLUDE)}, got {exclude!r}")
        idx = self.user_index(users)
        seen: sp.csr_matrix | None = {
            "history": self.exported.history,
            "train": self.exported.train,
            "none": None,
        }[exclude]
        if exclude != "none" and seen is None:
            log.warning(
                "this table carries no interaction history; seen items are not excluded "
                "(export with --with-history)"
            )
        k_eff = min(int(k), self.n_items)
        top_items = np.zeros((idx.size, k_eff), dtype=np.int64)
        top_scores = np.full((idx.size, k_eff), -np.inf, dtype=np.float32)
        score = self.scorer()
        for b0 in range(0, idx.size, self.batch_users):
            batch = idx[b0 : b0 + self.batch_users]
            with torch.no_grad():
                s = score(torch.from_numpy(batch)).float()
            if seen is not None:
                sub = seen[batch]
                rows = np.repeat(np.arange(batch.size), np.diff(sub.indptr))
                s[
                    torch.from_numpy(rows), torch.from_numpy(sub.indices.astype(np.int64))
                ] = -torch.inf
            ind = top_k(s, k_eff)  # the evaluation's rule: score desc, then item index asc
            top_items[b0 : b0 + batch.size] = ind.numpy()
            top_scores[b0 : b0 + batch.size] = torch.gather(s, 1, ind).numpy()
        counts = np.isfinite(top_scores).sum(axis=1)
        return Recommendations(
            users=np.asarray(users),
            items=self.exported.item_ids[top_items],
            scores=top_scores,
            counts=counts,
        )


def _as_int(x: Any) -> int | None:
    """``x`` as an int64, or None (not an integer, or out of the int64 range)."""
    try:
        v = int(str(x).strip())
    except ValueError:  # also digit strings too long to convert
        return None
    return v if -(2**63) <= v < 2**63 else None


def _short(x: Any, width: int = 40) -> str:
    s = str(x)
    return repr(s if len(s) <= width else s[:width] + "...")


def read_user_file(path: str | Path) -> list[str]:
    """Raw user ids, one per line (blank lines and ``#`` comments skipped)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"users file {p} does not exist or is not a regular file")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"users file {p} is not UTF-8 text (byte {e.start}); give one raw user id per line"
        ) from e
    except OSError as e:
        raise ConfigError(f"users file {p} cannot be read ({e.strerror or e})") from e
    out = []
    for line in text.splitlines():
        s = line.split("#", 1)[0].strip()
        if s:
            out.append(s)
    if not out:
        raise ConfigError(f"users file {p} holds no user ids; give one raw user id per line")
    return out
