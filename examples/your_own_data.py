"""Your own interaction log → temporal split → budgeted search → export → serve.

A CSV with your own column names and timestamps goes through the library in five steps:

1. ``load_config`` with ``data.name=<path>``, ``data.user_col`` / ``data.item_col`` /
   ``data.time_col`` naming your columns and ``data.protocol=temporal`` (a global time cut: the
   latest interactions are the test set, the ones before them the validation set);
2. ``run_search``: BET's search for per-user/per-item embedding sizes under the budget;
3. ``export_run``: the compact tables in one file, without the interaction history (publishing
   the table does not publish the log; pass ``with_history=True`` to exclude seen items when
   serving);
4. ``embudget.load``: the table back, verified, without unpickling;
5. the budget met (parameters used ≤ the budget) and the validation score.

Run it on your data::

    python examples/your_own_data.py --csv log.csv --user-col customer_id \\
        --item-col product_id --time-col ts --sparsity 0.8 --out runs/mine

or, with ``--quick``, on a small CSV generated from the shipped gowalla-mini (its interactions
with synthetic timestamps under the header ``customer_id,product_id,ts``), in well under a
minute on one core::

    python examples/your_own_data.py --quick --out /tmp/example
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import embudget
from embudget.config import load_config
from embudget.data import load_dataset
from embudget.deploy.export import export_run
from embudget.pipeline.run import run_search

#: shorter training and search for --quick (the defaults are bet.md's full procedure)
QUICK_SETTINGS = [
    "model.d_max=8",
    "train.batch_users=1000",
    "train.max_steps=40",
    "train.eval_every_steps=20",
    "train.patience=1",
    "search.iterations=2",
    "search.sampler.candidates=8",
    "search.retrain.top=1",
    "threads=1",
]


def write_quick_csv(path: Path, n_users: int = 300, seed: int = 0) -> Path:
    """A CSV headed ``customer_id,product_id,ts`` from gowalla-mini's first ``n_users`` users.

    Every interaction gets a synthetic Unix timestamp (seconds in 2024), so a temporal split
    has something to cut on; raw ids become ``C<id>`` / ``P<id>`` strings.
    """
    ds = load_dataset("gowalla-mini")
    log = (ds.train + ds.valid + ds.test).tocsr()[:n_users].tocoo()
    rng = np.random.default_rng(seed)
    ts = 1_704_067_200 + rng.integers(0, 365 * 86_400, log.nnz)
    lines = ["customer_id,product_id,ts"]
    for u, i, t in zip(log.row.tolist(), log.col.tolist(), ts.tolist(), strict=True):
        lines.append(f"C{ds.user_ids[u]},P{ds.item_ids[i]},{t}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for the run and the table")
    ap.add_argument("--quick", action="store_true", help="a small generated CSV, short settings")
    ap.add_argument("--csv", type=Path, help="your interaction log (CSV with a header)")
    ap.add_argument("--user-col", default="customer_id")
    ap.add_argument("--item-col", default="product_id")
    ap.add_argument("--time-col", default="ts")
    ap.add_argument("--sparsity", type=float, default=0.8, help="fraction of parameters removed")
    ap.add_argument("--method", default="bet", help="bet, su, sr, ...")
    args = ap.parse_args(argv)
    if args.quick == (args.csv is not None):
        ap.error("give either --csv or --quick")

    out: Path = args.out.resolve()
    csv = write_quick_csv(out / "log.csv") if args.quick else args.csv.resolve()
    cfg = load_config(
        overrides=[
            f"data.name={csv}",
            f"data.user_col={args.user_col}",
            f"data.item_col={args.item_col}",
            f"data.time_col={args.time_col}",
            "data.protocol=temporal",
            f"search.method={args.method}",
            f"budget.sparsity={args.sparsity}",
            f"cache_dir={out / 'cache'}",
            *(QUICK_SETTINGS if args.quick else []),
        ]
    )  # fast mode for MF by default, as on the command line (fast=False: bet.md's procedure)
    result = run_search(cfg, out / "run", progress=False, overwrite=True)

    table = out / "table.safetensors"
    export_run(out / "run", table, overwrite=True)  # no interaction history in the file
    exported = embudget.load(table)
    used = exported.model.embedding_params_used()
    budget = result.usage.params_budget
    assert budget is not None and used == result.usage.params

    print(f"data: {csv.name}, protocol {result.protocol}, backbone {result.backbone}")
    print(f"budget met: {used:,} params used <= budget {budget:,} ({used <= budget})")
    print(f"validation recall@20: {result.valid.means['recall@20']:.4f}")
    print(f"test recall@20: {result.test.means['recall@20']:.4f}")
    print(f"table: {table} ({exported.item_ids.size:,} items, no interaction history)")
    return 0 if used <= budget else 1


if __name__ == "__main__":
    raise SystemExit(main())
