"""Your own model → BET's per-row embedding sizes under a budget (``embudget.search_sizes``).

A two-tower recommender written the way you would write it: a user tower and an item tower,
each an id embedding followed by a small MLP, trained with the in-batch sampled softmax (every
other positive item of the batch is a negative). The only embudget-specific line is the tables:
``embudget.BudgetedEmbedding(num_rows, d_max)`` in place of ``nn.Embedding``. Then

1. load the shipped ``gowalla-mini`` with embudget's loader (train/valid/test split);
2. hand the model factory, the batches, the loss and a validation score (recall@20, full
   ranking with embudget's evaluator) to ``embudget.search_sizes``, once with BET and once with
   uniform sizes (SU), at the same budget;
3. print each method's validation and test recall@20 and the parameters used against the
   budget.

Run it::

    python examples/two_tower.py --sparsity 0.9

or, in well under a minute on one core, with short settings::

    python examples/two_tower.py --quick
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import embudget
from embudget.data import Dataset, load_dataset
from embudget.training.evaluate import evaluate


class TwoTower(nn.Module):
    """Users and items embedded by id (budgeted tables), each through its own MLP tower."""

    def __init__(self, n_users: int, n_items: int, d_max: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.user_emb = embudget.BudgetedEmbedding(n_users, d_max)
        self.item_emb = embudget.BudgetedEmbedding(n_items, d_max)
        self.user_tower = nn.Sequential(nn.Linear(d_max, hidden), nn.ReLU(), nn.Linear(hidden, 32))
        self.item_tower = nn.Sequential(nn.Linear(d_max, hidden), nn.ReLU(), nn.Linear(hidden, 32))

    def users(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.user_tower(self.user_emb(ids)), dim=-1)

    def items(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        rows = self.item_emb.full() if ids is None else self.item_emb(ids)
        return F.normalize(self.item_tower(rows), dim=-1)


TEMPERATURE = 0.1


def in_batch_softmax(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of each user's positive against the batch's other positives."""
    assert isinstance(model, TwoTower)
    users, items = batch
    logits = model.users(users) @ model.items(items).T / TEMPERATURE
    return F.cross_entropy(logits, torch.arange(users.numel()))


Batch = tuple[torch.Tensor, torch.Tensor]


def make_batches(ds: Dataset, batch_size: int) -> Callable[[], list[Batch]]:
    """A function returning one shuffled pass over the training pairs (search_sizes seeds
    torch's generator, so every pass is reproducible)."""
    coo = ds.train.tocoo()
    users = torch.from_numpy(coo.row.astype(np.int64))
    items = torch.from_numpy(coo.col.astype(np.int64))

    def one_pass() -> list[Batch]:
        order = torch.randperm(users.numel())
        return [
            (users[order[i : i + batch_size]], items[order[i : i + batch_size]])
            for i in range(0, users.numel() - batch_size + 1, batch_size)
        ]

    return one_pass


def recall_at_20(ds: Dataset, split: str) -> Callable[[nn.Module], float]:
    """Full-ranking recall@20 on ``split`` (training items excluded), embudget's evaluator."""

    def score(model: nn.Module) -> float:
        assert isinstance(model, TwoTower)
        items = model.items()
        result = evaluate(lambda u: model.users(u) @ items.T, ds, split, ks=(20,))
        return float(result.means["recall@20"])

    return score


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="short settings (under a minute)")
    ap.add_argument("--sparsity", type=float, default=0.9, help="fraction of parameters removed")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    ds = load_dataset("gowalla-mini")
    d_max = 16 if args.quick else 32
    options = embudget.SearchOptions(
        iterations=4 if args.quick else 12,
        candidates=10 if args.quick else 30,
        pretrain_steps=150 if args.quick else 600,
        probe_steps=10 if args.quick else 40,
        retrain_steps=150 if args.quick else 600,
        eval_every=50 if args.quick else 100,
        top=2 if args.quick else 3,
        lr=0.01,
        seed=args.seed,
    )
    popularity = {"user_emb": ds.user_freq, "item_emb": ds.item_freq}
    batches = make_batches(ds, batch_size=256)
    print(f"data: {ds.name}, {ds.n_users} users, {ds.n_items} items, d_max {d_max}")
    ok = True
    for method in ("bet", "su"):
        result = embudget.search_sizes(
            lambda: TwoTower(ds.n_users, ds.n_items, d_max),
            batches,
            in_batch_softmax,
            recall_at_20(ds, "valid"),
            method=method,
            sparsity=args.sparsity,
            popularity=popularity,
            options=options,
        )
        test = recall_at_20(ds, "test")(result.model.eval())
        used, budget = result.params_used, result.budget.params
        mean_u, mean_v = (float(result.sizes[n].mean()) for n in ("user_emb", "item_emb"))
        print(
            f"{method}: validation recall@20 {result.valid:.4f}, test recall@20 {test:.4f}, "
            f"params used {used:,} <= budget {budget:,} ({used <= budget}), "
            f"mean size users {mean_u:.2f} items {mean_v:.2f}, {result.timing.total:.1f}s"
        )
        ok = ok and used <= budget
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
