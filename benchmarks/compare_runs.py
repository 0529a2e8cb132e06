"""Paired t-tests between two runs' per-user test scores (protocol.md §8).

``embudget report`` compares the methods of one results directory; this compares any two runs,
for instance a table found by one search configuration against one found by another, or a CPU
run against a GPU reference whose per-user file was copied elsewhere.

    python benchmarks/compare_runs.py A B [--metrics recall@20,ndcg@20]

A and B are run directories (holding ``per_user_test.npz``) or the ``.npz`` files themselves.
Prints, per metric, mean(A) − mean(B) over the users both evaluated, its 95 % interval and p.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from embudget.bench.stats import align_per_user, paired_ttest


def _load(path: str) -> dict[str, np.ndarray]:
    p = Path(path)
    if p.is_dir():
        p = p / "per_user_test.npz"
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _p(p: float) -> str:
    return "< 1e-300" if p == 0 else f"= {p:.2g}"  # float64 underflows below ~1e-308


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--metrics", default="recall@20,ndcg@20,recall@5,ndcg@5")
    args = ap.parse_args()
    a, b = _load(args.a), _load(args.b)
    for metric in args.metrics.split(","):
        users, va, vb = align_per_user(a["users"], a[metric], b["users"], b[metric])
        t = paired_ttest(va, vb)
        print(
            f"{metric:>10}: A {va.mean():.4f}  B {vb.mean():.4f}  A-B {t['mean_diff']:+.4f} "
            f"[{t['ci_low']:+.4f}, {t['ci_high']:+.4f}]  p {_p(t['p'])}  n = {len(users)}"
        )


if __name__ == "__main__":
    main()
