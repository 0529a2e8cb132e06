"""Paired t-tests between the per-user test scores of two runs or two sets of runs (protocol.md §8).

``embudget report`` compares the methods of one results directory; this compares any two runs,
for instance a table found by one search configuration against one found by another, or a CPU
run against a GPU reference whose per-user file was copied elsewhere. A side may list several
runs, comma-separated (e.g. the seeds of one method): each user's score is then averaged over
that side's runs first, as ``embudget report`` does over seeds.

    python benchmarks/compare_runs.py A B [--metrics recall@20,ndcg@20]
    python benchmarks/compare_runs.py A_SEED0,A_SEED1 B_SEED0,B_SEED1

A and B are run directories (holding ``per_user_test.npz``), the ``.npz`` files themselves, or
glob patterns of either. Prints, per metric, mean(A) − mean(B) over the users both sides
evaluated, its 95 % interval and p.
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import numpy as np

from embudget.bench.stats import align_per_user, mean_per_user, paired_ttest
from embudget.errors import ConfigError


def _files(side: str) -> list[Path]:
    """The per-user files a side names: comma-separated runs, directories or glob patterns."""
    out: list[Path] = []
    for part in filter(None, side.split(",")):
        matches = sorted(glob.glob(part)) or [part]
        for m in map(Path, matches):
            out.append(m / "per_user_test.npz" if m.is_dir() else m)
    missing = [str(p) for p in out if not p.is_file()]
    if not out or missing:
        raise ConfigError(f"no per-user test scores at {', '.join(missing) or side!r}")
    return out


def _side(side: str, metrics: list[str]) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """metric -> (users, each user's score averaged over the side's runs); number of runs."""
    runs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {m: [] for m in metrics}
    files = _files(side)
    for path in files:
        with np.load(path, allow_pickle=False) as z:
            for metric in metrics:
                if metric not in z.files:
                    raise ConfigError(f"{path} holds no {metric!r} (it has {', '.join(z.files)})")
                runs[metric].append((z["users"], z[metric]))
    return {m: mean_per_user(r) for m, r in runs.items()}, len(files)


def _p(p: float) -> str:
    return "< 1e-300" if p == 0 else f"= {p:.2g}"  # float64 underflows below ~1e-308


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="run(s) A: comma-separated run directories, .npz files or globs")
    ap.add_argument("b", help="run(s) B, the same way")
    ap.add_argument("--metrics", default="recall@20,ndcg@20,recall@5,ndcg@5")
    args = ap.parse_args()
    metrics = args.metrics.split(",")
    (a, na), (b, nb) = _side(args.a, metrics), _side(args.b, metrics)
    for metric in metrics:
        users, va, vb = align_per_user(*a[metric], *b[metric])
        t = paired_ttest(va, vb)
        print(
            f"{metric:>10}: A {va.mean():.4f}  B {vb.mean():.4f}  A-B {t['mean_diff']:+.4f} "
            f"[{t['ci_low']:+.4f}, {t['ci_high']:+.4f}]  A/B {va.mean() / vb.mean() - 1:+.1%}  "
            f"p {_p(t['p'])}  n = {len(users)} users, {na} run(s) vs {nb}"
        )


if __name__ == "__main__":
    main()
