"""Time the bounded sampler on Gowalla-sized actions (bet.md §3.2).

|U| = 29,858, |V| = 40,981, d_max = 128, B at 80 % sparsity = 1,813,478. Samples m = 100
actions per repeat and prints the median wall time, the attempt statistics, and the time to
rebuild per-entity sizes of all m actions through the rank assignment. Target: well under 1.5 s
for the 100 actions (the rest of a 2 s iteration budget is for scoring).

    python benchmarks/bench_sampler.py            # 7 repeats (plus one warm-up)
    python benchmarks/bench_sampler.py --quick    # 2 repeats
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from embudget.budget.core import Budget
from embudget.search import BoundedSampler, RankAssignment

N_USERS, N_ITEMS = 29_858, 40_981


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 repeats instead of 7")
    ap.add_argument("--m", type=int, default=100, help="actions per repeat")
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    repeats = 2 if args.quick else 7

    B = Budget(sparsity=args.sparsity).resolve(N_USERS + N_ITEMS, 128)
    sampler = BoundedSampler(N_USERS, N_ITEMS, B)
    rng = np.random.default_rng(args.seed)
    ranks = RankAssignment(rng.poisson(17, N_USERS), rng.poisson(12, N_ITEMS))
    sampler.sample_many(5, rng)  # warm-up

    times, rebuild, attempts, clamped = [], [], [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        batch = sampler.sample_batch(args.m, rng)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ranks.sizes_batch(batch.hist_u, batch.hist_v, dtype=np.int16)
        rebuild.append(time.perf_counter() - t0)
        attempts += [r["attempts"] for r in batch.records]
        clamped += sum(bool(r["clamped"]) for r in batch.records)

    print(f"B = {B:,} (sparsity {args.sparsity}), |U| = {N_USERS:,}, |V| = {N_ITEMS:,}")
    print(
        f"sample {args.m} actions: median {statistics.median(times):.3f} s "
        f"(min {min(times):.3f}, max {max(times):.3f}, {repeats} repeats)"
    )
    print(
        f"attempts per action: mean {np.mean(attempts):.2f}, max {max(attempts)}; "
        f"clamped {clamped}/{len(attempts)}"
    )
    print(
        f"rebuild per-entity sizes of {args.m} actions: median {statistics.median(rebuild):.3f} s"
    )


if __name__ == "__main__":
    main()
